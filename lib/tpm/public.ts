import type { Reader } from '../bytes/reader.ts';
import { ImastreamError } from '../errors.ts';
import { type HashAlg, hashAlgFromTpm } from '../hash.ts';
import { algName, LIMITS, type ObjectAttribute, TPM_ALG, TPMA_OBJECT } from './constants.ts';
import { expectEnd, readTpm2b, tpmReader } from './marshal.ts';

/** PEM/SPKI keys and WebCrypto import live in key.ts; re-exported so one import serves AKs in any form. */
export { publicFromPem, publicFromSpki, toJwk } from './key.ts';

/** The key material of a public area, enough to verify a signature. */
export type PublicKey =
  | {
      type: 'rsa';
      keyBits: number /** effective exponent: 0 in the TPM means 65537 */;
      exponent: number;
      modulus: Uint8Array;
    }
  | { type: 'ecc'; curveId: number; x: Uint8Array; y: Uint8Array };

/** A scheme (TPMT_RSA_SCHEME / TPMT_ECC_SCHEME / TPMT_KDF_SCHEME); null when TPM_ALG_NULL. */
export interface Scheme {
  /** TPM_ALG_ID of the scheme (RSASSA, RSAPSS, ECDSA, …). */
  scheme: number;
  /** The scheme's hash; a number when imastream does not know the algorithm. */
  hashAlg?: HashAlg | number;
}

/**
 * An AK as the quote verifier needs it: the key and, when known, the signing scheme the TPM
 * enforces. A TPM public area gives both; a PEM key gives only the key.
 */
export interface AkPublic {
  key: PublicKey;
  scheme: Scheme | null;
}

/**
 * A parsed TPMT_PUBLIC. Parsing proves nothing about where the key lives: only an EK-bound
 * enrolment (credential activation) ties it to a TPM. `bytes` is the exact TPMT_PUBLIC, the input
 * of the object's Name.
 */
export interface TpmPublic extends AkPublic {
  nameAlg: HashAlg;
  objectAttributes: number;
  authPolicy: Uint8Array;
  /** TPMT_SYM_DEF_OBJECT; null when TPM_ALG_NULL (always, for a signing key). */
  symmetric: { algorithm: number; keyBits: number; mode: number } | null;
  /** ECC only: the key derivation scheme. */
  kdf?: Scheme | null;
  bytes: Uint8Array;
}

/**
 * Parses a public area, with or without the TPM2B_PUBLIC size prefix (`tpm2_createak -u` writes
 * TPM2B_PUBLIC; go-attestation stores TPMT_PUBLIC). A TPMT_PUBLIC starts with its type, RSA
 * (0x0001) or ECC (0x0023); a size prefix of 1 or 35 is too small for any public area, so the first
 * u16 tells the two apart. A TPM2B's size must match the bytes that follow.
 */
export function parsePublic(bytes: Uint8Array): TpmPublic {
  if (bytes.byteLength > LIMITS.publicArea + 2) {
    throw badPublic(`${bytes.byteLength} bytes exceeds ${LIMITS.publicArea}`, 0);
  }
  const r = tpmReader(bytes);
  const first = r.u16be('TPM2B_PUBLIC.size');
  if (first === TPM_ALG.RSA || first === TPM_ALG.ECC) return parseTpmtPublic(bytes);
  const body = r.bytes(first, 'TPM2B_PUBLIC.publicArea');
  expectEnd(r, 'TPM2B_PUBLIC');

  return parseTpmtPublic(body);
}

/*
 * TPMT_PUBLIC (TCG Part 2, 12.2.4), big-endian:
 *   type              TPMI_ALG_PUBLIC  u16: RSA 0x0001 or ECC 0x0023 (others refused)
 *   nameAlg           TPMI_ALG_HASH    u16
 *   objectAttributes  TPMA_OBJECT      u32
 *   authPolicy        TPM2B_DIGEST
 *   parameters        TPMU_PUBLIC_PARMS:
 *     RSA: TPMS_RSA_PARMS  symmetric TPMT_SYM_DEF_OBJECT, scheme TPMT_RSA_SCHEME, keyBits u16, exponent u32
 *     ECC: TPMS_ECC_PARMS  symmetric, scheme TPMT_ECC_SCHEME, curveID u16, kdf TPMT_KDF_SCHEME
 *   unique            TPMU_PUBLIC_ID: RSA TPM2B_PUBLIC_KEY_RSA; ECC TPMS_ECC_POINT (x, y TPM2B_ECC_PARAMETER)
 */
export function parseTpmtPublic(bytes: Uint8Array): TpmPublic {
  const r = tpmReader(bytes);
  const type = r.u16be('TPMT_PUBLIC.type');
  if (type !== TPM_ALG.RSA && type !== TPM_ALG.ECC) {
    throw new ImastreamError(
      'IMS_TPM_UNSUPPORTED_ALG',
      `public area type ${algName(type)} is not RSA or ECC`,
      {
        details: { offset: 0, type },
      },
    );
  }
  const nameAlg = readNameAlg(r);
  const objectAttributes = r.u32be('TPMT_PUBLIC.objectAttributes');
  const authPolicy = readTpm2b(r, LIMITS.digest, 'TPMT_PUBLIC.authPolicy', 'IMS_TPM_BAD_PUBLIC').slice();
  const symmetric = readSymDefObject(r);
  const rest = type === TPM_ALG.RSA ? readRsaParts(r) : readEccParts(r);
  expectEnd(r, 'TPMT_PUBLIC');

  return { nameAlg, objectAttributes, authPolicy, symmetric, ...rest, bytes: bytes.slice() };
}

function readNameAlg(r: Reader): HashAlg {
  const offset = r.position;
  const id = r.u16be('TPMT_PUBLIC.nameAlg');
  const alg = hashAlgFromTpm(id);
  if (alg === undefined) {
    throw new ImastreamError('IMS_TPM_UNSUPPORTED_ALG', `nameAlg ${algName(id)} is not supported`, {
      details: { offset, nameAlg: id },
    });
  }

  return alg;
}

/* TPMT_SYM_DEF_OBJECT (Part 2, 11.1.7): algorithm u16; unless NULL, keyBits u16 and mode u16. */
function readSymDefObject(r: Reader): TpmPublic['symmetric'] {
  const algorithm = r.u16be('TPMT_SYM_DEF_OBJECT.algorithm');
  if (algorithm === TPM_ALG.NULL) return null;
  const keyBits = r.u16be('TPMT_SYM_DEF_OBJECT.keyBits');
  const mode = r.u16be('TPMT_SYM_DEF_OBJECT.mode');

  return { algorithm, keyBits, mode };
}

/* TPMS_RSA_PARMS tail and TPM2B_PUBLIC_KEY_RSA (Part 2, 12.2.3.5 and 11.2.4.5). */
function readRsaParts(r: Reader): Pick<TpmPublic, 'key' | 'scheme'> {
  const scheme = readScheme(r, 'TPMT_RSA_SCHEME');
  const keyBits = r.u16be('TPMS_RSA_PARMS.keyBits');
  const exponent = r.u32be('TPMS_RSA_PARMS.exponent');
  const modulusOffset = r.position;
  const modulus = readTpm2b(r, LIMITS.rsaKey, 'TPM2B_PUBLIC_KEY_RSA', 'IMS_TPM_BAD_PUBLIC').slice();
  if (modulus.byteLength * 8 !== keyBits) {
    throw badPublic(`modulus of ${modulus.byteLength} bytes for keyBits ${keyBits}`, modulusOffset);
  }

  return { scheme, key: { type: 'rsa', keyBits, exponent: exponent === 0 ? 65537 : exponent, modulus } };
}

/* TPMS_ECC_PARMS tail and TPMS_ECC_POINT (Part 2, 12.2.3.6 and 11.2.5.2). */
function readEccParts(r: Reader): Pick<TpmPublic, 'key' | 'scheme' | 'kdf'> {
  const scheme = readScheme(r, 'TPMT_ECC_SCHEME');
  const curveId = r.u16be('TPMS_ECC_PARMS.curveID');
  const kdf = readScheme(r, 'TPMT_KDF_SCHEME');
  const x = readTpm2b(r, LIMITS.eccParameter, 'TPMS_ECC_POINT.x', 'IMS_TPM_BAD_PUBLIC').slice();
  const y = readTpm2b(r, LIMITS.eccParameter, 'TPMS_ECC_POINT.y', 'IMS_TPM_BAD_PUBLIC').slice();

  return { scheme, kdf, key: { type: 'ecc', curveId, x, y } };
}

/**
 * TPMT_*_SCHEME (Part 2, 11.2): scheme u16, then the details the scheme selects: nothing for
 * NULL and RSAES, `hashAlg u16 ‖ count u16` for ECDAA, `hashAlg u16` for every other scheme.
 */
function readScheme(r: Reader, what: string): Scheme | null {
  const offset = r.position;
  const scheme = r.u16be(`${what}.scheme`);
  if (scheme === TPM_ALG.NULL) return null;
  if (scheme === TPM_ALG.RSAES) return { scheme };
  if (!HASHED_SCHEMES.has(scheme)) {
    throw badPublic(`${what}: unknown scheme ${algName(scheme)}`, offset);
  }
  const hashId = r.u16be(`${what}.hashAlg`);
  if (scheme === TPM_ALG.ECDAA) r.u16be(`${what}.count`);

  return { scheme, hashAlg: hashAlgFromTpm(hashId) ?? hashId };
}

const HASHED_SCHEMES: ReadonlySet<number> = new Set([
  TPM_ALG.RSASSA,
  TPM_ALG.RSAPSS,
  TPM_ALG.OAEP,
  TPM_ALG.ECDSA,
  TPM_ALG.ECDH,
  TPM_ALG.ECDAA,
  TPM_ALG.SM2,
  TPM_ALG.ECSCHNORR,
  0x001d, // TPM_ALG_ECMQV
  TPM_ALG.KDF1_SP800_56A,
  TPM_ALG.KDF2,
  TPM_ALG.KDF1_SP800_108,
  0x0007, // TPM_ALG_MGF1
]);

/** Whether an attribute bit is set. */
export function hasAttribute(pub: Pick<TpmPublic, 'objectAttributes'>, attr: ObjectAttribute): boolean {
  return (pub.objectAttributes & TPMA_OBJECT[attr]) !== 0;
}

/** The names of the attribute bits set, for display. */
export function attributeNames(objectAttributes: number): ObjectAttribute[] {
  return (Object.keys(TPMA_OBJECT) as ObjectAttribute[]).filter(
    (a) => (objectAttributes & TPMA_OBJECT[a]) !== 0,
  );
}

/** Stable codes for what makes a key unfit to be an AK. */
export type AkProblemCode =
  | 'AK_MISSING_ATTRIBUTE'
  | 'AK_CAN_DECRYPT'
  | 'AK_WEAK_KEY'
  | 'AK_UNAPPROVED_CURVE'
  | 'AK_NO_SIGNING_SCHEME';

/** One reason a key is not acceptable as an AK. */
export interface AkProblem {
  code: AkProblemCode;
  message: string;
}

const REQUIRED_AK_ATTRIBUTES: readonly ObjectAttribute[] = [
  'fixedTPM',
  'fixedParent',
  'sensitiveDataOrigin',
  'restricted',
  'sign',
];

/** NIST P-256, P-384, P-521: curves of at least 256 bits that WebCrypto can verify. */
const APPROVED_CURVES: ReadonlySet<number> = new Set([0x0003, 0x0004, 0x0005]);

/**
 * Why a public area is not acceptable as an attestation key (empty when it is): a restricted,
 * non-duplicable signing key generated in the TPM, that cannot decrypt, RSA ≥ 2048 bits or an
 * approved curve. `restricted` is what stops the TPM from signing forged TPMS_ATTEST bytes.
 * This checks the declared attributes only; that the key lives in a TPM is proved by enrolment.
 */
export function checkAkAttributes(pub: TpmPublic): AkProblem[] {
  const problems: AkProblem[] = [];
  for (const attr of REQUIRED_AK_ATTRIBUTES) {
    if (!hasAttribute(pub, attr))
      problems.push({ code: 'AK_MISSING_ATTRIBUTE', message: `${attr} is not set` });
  }
  if (hasAttribute(pub, 'decrypt')) problems.push({ code: 'AK_CAN_DECRYPT', message: 'decrypt is set' });
  if (pub.key.type === 'rsa' && pub.key.keyBits < 2048) {
    problems.push({ code: 'AK_WEAK_KEY', message: `RSA key of ${pub.key.keyBits} bits` });
  }
  if (pub.key.type === 'ecc' && !APPROVED_CURVES.has(pub.key.curveId)) {
    problems.push({ code: 'AK_UNAPPROVED_CURVE', message: `curve 0x${pub.key.curveId.toString(16)}` });
  }
  if (pub.scheme === null) {
    problems.push({ code: 'AK_NO_SIGNING_SCHEME', message: 'scheme is TPM_ALG_NULL' });
  }

  return problems;
}

function badPublic(message: string, offset: number): ImastreamError {
  return new ImastreamError('IMS_TPM_BAD_PUBLIC', `TPMT_PUBLIC: ${message}`, { details: { offset } });
}
