import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fromHex } from '../../../lib/bytes/hex.ts';
import type { PcrBank, PcrValues } from '../../../lib/pcr.ts';

/**
 * Loaders for the quotes in ../shared/corpus (read in place, never copied into the repo). Each
 * returns the raw bytes as the upstream project stores them; the expected values the tests check
 * are the ones stated in each folder's README.
 */
const CORPUS = new URL('../../../../shared/corpus/', import.meta.url);

export function corpusBytes(path: string): Uint8Array {
  return new Uint8Array(readFileSync(new URL(path, CORPUS)));
}

export function corpusText(path: string): string {
  return readFileSync(new URL(path, CORPUS), 'utf8');
}

export function corpusPath(path: string): string {
  return new URL(path, CORPUS).pathname;
}

const b64 = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'base64'));

/** One bank of PCR values from a list of [index, value] pairs. */
export function bankOf(entries: [number, Uint8Array][]): PcrBank {
  return new Map(entries);
}

export function goAttestation() {
  const json = JSON.parse(corpusText('go-attestation/windows_gcp_shielded_vm.json'));
  const pcrs = bankOf(json.Log.PCRs.map((p: { Index: number; Digest: string }) => [p.Index, b64(p.Digest)]));

  return {
    akPublic: b64(json.AK.Public),
    attest: b64(json.Quote.Quote),
    signature: b64(json.Quote.Signature),
    createAttestation: b64(json.AK.CreateAttestation),
    createSignature: b64(json.AK.CreateSignature),
    values: new Map([['sha1', pcrs]]) as PcrValues,
  };
}

export function trustee() {
  const json = JSON.parse(corpusText('trustee/tpm_evidence.json'));
  const pcrs = bankOf(json.tpm_quote.pcrs.map((hex: string, i: number) => [i, fromHex(hex)]));

  return {
    akSpki: b64(json.ak_public),
    attest: b64(json.tpm_quote.message),
    signature: b64(json.tpm_quote.signature),
    values: new Map([['sha256', pcrs]]) as PcrValues,
  };
}

/** basic.token: u16be size ‖ TPMS_ATTEST ‖ TPMT_SIGNATURE. */
export function veraison() {
  const token = corpusBytes('veraison-enacttrust/basic.token');
  const size = (token[0]! << 8) | token[1]!;

  return {
    attest: token.subarray(2, 2 + size),
    signature: token.subarray(2 + size),
    pem: corpusText('veraison-enacttrust/basic.pem.pub'),
  };
}

export function globalTrustAuthority(file: 'boot-test_evidence.json' | 'common-test_evidence.json') {
  const { evidence } = JSON.parse(corpusText(`global-trust-authority/${file}`));
  const pcrs = bankOf(
    evidence.pcrs.pcr_values.map((p: { pcr_index: number; pcr_value: string }) => [
      p.pcr_index,
      fromHex(p.pcr_value),
    ]),
  );
  const certDer = new Uint8Array(Buffer.from(evidence.ak_certs[0].cert_data, 'base64'));
  const cert = new X509Certificate(certDer);

  return {
    attest: b64(evidence.quote.quote_data),
    signature: b64(evidence.quote.signature),
    akSpki: new Uint8Array(cert.publicKey.export({ type: 'spki', format: 'der' })),
    certDer,
    certPem: cert.toString(),
    values: new Map([['sha256', pcrs]]) as PcrValues,
  };
}

/** test-quote.txt: `r<b64 TPMS_ATTEST>:<b64 TPMT_SIGNATURE>:<b64 serialized PCR blob>`. */
export function rustKeylime() {
  const [attest, signature, pcrs] = corpusText('rust-keylime/test-quote.txt').trim().slice(1).split(':');

  return { attest: b64(attest!), signature: b64(signature!), pcrBlob: b64(pcrs!) };
}

export function keylimeBundle() {
  const dir = 'keylime/quote-bundle/';

  return {
    attest: corpusBytes(`${dir}quote.out`),
    signature: corpusBytes(`${dir}quotesig.out`),
    pcrFile: corpusBytes(`${dir}quotepcr.out`),
    akPub: corpusBytes(`${dir}ak.pub`),
    akPem: corpusText(`${dir}akpub.pem`),
    akName: corpusBytes(`${dir}ak.name`),
    nonce: fromHex('db1db298db6d60e6385b7231743e9c3056a18003'),
  };
}
