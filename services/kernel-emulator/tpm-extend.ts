import { toHex } from '../../lib/bytes/hex.ts';
import type { HashAlg } from '../../lib/hash.ts';
import { templateDigestOf } from '../../lib/ima/digest.ts';
import { extendDigest } from '../../lib/ima/replay.ts';
import type { TpmTools } from '../agent/tpm.ts';
import type { Measurement } from './kernel.ts';

/** Banks swtpm allocates by default; a kernel extends every allocated bank. */
export const DEFAULT_TPM_BANKS: readonly HashAlg[] = ['sha1', 'sha256', 'sha384', 'sha512'];

/** PCR:bank=digest arguments per tpm2_pcrextend call (each one TPM2_PCR_Extend). */
const PER_CALL = 100;

/**
 * Plays the kernel's TPM side for the emulator: every logged measurement is extended into the
 * PCR it names, in every bank, with that bank's template digest (per-bank scheme, kernels ≥ 5.8;
 * violations as all-0xFF). Called after the records are in the list, as the kernel appends
 * before it extends, so a reader may briefly be ahead of the TPM.
 */
export function tpmExtender(tpm: TpmTools, banks: readonly HashAlg[] = DEFAULT_TPM_BANKS) {
  return async (ms: readonly Measurement[]): Promise<void> => {
    for (let i = 0; i < ms.length; i += PER_CALL) {
      const args = ms.slice(i, i + PER_CALL).map((m) => {
        // The logged SHA-1 digest: zeros mark a violation, which extends all-0xFF.
        const templateDigest = m.violation === true ? new Uint8Array(20) : templateDigestOf(m, 'sha1');
        const rec = { ...m, templateDigest };
        const digests = banks.map((bank) => `${bank}=${toHex(extendDigest(rec, bank, 'perbank'))}`);
        return `${m.pcr}:${digests.join(',')}`;
      });
      await tpm.exclusive(() => tpm.tool('tpm2_pcrextend', args));
    }
  };
}
