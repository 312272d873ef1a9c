import { bytesEqual } from '../bytes/hex.ts';
import { type HashAlg, hash, hashAlgFromKernelName } from '../hash.ts';
import { decodePrefixedDigest } from '../ima/fields.ts';
import type { ImaRecord } from '../ima/record.ts';
import { splitFields, splitLegacy, templateDescriptor } from '../ima/templates.ts';
import type { PcrValues } from '../pcr.ts';

/** `matched`/`mismatch` against quoted PCRs; `unchecked` when the quote lacks PCRs 0–7 of the bank. */
export type BootAggregateCheck = 'matched' | 'mismatch' | 'unchecked';

/**
 * Checks a boot_aggregate record against quoted PCR values (DOMAIN §2.4): SHA-1 bank =
 * SHA1(PCR0‖…‖PCR7); any other bank = H(PCR0‖…‖PCR9) since 5.8 and stable backports, or the
 * pre-5.8 form over PCRs 0–7 — both are accepted. The digest's bank is the one its `d-ng` prefix
 * names (legacy `ima`: the SHA-1 `d` field). An all-zero digest (no TPM at boot) cannot match.
 * `quoted` must be values a verified quote vouches for.
 */
export function checkBootAggregate(
  rec: ImaRecord,
  quoted: PcrValues,
  littleEndian: boolean,
): BootAggregateCheck {
  const logged = loggedAggregate(rec, littleEndian);
  if (logged === undefined) return 'mismatch';
  const values = quoted.get(logged.bank);
  const pcrs = Array.from({ length: 10 }, (_, i) => values?.get(i));
  if (pcrs.slice(0, 8).some((v) => v === undefined)) return 'unchecked';
  const firmware = pcrs.filter((v): v is Uint8Array => v !== undefined);
  const candidates = [hash(logged.bank, ...firmware.slice(0, 8))];
  if (logged.bank !== 'sha1' && firmware.length === 10) candidates.push(hash(logged.bank, ...firmware));

  return candidates.some((c) => bytesEqual(c, logged.digest)) ? 'matched' : 'mismatch';
}

function loggedAggregate(
  rec: ImaRecord,
  littleEndian: boolean,
): { bank: HashAlg; digest: Uint8Array } | undefined {
  const { kind, fields } = templateDescriptor(rec.templateName);
  if (kind === 'legacy') {
    const legacy = splitLegacy(rec.templateData, littleEndian);
    return typeof legacy === 'string' ? undefined : { bank: 'sha1', digest: legacy.fileDigest };
  }
  const at = fields.indexOf('d-ng');
  if (kind === 'unknown' || at < 0) return undefined;
  const values = splitFields(rec.templateData, fields.length, littleEndian);
  const field = typeof values === 'string' ? undefined : decodePrefixedDigest(values[at] as Uint8Array);
  const bank = field === undefined ? undefined : hashAlgFromKernelName(field.alg);

  return bank === undefined || field === undefined ? undefined : { bank, digest: field.digest };
}
