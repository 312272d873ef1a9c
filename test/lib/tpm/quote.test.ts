import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fromHex, toHex } from '../../../lib/bytes/hex.ts';
import type { PcrValues } from '../../../lib/pcr.ts';
import { parseAttest } from '../../../lib/tpm/attest.ts';
import { publicFromPem, publicFromSpki } from '../../../lib/tpm/key.ts';
import { concat } from '../../../lib/tpm/marshal.ts';
import { parseSerializedPcrs } from '../../../lib/tpm/pcr-file.ts';
import { parsePublic } from '../../../lib/tpm/public.ts';
import { matchPcrDigest, type QuoteVerdict, verifyQuote } from '../../../lib/tpm/quote.ts';
import {
  globalTrustAuthority,
  goAttestation,
  keylimeBundle,
  rustKeylime,
  trustee,
  veraison,
} from './corpus.ts';

const codes = (v: QuoteVerdict) => v.failures.map((f) => f.code);

function flip(bytes: Uint8Array, at: number): Uint8Array {
  const out = bytes.slice();
  out[at] = (out[at] ?? 0) ^ 0x01;
  return out;
}

describe('verifyQuote on corpus quotes (expected values from each corpus README)', () => {
  it('keylime quote-bundle: RSASSA/SHA-256 with ak.pub and akpub.pem; nonce and PCR file match', async () => {
    const k = keylimeBundle();
    const pcrValues = parseSerializedPcrs(k.pcrFile);
    for (const akPublic of [parsePublic(k.akPub), publicFromPem(k.akPem)]) {
      const v = await verifyQuote({
        attest: k.attest,
        signature: k.signature,
        akPublic,
        nonce: k.nonce,
        pcrValues,
      });
      assert.deepEqual(codes(v), []);
      assert.equal(v.ok, true);
      assert.equal(
        toHex(v.attest!.quote!.pcrDigest),
        'ec1636c69c548fd09a165a4f874e5d1610a8fbe36241566017e92b17e144b971',
      );
      assert.deepEqual(v.attest!.quote!.pcrSelection, [{ bank: 'sha256', pcrs: [15, 16, 22] }]);
      assert.equal(v.attest!.clockInfo.clock, 5994n);
      assert.equal(v.attest!.firmwareVersion, 0x2016051100162800n);
    }
  });

  it('go-attestation: TPMT_PUBLIC without size prefix, RSASSA/SHA-1, 24 PCRs, empty nonce', async () => {
    const g = goAttestation();
    const akPublic = parsePublic(g.akPublic);
    const v = await verifyQuote({
      attest: g.attest,
      signature: g.signature,
      akPublic,
      nonce: new Uint8Array(0),
      pcrValues: g.values,
    });
    assert.deepEqual(codes(v), []);
    assert.equal(v.signature?.sigAlg, 'rsassa');
    assert.equal(v.signature?.hashAlg, 'sha1');
    assert.equal(toHex(v.attest!.quote!.pcrDigest), 'a610f27bc687ce906243287d832706036e79f6e1');
    assert.deepEqual(v.attest!.quote!.pcrSelection, [{ bank: 'sha1', pcrs: [...Array(24).keys()] }]);
  });

  it('go-attestation: the AK creation attestation verifies but is not a quote', async () => {
    const g = goAttestation();
    const v = await verifyQuote({
      attest: g.createAttestation,
      signature: g.createSignature,
      akPublic: parsePublic(g.akPublic),
    });
    assert.deepEqual(codes(v), ['QUOTE_NOT_A_QUOTE']);
    assert.equal(v.attest?.type, 0x801a);
    assert.ok(v.attest?.attested !== undefined && v.attest.attested.byteLength > 0);
  });

  it('trustee: DER SPKI AK, 64-byte extraData, 24 SHA-256 PCRs', async () => {
    const t = trustee();
    const v = await verifyQuote({
      attest: t.attest,
      signature: t.signature,
      akPublic: publicFromSpki(t.akSpki),
      pcrValues: t.values,
    });
    assert.deepEqual(codes(v), []);
    const a = v.attest!;
    assert.equal(
      toHex(a.qualifiedSigner),
      '000b3081a4cbbe307f3de1456f9875a3c2632528a70d91fcf578ccf092465e4e8e09',
    );
    assert.equal(a.extraData.byteLength, 64);
    assert.ok(
      toHex(a.extraData).startsWith('a04182b5') && toHex(a.extraData).endsWith(`fbc5c120${'00'.repeat(16)}`),
    );
    assert.equal(a.clockInfo.resetCount, 2);
    assert.equal(a.firmwareVersion, 0x2019102300163636n);
    assert.equal(
      toHex(a.quote!.pcrDigest),
      '019de64c9318655e422c3d03831169896e31f02a1d74e4d8fef575bf4e0d75fa',
    );
  });

  it('veraison-enacttrust: ECDSA P-256, PEM key, node-id as extraData, digest of basic.json', async () => {
    const e = veraison();
    const nonce = fromHex('7df7714eaa044638bcbf434b1dd720f1');
    const v = await verifyQuote({
      attest: e.attest,
      signature: e.signature,
      akPublic: publicFromPem(e.pem),
      nonce,
    });
    assert.deepEqual(codes(v), []);
    assert.equal(v.signature?.sigAlg, 'ecdsa');
    assert.equal(v.attest!.qualifiedSigner.byteLength, 0);
    assert.equal(v.attest!.firmwareVersion, 7n);
    assert.deepEqual(v.attest!.quote!.pcrSelection, [{ bank: 'sha256', pcrs: [1, 2, 3, 4] }]);
    const digest = Buffer.from('h0KPxSKAPTEGXnvOPPA/5HUJZjHl4Hu9eg/eYMTPJcc=', 'base64');
    assert.equal(toHex(v.attest!.quote!.pcrDigest), digest.toString('hex'));
  });

  it('global-trust-authority boot evidence: AK from a DER certificate, SHA-256 PCR 0-7', async () => {
    const g = globalTrustAuthority('boot-test_evidence.json');
    const nonce = fromHex('96362bf2f60d62b12b14718a7a22f8be');
    const akPublic = publicFromSpki(g.akSpki);
    const v = await verifyQuote({
      attest: g.attest,
      signature: g.signature,
      akPublic,
      nonce,
      pcrValues: g.values,
    });
    assert.deepEqual(codes(v), []);
    assert.equal(
      toHex(v.attest!.quote!.pcrDigest),
      'f3359b911a0b80fdb58bcc18a87fc510200efc68f0a4e7c8b78d963ad2781318',
    );
  });

  it('global-trust-authority common evidence: wrong AK certificate -> bad signature only', async () => {
    const g = globalTrustAuthority('common-test_evidence.json');
    const v = await verifyQuote({
      attest: g.attest,
      signature: g.signature,
      akPublic: publicFromSpki(g.akSpki),
      pcrValues: g.values,
    });
    assert.deepEqual(codes(v), ['QUOTE_BAD_SIGNATURE']);
    assert.equal(v.ok, false);
  });

  it('rust-keylime: parses, nonce "TEST", PCR 16 from the blob gives pcrDigest (no AK shipped)', () => {
    const r = rustKeylime();
    const values = parseSerializedPcrs(r.pcrBlob);
    assert.equal(toHex(values.get('sha1')!.get(16)!), '1749fe7b66b2acb66838ba3612a72cacf8938b84');
    const attest = parseAttest(r.attest);
    assert.equal(Buffer.from(attest.extraData).toString(), 'TEST');
    assert.equal(attest.firmwareVersion, 0x2019102300163636n);
    assert.equal(toHex(attest.quote!.pcrDigest), '2924e189a14040a0591f8c9c7a93f737ed73727c');
    assert.equal(matchPcrDigest(attest, values, 'sha1'), true);
    assert.equal(matchPcrDigest(attest, values, 'sha256'), false);
  });
});

describe('verifyQuote failure codes', () => {
  const k = keylimeBundle();
  const akPublic = parsePublic(k.akPub);

  it('a flipped signature byte is QUOTE_BAD_SIGNATURE, not a throw', async () => {
    const v = await verifyQuote({ attest: k.attest, signature: flip(k.signature, 100), akPublic });
    assert.deepEqual(codes(v), ['QUOTE_BAD_SIGNATURE']);
  });

  it('a flipped pcrDigest byte fails the signature', async () => {
    const v = await verifyQuote({
      attest: flip(k.attest, k.attest.byteLength - 1),
      signature: k.signature,
      akPublic,
    });
    assert.deepEqual(codes(v), ['QUOTE_BAD_SIGNATURE']);
  });

  it('another nonce is QUOTE_NONCE_MISMATCH', async () => {
    const v = await verifyQuote({
      attest: k.attest,
      signature: k.signature,
      akPublic,
      nonce: flip(k.nonce, 0),
    });
    assert.deepEqual(codes(v), ['QUOTE_NONCE_MISMATCH']);
  });

  it('another RSA AK: QUOTE_BAD_SIGNATURE; an ECC AK for RSA: QUOTE_SCHEME_MISMATCH', async () => {
    const other = await verifyQuote({
      attest: k.attest,
      signature: k.signature,
      akPublic: publicFromSpki(trustee().akSpki),
    });
    assert.deepEqual(codes(other), ['QUOTE_BAD_SIGNATURE']);
    const ecc = await verifyQuote({
      attest: k.attest,
      signature: k.signature,
      akPublic: publicFromPem(veraison().pem),
    });
    assert.deepEqual(codes(ecc), ['QUOTE_SCHEME_MISMATCH']);
  });

  it('a signature hash other than the AK scheme hash is QUOTE_HASH_MISMATCH', async () => {
    const sha384Ak = { ...akPublic, scheme: { scheme: 0x0014, hashAlg: 'sha384' as const } };
    const v = await verifyQuote({ attest: k.attest, signature: k.signature, akPublic: sha384Ak });
    assert.deepEqual(codes(v), ['QUOTE_HASH_MISMATCH']);
  });

  it('the AK Name is not the qualified signer: QUOTE_SIGNER_MISMATCH', async () => {
    const v = await verifyQuote({
      attest: k.attest,
      signature: k.signature,
      akPublic,
      expectedQualifiedSigner: k.akName,
    });
    assert.deepEqual(codes(v), ['QUOTE_SIGNER_MISMATCH']);
    const ok = await verifyQuote({
      attest: k.attest,
      signature: k.signature,
      akPublic,
      expectedQualifiedSigner: fromHex(
        '000b7ca54a622c87f30888b6da66f51e4a31ccb723cad8daa111a5006b44342dd623',
      ),
    });
    assert.deepEqual(codes(ok), []);
  });

  it('changed PCR values are QUOTE_PCR_DIGEST_MISMATCH; absent ones QUOTE_PCRS_MISSING', async () => {
    const values = parseSerializedPcrs(k.pcrFile);
    values.get('sha256')!.set(16, new Uint8Array(32));
    const v = await verifyQuote({ attest: k.attest, signature: k.signature, akPublic, pcrValues: values });
    assert.deepEqual(codes(v), ['QUOTE_PCR_DIGEST_MISMATCH']);
    const none: PcrValues = new Map([['sha1', new Map()]]);
    const m = await verifyQuote({ attest: k.attest, signature: k.signature, akPublic, pcrValues: none });
    assert.deepEqual(codes(m), ['QUOTE_PCRS_MISSING']);
    assert.match(m.failures[0]!.message, /sha256:15, sha256:16, sha256:22/);
  });

  it('a wrong magic is reported (with the signature then failing too)', async () => {
    const v = await verifyQuote({ attest: flip(k.attest, 0), signature: k.signature, akPublic });
    assert.deepEqual(codes(v), ['QUOTE_BAD_SIGNATURE', 'QUOTE_BAD_MAGIC']);
  });

  it('ECDSA: flipped r or s, or r longer than the curve, is QUOTE_BAD_SIGNATURE', async () => {
    const e = veraison();
    const ak = publicFromPem(e.pem);
    for (const at of [10, e.signature.byteLength - 1]) {
      const v = await verifyQuote({ attest: e.attest, signature: flip(e.signature, at), akPublic: ak });
      assert.deepEqual(codes(v), ['QUOTE_BAD_SIGNATURE']);
    }
    // ECDSA body: sigAlg 0018, hash 000b, r TPM2B, s TPM2B; r grown to 33 significant bytes.
    const r = e.signature.subarray(6, 38);
    const s = e.signature.subarray(40);
    const longR = concat(fromHex('0018000b0021'), Uint8Array.of(1), r, fromHex('0020'), s);
    const v = await verifyQuote({ attest: e.attest, signature: longR, akPublic: ak });
    assert.deepEqual(codes(v), ['QUOTE_BAD_SIGNATURE']);
    // A leading zero byte on r (33 bytes, 32 significant) is still the same signature.
    const paddedR = concat(fromHex('0018000b0021'), Uint8Array.of(0), r, fromHex('0020'), s);
    assert.deepEqual(codes(await verifyQuote({ attest: e.attest, signature: paddedR, akPublic: ak })), []);
  });
});
