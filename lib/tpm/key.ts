import { createPublicKey, type JsonWebKey, type KeyObject, type webcrypto } from 'node:crypto';
import { ImastreamError } from '../errors.ts';
import { type HashAlg, webcryptoName } from '../hash.ts';
import { TPM_ECC_CURVE } from './constants.ts';
import type { AkPublic, PublicKey } from './public.ts';

/** WebCrypto names of the curves WebCrypto can verify with. */
const CURVES: ReadonlyMap<number, { name: 'P-256' | 'P-384' | 'P-521'; size: number }> = new Map([
  [TPM_ECC_CURVE.NIST_P256, { name: 'P-256', size: 32 }],
  [TPM_ECC_CURVE.NIST_P384, { name: 'P-384', size: 48 }],
  [TPM_ECC_CURVE.NIST_P521, { name: 'P-521', size: 66 }],
]);

/** The WebCrypto curve and coordinate size of a TPM curve id; throws for one WebCrypto lacks. */
export function webcryptoCurve(curveId: number): { name: 'P-256' | 'P-384' | 'P-521'; size: number } {
  const curve = CURVES.get(curveId);
  if (curve === undefined) {
    throw new ImastreamError(
      'IMS_TPM_UNSUPPORTED_ALG',
      `ECC curve 0x${curveId.toString(16)} is not supported`,
      {
        details: { curveId },
      },
    );
  }

  return curve;
}

/**
 * An AK from a PEM SubjectPublicKeyInfo (`tpm2_createak -f pem`, or the key of an AK
 * certificate). It carries no scheme, so the signature's own hash is used. Parsing only: the PEM
 * says nothing about whether the key is a TPM's.
 */
export function publicFromPem(pem: string): AkPublic {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: pem, format: 'pem' });
  } catch (cause) {
    throw new ImastreamError('IMS_TPM_BAD_PUBLIC', 'not a PEM public key', { cause });
  }

  return { key: publicKeyOfKeyObject(key), scheme: null };
}

/** As {@link publicFromPem}, for DER SubjectPublicKeyInfo bytes. */
export function publicFromSpki(der: Uint8Array): AkPublic {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: Buffer.from(der), format: 'der', type: 'spki' });
  } catch (cause) {
    throw new ImastreamError('IMS_TPM_BAD_PUBLIC', 'not a DER SubjectPublicKeyInfo', { cause });
  }

  return { key: publicKeyOfKeyObject(key), scheme: null };
}

function publicKeyOfKeyObject(key: KeyObject): PublicKey {
  const jwk = key.export({ format: 'jwk' });
  if (jwk.kty === 'RSA' && jwk.n !== undefined && jwk.e !== undefined) {
    const modulus = b64u(jwk.n);
    return { type: 'rsa', keyBits: modulus.byteLength * 8, exponent: bytesToUint(b64u(jwk.e)), modulus };
  }
  if (jwk.kty === 'EC' && jwk.x !== undefined && jwk.y !== undefined) {
    return { type: 'ecc', curveId: curveIdOfName(jwk.crv), x: b64u(jwk.x), y: b64u(jwk.y) };
  }
  throw new ImastreamError(
    'IMS_TPM_UNSUPPORTED_ALG',
    `key type ${jwk.kty ?? key.asymmetricKeyType} is not RSA or EC`,
  );
}

function curveIdOfName(crv: string | undefined): number {
  for (const [id, { name }] of CURVES) {
    if (name === crv) return id;
  }
  throw new ImastreamError('IMS_TPM_UNSUPPORTED_ALG', `EC curve ${crv} is not supported`);
}

/** The JWK of a public key; ECC coordinates are left-padded to the curve size. */
export function toJwk(key: PublicKey): JsonWebKey {
  if (key.type === 'rsa') {
    return { kty: 'RSA', n: b64uOf(stripZeros(key.modulus)), e: b64uOf(uintToBytes(key.exponent)) };
  }
  const { name, size } = webcryptoCurve(key.curveId);

  return { kty: 'EC', crv: name, x: b64uOf(leftPad(key.x, size)), y: b64uOf(leftPad(key.y, size)) };
}

/** WebCrypto verification algorithm, by TPM scheme name. */
export type VerifyAlg = 'rsassa' | 'rsapss' | 'ecdsa';

/** Imports a public key for WebCrypto `verify` with the given algorithm and hash. */
export async function importVerifyKey(
  key: PublicKey,
  alg: VerifyAlg,
  hashAlg: HashAlg,
): Promise<webcrypto.CryptoKey> {
  const hash = webcryptoName(hashAlg);
  const jwk = toJwk(key);
  try {
    if (alg === 'ecdsa') {
      return await crypto.subtle.importKey('jwk', jwk, { name: 'ECDSA', namedCurve: jwk.crv! }, false, [
        'verify',
      ]);
    }
    const name = alg === 'rsassa' ? 'RSASSA-PKCS1-v1_5' : 'RSA-PSS';
    return await crypto.subtle.importKey('jwk', jwk, { name, hash }, false, ['verify']);
  } catch (cause) {
    throw new ImastreamError('IMS_TPM_BAD_PUBLIC', `public key cannot be imported for ${alg}`, { cause });
  }
}

/** Left-pads (or rejects, returning undefined) a big-endian integer to exactly `size` bytes. */
export function toFixedSize(value: Uint8Array, size: number): Uint8Array | undefined {
  const v = stripZeros(value);
  return v.byteLength > size ? undefined : leftPad(v, size);
}

function leftPad(v: Uint8Array, size: number): Uint8Array {
  if (v.byteLength >= size) return v;
  const out = new Uint8Array(size);
  out.set(v, size - v.byteLength);

  return out;
}

function stripZeros(v: Uint8Array): Uint8Array {
  let i = 0;
  while (i < v.byteLength - 1 && v[i] === 0) i++;

  return v.subarray(i);
}

function uintToBytes(n: number): Uint8Array {
  const out: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) out.unshift(v % 256);

  return Uint8Array.from(out.length === 0 ? [0] : out);
}

function bytesToUint(b: Uint8Array): number {
  if (b.byteLength > 4) throw new ImastreamError('IMS_TPM_BAD_PUBLIC', 'RSA exponent wider than 32 bits');

  return b.reduce((n, byte) => n * 256 + byte, 0);
}

function b64u(s: string): Uint8Array {
  return new Uint8Array(Buffer.from(s, 'base64url'));
}

function b64uOf(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64url');
}
