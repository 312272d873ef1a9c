import { hash as oneShotHash } from 'node:crypto';
import { ImastreamError } from '../errors.ts';
import { digestSize, type HashAlg } from '../hash.ts';
import { type ImaRecord, LEGACY_DIGEST_SIZE, LEGACY_IMA, LEGACY_NAME_MAX } from './record.ts';

/**
 * Template digests (DOMAIN.md §1.7): what the kernel extends for one record in one bank.
 * Everything hashes the raw template data as logged; nothing is rebuilt.
 */

/** The legacy `ima` name buffer: name and NUL, zero-filled to IMA_EVENT_NAME_LEN_MAX + 1. */
const LEGACY_HASHED_SIZE = LEGACY_DIGEST_SIZE + LEGACY_NAME_MAX + 1;

/**
 * What a legacy `ima` record's digest covers: filedigest[20] || name zero-padded to 256 bytes.
 * Writes into `scratch` (276 bytes) when given, to spare an allocation per record.
 * The name is everything after the u32 length, so the length's byte order does not matter.
 */
export function legacyHashInput(templateData: Uint8Array, scratch?: Uint8Array): Uint8Array {
  const nameLen = templateData.byteLength - LEGACY_DIGEST_SIZE - 4;
  if (nameLen < 0 || nameLen > LEGACY_NAME_MAX) {
    throw new ImastreamError(
      'IMS_IMA_BAD_TEMPLATE_DATA',
      `legacy ima data of ${templateData.byteLength} bytes`,
    );
  }
  const out = scratch ?? new Uint8Array(LEGACY_HASHED_SIZE);
  out.set(templateData.subarray(0, LEGACY_DIGEST_SIZE), 0);
  out.set(templateData.subarray(LEGACY_DIGEST_SIZE + 4), LEGACY_DIGEST_SIZE);
  out.fill(0, LEGACY_DIGEST_SIZE + nameLen);

  return out;
}

export { LEGACY_HASHED_SIZE };

/** `H_alg` of what the kernel hashed for this record (template data, or the legacy 276 bytes). */
export function templateDigestOf(
  rec: Pick<ImaRecord, 'templateName' | 'templateData'>,
  alg: HashAlg,
): Uint8Array {
  const input = rec.templateName === LEGACY_IMA ? legacyHashInput(rec.templateData) : rec.templateData;
  // A latin1 string, not a Buffer: node:crypto's Buffer output costs more than the hash (replay.ts).
  const bytes = oneShotHash(alg, input, 'binary');
  const out = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) out[i] = bytes.charCodeAt(i);

  return out;
}

/** What a violation extends: 0xFF × size, or for the padded scheme 0xFF × 20 then zeros. */
export function violationDigest(bank: HashAlg, padded: boolean): Uint8Array {
  const out = new Uint8Array(digestSize(bank));
  out.fill(0xff, 0, padded ? LEGACY_DIGEST_SIZE : out.byteLength);

  return out;
}

/** A SHA-1 digest zero-padded (or cut, never in practice) to a bank's size. */
export function padDigest(sha1: Uint8Array, bank: HashAlg): Uint8Array {
  const out = new Uint8Array(digestSize(bank));
  out.set(sha1.subarray(0, out.byteLength), 0);

  return out;
}
