import { createHash, createHmac } from 'node:crypto';
import { ImastreamError } from '../errors.ts';
import { digestSize, type HashAlg } from '../hash.ts';
import { concat, u32be } from './marshal.ts';

/**
 * The two key derivation functions of TPM 2.0 (TCG Part 1, 11.4.10), as MakeCredential and
 * ActivateCredential use them. Both are counter-mode constructions: blocks numbered from 1 as a
 * u32be, concatenated, truncated to the requested length.
 *
 * Labels are ASCII strings used with ONE terminating NUL: the TPM hashes "STORAGE\0", not
 * "STORAGE". A label that already ends in NUL is not given a second one.
 */

/** Upper bound on derived output; MakeCredential needs at most a SHA-512 digest. */
const MAX_BITS = 8 * 1024 * 8;

/*
 * KDFa (Part 1, 11.4.10.2; SP800-108 counter mode with HMAC as the PRF):
 *   K(i) = HMAC_H(key, i u32be ‖ label ‖ 0x00 ‖ contextU ‖ contextV ‖ bits u32be),  i = 1, 2, …
 *   KDFa = leftmost `bits` of K(1) ‖ K(2) ‖ …
 */
export function kdfA(
  alg: HashAlg,
  key: Uint8Array,
  label: string,
  contextU: Uint8Array,
  contextV: Uint8Array,
  bits: number,
): Uint8Array {
  checkBits(bits);
  const tail = concat(labelBytes(label), contextU, contextV, u32be(bits));

  return counterMode(alg, bits, (i) => createHmac(alg, key).update(u32be(i)).update(tail).digest());
}

/*
 * KDFe (Part 1, 11.4.10.3; SP800-56A concatenation KDF):
 *   K(i) = H(i u32be ‖ Z ‖ use ‖ 0x00 ‖ partyUInfo ‖ partyVInfo),  i = 1, 2, …
 *   KDFe = leftmost `bits` of K(1) ‖ K(2) ‖ …
 * Z is the x-coordinate of the ECDH shared point; for MakeCredential partyU is the ephemeral
 * key's x and partyV the EK's x.
 */
export function kdfE(
  alg: HashAlg,
  z: Uint8Array,
  use: string,
  partyUInfo: Uint8Array,
  partyVInfo: Uint8Array,
  bits: number,
): Uint8Array {
  checkBits(bits);
  const otherInfo = concat(labelBytes(use), partyUInfo, partyVInfo);

  return counterMode(alg, bits, (i) => createHash(alg).update(u32be(i)).update(z).update(otherInfo).digest());
}

function counterMode(alg: HashAlg, bits: number, block: (i: number) => Uint8Array): Uint8Array {
  const bytes = bits / 8;
  const blocks: Uint8Array[] = [];
  for (let i = 1; i <= Math.ceil(bytes / digestSize(alg)); i++) blocks.push(block(i));

  return concat(...blocks).slice(0, bytes);
}

/** The label as hashed: its ASCII bytes and exactly one terminating NUL. */
function labelBytes(label: string): Uint8Array {
  if (!/^[\x20-\x7e]*\0?$/.test(label)) {
    throw new ImastreamError('IMS_TPM_BAD_KDF', 'KDF label must be printable ASCII', { details: { label } });
  }
  const text = label.endsWith('\0') ? label : `${label}\0`;

  return new TextEncoder().encode(text);
}

/** Whole bytes only: every TPM use of these KDFs asks for a multiple of 8 bits. */
function checkBits(bits: number): void {
  if (!Number.isInteger(bits) || bits <= 0 || bits % 8 !== 0 || bits > MAX_BITS) {
    throw new ImastreamError('IMS_TPM_BAD_KDF', `cannot derive ${bits} bits`, {
      details: { bits, max: MAX_BITS },
    });
  }
}
