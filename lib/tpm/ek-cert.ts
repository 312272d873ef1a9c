import { webcrypto, X509Certificate } from 'node:crypto';
import * as pkijs from 'pkijs';
import { bytesEqual } from '../bytes/hex.ts';
import { ImastreamError } from '../errors.ts';
import { publicFromSpki, toFixedSize, webcryptoCurve } from './key.ts';
import type { PublicKey } from './public.ts';

/**
 * EK certificate checks (TCG EK Credential Profile 2.x): is this certificate, read by the host
 * from its TPM's NV, issued through a chain to a manufacturer root we trust, valid now, meant for
 * an EK, and for THIS EK public key? Every answer is a verdict with a stable code; only a broken
 * trust store (our own configuration) throws.
 *
 * A valid EK certificate proves the key is a genuine TPM's EK. It does not prove the host holds
 * that TPM: credential activation (credential.ts, lib/enrol) does that.
 *
 * Path building and signature checks are pkijs's CertificateChainValidationEngine; the checks on
 * the EK certificate itself are ours, done first so that each failure gets its own code.
 * (@peculiar/x509 is not used: it needs a Reflect metadata polyfill the project does not ship.)
 * Revocation (CRL/OCSP) is not checked: TPM vendors' CRLs need network fetches, which lib/ does not do.
 */

export type EkCertCode =
  | 'EK_CERT_OK'
  | 'EK_CERT_MALFORMED'
  | 'EK_CERT_SELF_SIGNED'
  | 'EK_CERT_EXPIRED'
  | 'EK_CERT_NOT_YET_VALID'
  | 'EK_CERT_IS_CA'
  | 'EK_CERT_UNKNOWN_CRITICAL_EXTENSION'
  | 'EK_CERT_BAD_KEY_USAGE'
  | 'EK_CERT_KEY_MISMATCH'
  | 'EK_CERT_UNTRUSTED_ISSUER'
  | 'EK_CERT_BAD_SIGNATURE'
  | 'EK_CERT_ISSUER_EXPIRED'
  | 'EK_CERT_ISSUER_NOT_CA';

/** TPM identity from the subjectAltName directoryName (EK profile 3.2.9); untrusted unless ok. */
export interface TpmIdentity {
  manufacturer?: string;
  model?: string;
  version?: string;
}

export interface EkCertVerdict {
  ok: boolean;
  code: EkCertCode;
  message: string;
  /** Subjects from the EK certificate up to the trusted root, when the chain was built. */
  chain: string[];
  tpm: TpmIdentity;
}

/** One certificate in both parsed forms: pkijs for checks, node's for display names. */
export interface StoreCert {
  node: X509Certificate;
  pkijs: pkijs.Certificate;
}

/**
 * Manufacturer roots (trust anchors) and intermediates (path material only, never anchors).
 * Build it with {@link trustStoreFromCertificates}; loading files is the service's job.
 */
export interface TrustStore {
  roots: StoreCert[];
  intermediates: StoreCert[];
}

/** Node's WebCrypto in the type pkijs declares (the DOM `Crypto`, which this project's lib lacks). */
type PkiCrypto = pkijs.CryptoEngineParameters['crypto'];
const crypto = webcrypto as unknown as PkiCrypto;
const engine = new pkijs.CryptoEngine({ name: 'node', crypto });

/**
 * A trust store from DER or PEM certificate bytes. Self-signed certificates become roots, the
 * others intermediates. A certificate that does not parse throws IMS_ENROL_BAD_TRUST_ANCHOR: the
 * store is configuration, and a silently shorter store would turn into confusing verdicts.
 */
export async function trustStoreFromCertificates(certs: Uint8Array[]): Promise<TrustStore> {
  const store: TrustStore = { roots: [], intermediates: [] };
  for (const [index, bytes] of certs.entries()) {
    const parsed = parseBoth(bytes);
    if (parsed === undefined) {
      const details = { index, size: bytes.byteLength };
      throw new ImastreamError(
        'IMS_ENROL_BAD_TRUST_ANCHOR',
        `trust-store certificate #${index} does not parse`,
        {
          details,
        },
      );
    }
    const selfSigned = await isSelfSigned(parsed);
    (selfSigned ? store.roots : store.intermediates).push(parsed);
  }

  return store;
}

/**
 * Checks an EK certificate against the trust store at time `at`, and that it certifies
 * `ekKey` (the key of the EK public area the host sent). The checks, in order, each with its code:
 * parse, not self-signed, validity dates, not a CA, no unknown critical extension, key equals
 * the EK's, key usage (keyEncipherment for RSA, keyAgreement for ECC), issuer known and its
 * signature good, then the whole path to a root (issuer dates, CA constraints).
 */
export async function verifyEkCertificate(
  certBytes: Uint8Array,
  ekKey: PublicKey,
  store: TrustStore,
  at: Date,
): Promise<EkCertVerdict> {
  const leaf = parseBoth(certBytes);
  if (leaf === undefined) return fail('EK_CERT_MALFORMED', 'the EK certificate is not an X.509 certificate');
  const tpm = tpmIdentity(leaf.pkijs);

  const local = (await leafProblem(leaf, ekKey, at)) ?? (await issuerProblem(leaf, store));
  if (local !== undefined) return { ...local, tpm };

  return { ...(await pathVerdict(leaf, store, at)), tpm };
}

/** A verdict before the TPM identity is attached. */
type Finding = Omit<EkCertVerdict, 'tpm'>;

function fail(code: EkCertCode, message: string): EkCertVerdict {
  return { ok: false, code, message, chain: [], tpm: {} };
}

/** Checks on the EK certificate alone. */
async function leafProblem(leaf: StoreCert, ekKey: PublicKey, at: Date): Promise<Finding | undefined> {
  const cert = leaf.pkijs;
  if (await isSelfSigned(leaf)) return fail('EK_CERT_SELF_SIGNED', `self-signed: ${leaf.node.subject ?? ''}`);
  const notBefore = cert.notBefore.value;
  const notAfter = cert.notAfter.value;
  if (at < notBefore) return fail('EK_CERT_NOT_YET_VALID', `valid from ${notBefore.toISOString()}`);
  if (at > notAfter) return fail('EK_CERT_EXPIRED', `expired ${notAfter.toISOString()}`);
  const basic = extension(cert, '2.5.29.19');
  if (basic instanceof pkijs.BasicConstraints && basic.cA === true) {
    return fail('EK_CERT_IS_CA', 'the EK certificate is a CA certificate');
  }
  const critical = cert.extensions?.find((e) => e.critical && !KNOWN_EXTENSIONS.has(e.extnID));
  if (critical !== undefined) {
    return fail(
      'EK_CERT_UNKNOWN_CRITICAL_EXTENSION',
      `critical extension ${critical.extnID} is not understood`,
    );
  }

  return keyBindingProblem(cert, ekKey) ?? keyUsageProblem(cert, ekKey);
}

/** Extensions we understand well enough to accept when critical (RFC 5280 4.2; EK profile 3.2). */
const KNOWN_EXTENSIONS: ReadonlySet<string> = new Set([
  '2.5.29.15', // keyUsage
  '2.5.29.19', // basicConstraints
  '2.5.29.17', // subjectAltName (critical in EK certificates, whose subject is empty)
  '2.5.29.37', // extKeyUsage
  '2.5.29.32', // certificatePolicies
  '2.5.29.35', // authorityKeyIdentifier
  '2.5.29.14', // subjectKeyIdentifier
  '2.5.29.9', // subjectDirectoryAttributes (TPM specification)
]);

function extension(cert: pkijs.Certificate, oid: string): unknown {
  return cert.extensions?.find((e) => e.extnID === oid)?.parsedValue;
}

/* KeyUsage BIT STRING (RFC 5280 4.2.1.3), first octet: bit 0 (0x80) digitalSignature, 0x40
 * nonRepudiation, 0x20 keyEncipherment, 0x10 dataEncipherment, 0x08 keyAgreement, 0x04 keyCertSign. */
const KEY_ENCIPHERMENT = 0x20;
const KEY_AGREEMENT = 0x08;

/** EK profile 3.2.4: keyEncipherment for an RSA EK, keyAgreement for an ECC EK. */
function keyUsageProblem(cert: pkijs.Certificate, ekKey: PublicKey): Finding | undefined {
  const ku = extension(cert, '2.5.29.15');
  // pkijs gives an asn1js BitString; read it structurally (asn1js is not our dependency).
  const first = (ku as { valueBlock?: { valueHexView?: Uint8Array } } | undefined)?.valueBlock
    ?.valueHexView?.[0];
  const need = ekKey.type === 'rsa' ? KEY_ENCIPHERMENT : KEY_AGREEMENT;
  if (first === undefined || (first & need) === 0) {
    const what = ekKey.type === 'rsa' ? 'keyEncipherment' : 'keyAgreement';
    return fail(
      'EK_CERT_BAD_KEY_USAGE',
      `key usage lacks ${what} (${first === undefined ? 'absent' : first})`,
    );
  }

  return undefined;
}

/** The binding: the certified key is the EK's key (modulus and exponent, or curve and point). */
function keyBindingProblem(cert: pkijs.Certificate, ekKey: PublicKey): Finding | undefined {
  let certKey: PublicKey;
  try {
    certKey = publicFromSpki(new Uint8Array(cert.subjectPublicKeyInfo.toSchema().toBER(false))).key;
  } catch {
    return fail('EK_CERT_KEY_MISMATCH', 'the certificate key is not an RSA or NIST-curve key');
  }

  return sameKey(certKey, ekKey)
    ? undefined
    : fail('EK_CERT_KEY_MISMATCH', 'the certificate is for another key');
}

function sameKey(a: PublicKey, b: PublicKey): boolean {
  if (a.type === 'rsa' && b.type === 'rsa') {
    return a.exponent === b.exponent && bytesEqual(stripZeros(a.modulus), stripZeros(b.modulus));
  }
  if (a.type === 'ecc' && b.type === 'ecc' && a.curveId === b.curveId) {
    const { size } = webcryptoCurve(a.curveId);
    const same = (p: Uint8Array, q: Uint8Array) => {
      const fp = toFixedSize(p, size);
      const fq = toFixedSize(q, size);
      return fp !== undefined && fq !== undefined && bytesEqual(fp, fq);
    };
    return same(a.x, b.x) && same(a.y, b.y);
  }

  return false;
}

function stripZeros(v: Uint8Array): Uint8Array {
  let i = 0;
  while (i < v.byteLength - 1 && v[i] === 0) i++;

  return v.subarray(i);
}

/**
 * The direct issuer, before path building, to tell "nobody we know issued this" from "someone
 * claims our CA's name but the signature is not our CA's".
 */
async function issuerProblem(leaf: StoreCert, store: TrustStore): Promise<Finding | undefined> {
  const named = [...store.roots, ...store.intermediates].filter((c) =>
    leaf.pkijs.issuer.isEqual(c.pkijs.subject),
  );
  if (named.length === 0)
    return fail('EK_CERT_UNTRUSTED_ISSUER', `issuer not in the trust store: ${leaf.node.issuer}`);
  for (const issuer of named) {
    if (await signedBy(leaf, issuer)) return undefined;
  }

  return fail(
    'EK_CERT_BAD_SIGNATURE',
    `signature does not verify with any "${leaf.node.issuer}" in the trust store`,
  );
}

/** Self-issued (subject = issuer) and signed by its own key. */
async function isSelfSigned(cert: StoreCert): Promise<boolean> {
  return cert.pkijs.issuer.isEqual(cert.pkijs.subject) && (await signedBy(cert, cert));
}

async function signedBy(cert: StoreCert, issuer: StoreCert): Promise<boolean> {
  try {
    return await cert.pkijs.verify(issuer.pkijs, engine);
  } catch {
    return false;
  }
}

/** pkijs result codes (CertificateChainValidationEngine) mapped to ours. */
function pathCode(resultCode: number): EkCertCode {
  if (resultCode === 8) return 'EK_CERT_ISSUER_EXPIRED';
  if (resultCode === 14 || resultCode === 3 || resultCode === 4 || resultCode === 6)
    return 'EK_CERT_ISSUER_NOT_CA';

  return 'EK_CERT_UNTRUSTED_ISSUER';
}

/** Issuer look-ups one path search may make; real EK chains need a handful. */
const MAX_ISSUER_LOOKUPS = 64;

/**
 * pkijs's issuer search, made to terminate. pkijs builds every path depth-first with no visited
 * set, so CAs in the store that certify each other (cross-signed roots, a rollover) make it
 * recurse forever on any certificate under them. So: when a trusted root signed the certificate,
 * stop there (pkijs keeps the shortest path anyway), and after MAX_ISSUER_LOOKUPS give up, which
 * pkijs reports as no path (EK_CERT_UNTRUSTED_ISSUER).
 */
function boundedFindIssuer(roots: readonly pkijs.Certificate[]): pkijs.FindIssuerCallback {
  let lookups = 0;
  return async (cert, validator, crypto) => {
    lookups++;
    if (lookups > MAX_ISSUER_LOOKUPS) throw new Error(`over ${MAX_ISSUER_LOOKUPS} issuer look-ups`);
    const issuers = await validator.defaultFindIssuer(cert, validator, crypto);
    const anchors = issuers.filter((c) => roots.includes(c));

    return anchors.length > 0 ? anchors : issuers;
  };
}

async function pathVerdict(leaf: StoreCert, store: TrustStore, at: Date): Promise<Finding> {
  const trustedCerts = store.roots.map((c) => c.pkijs);
  const validator = new pkijs.CertificateChainValidationEngine({
    trustedCerts,
    certs: [...store.intermediates.map((c) => c.pkijs), leaf.pkijs],
    checkDate: at,
    findIssuer: boundedFindIssuer(trustedCerts),
  });
  const result = await validator.verify({}, engine);
  if (!result.result)
    return fail(pathCode(result.resultCode), `no valid path to a trusted root: ${result.resultMessage}`);
  const chain = (result.certificatePath ?? []).map(subjectOf);

  return { ok: true, code: 'EK_CERT_OK', message: `chains to ${chain.at(-1) ?? '?'}`, chain };
}

function subjectOf(cert: pkijs.Certificate): string {
  // Node gives undefined for the empty subject of an EK certificate.
  return new X509Certificate(new Uint8Array(cert.toSchema().toBER(false))).subject ?? '';
}

/** DER or PEM bytes in both libraries' forms; undefined when either refuses them. */
function parseBoth(bytes: Uint8Array): StoreCert | undefined {
  try {
    const der = toDer(bytes);
    return { node: new X509Certificate(der), pkijs: pkijs.Certificate.fromBER(der) };
  } catch {
    return undefined;
  }
}

/**
 * PEM text to DER; DER with NV padding trimmed. Some TPMs store the certificate in an NV index
 * larger than it, padded with 0x00 or 0xFF after the outer SEQUENCE.
 */
function toDer(bytes: Uint8Array): Uint8Array {
  const text = new TextDecoder().decode(bytes.subarray(0, 11));
  if (text === '-----BEGIN ') return pemToDer(new TextDecoder().decode(bytes));
  const length = derLength(bytes);
  if (length === undefined || length >= bytes.byteLength) return bytes;
  const pad = bytes.subarray(length);

  return pad.every((b) => b === 0) || pad.every((b) => b === 0xff) ? bytes.subarray(0, length) : bytes;
}

/** The first PEM block's body; garbage yields bytes the DER parser then refuses. */
function pemToDer(pem: string): Uint8Array {
  const body = /-----BEGIN [A-Z0-9 ]+-----([A-Za-z0-9+/=\s]*)-----END /.exec(pem)?.[1] ?? '';

  return new Uint8Array(Buffer.from(body.replace(/\s+/g, ''), 'base64'));
}

/** Total length of a DER SEQUENCE from its header (definite lengths of up to 4 bytes). */
function derLength(bytes: Uint8Array): number | undefined {
  if (bytes.byteLength < 2 || bytes[0] !== 0x30) return undefined;
  const first = bytes[1]!;
  if (first < 0x80) return 2 + first;
  const n = first & 0x7f;
  if (n === 0 || n > 4 || bytes.byteLength < 2 + n) return undefined;
  let len = 0;
  for (let i = 0; i < n; i++) len = len * 256 + bytes[2 + i]!;

  return 2 + n + len;
}

/* TPM attributes in the SAN directoryName: tcg-at-tpmManufacturer 2.23.133.2.1, Model .2, Version .3. */
const TPM_ATTRIBUTES: Readonly<Record<string, keyof TpmIdentity>> = {
  '2.23.133.2.1': 'manufacturer',
  '2.23.133.2.2': 'model',
  '2.23.133.2.3': 'version',
};

function tpmIdentity(cert: pkijs.Certificate): TpmIdentity {
  const out: TpmIdentity = {};
  const san = cert.extensions?.find((e) => e.extnID === '2.5.29.17')?.parsedValue;
  if (!(san instanceof pkijs.AltName)) return out;
  for (const name of san.altNames) {
    if (name.type !== 4 || !(name.value instanceof pkijs.RelativeDistinguishedNames)) continue;
    for (const tv of name.value.typesAndValues) {
      const key = TPM_ATTRIBUTES[tv.type];
      const value: unknown = tv.value?.valueBlock?.value;
      if (key !== undefined && typeof value === 'string') out[key] = value;
    }
  }

  return out;
}
