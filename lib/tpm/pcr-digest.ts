import { bytesEqual } from '../bytes/hex.ts';
import { type HashAlg, hash } from '../hash.ts';
import type { PcrValues } from '../pcr.ts';
import type { Attest } from './attest.ts';
import type { PcrSelection } from './pcr-selection.ts';

/** A selected PCR for which no value was supplied. */
export interface MissingPcr {
  bank: HashAlg | number;
  pcr: number;
}

/**
 * The pcrDigest a TPM would sign for `values` under `selection` (TPM2_Quote, TCG Part 3, 18.4):
 * H_sig over the selected values, banks in selection order and PCRs ascending within a bank,
 * H_sig being the signing scheme's hash — not the bank's. Returns the PCRs lacking a value
 * instead when any is missing. The values are whatever the caller supplies: the digest proves
 * something only once it equals the pcrDigest of a verified quote.
 */
export function computePcrDigest(
  selection: PcrSelection,
  values: PcrValues,
  hashAlg: HashAlg,
): Uint8Array | { missing: MissingPcr[] } {
  const parts: Uint8Array[] = [];
  const missing: MissingPcr[] = [];
  for (const { bank, pcrs } of selection) {
    const bankValues = typeof bank === 'number' ? undefined : values.get(bank);
    for (const pcr of [...pcrs].sort((a, b) => a - b)) {
      const value = bankValues?.get(pcr);
      if (value === undefined) missing.push({ bank, pcr });
      else parts.push(value);
    }
  }

  return missing.length > 0 ? { missing } : hash(hashAlg, ...parts);
}

/**
 * Whether `values` reproduce the quote's pcrDigest. False when the attest is not a quote or a
 * selected PCR has no value. `hashAlg` must be the verified signature's hash.
 */
export function matchPcrDigest(attest: Attest, values: PcrValues, hashAlg: HashAlg): boolean {
  if (attest.quote === undefined) return false;
  const digest = computePcrDigest(attest.quote.pcrSelection, values, hashAlg);

  return digest instanceof Uint8Array && bytesEqual(digest, attest.quote.pcrDigest);
}
