import { isAllZero } from '../bytes/hex.ts';
import type { ErrorCode } from '../errors.ts';

/**
 * One IMA measurement record as it sits in the log. Every area of imastream passes records in this
 * shape: the producer builds them from securityfs, the wire layer carries them, the replayer
 * extends PCRs with them.
 *
 * Nothing here is trusted: a record is a claim by the measured host until a verified quote covers
 * the PCR values its replay produces.
 */
export interface ImaRecord {
  /** PCR index the kernel extended (10 unless a policy rule says `pcr=`). */
  pcr: number;
  /** As logged: 20 bytes, or the bank's digest size in `_<alg>` files. All zeros = violation. */
  templateDigest: Uint8Array;
  /** As logged; a custom template's name is its format string, such as `d-ng|sig`. */
  templateName: string;
  /**
   * Raw bytes exactly as in the binary record; hashing always uses these, never a rebuild.
   * Legacy `ima`: filedigest[20] || u32 name_len || name (no NUL).
   */
  templateData: Uint8Array;
  /** Byte offset of the record's first byte in its stream (binary or ASCII). */
  offset: number;
}

/**
 * A violation (ToMToU, open-writers) is logged with an all-zero template digest while the kernel
 * extended the PCRs with 0xFF bytes; only the template digest decides, never the file digest.
 */
export function isViolation(r: Pick<ImaRecord, 'templateDigest'>): boolean {
  return isAllZero(r.templateDigest);
}

/** The name of the legacy template, whose data and digest rules differ from all others. */
export const LEGACY_IMA = 'ima';

/** Size of the legacy template's file digest (SHA-1; MD5 logs are not supported). */
export const LEGACY_DIGEST_SIZE = 20;

/** Longest file name the legacy template can carry (IMA_EVENT_NAME_LEN_MAX). */
export const LEGACY_NAME_MAX = 255;

/**
 * Something wrong with the input, found while parsing or checking. A problem that breaks the
 * record framing ends a binary parse there; others (a bad field, a digest mismatch) are reported
 * and the records still replay, because the kernel extended whatever bytes it logged.
 */
export interface ParseProblem {
  code: ErrorCode;
  message: string;
  /** Byte offset in the stream of the record (or line) concerned. */
  offset: number;
  /** 1-based line number, for ASCII logs. */
  line?: number;
}

/** Byte order of the integers in a binary log (DOMAIN.md §1.3). */
export type ByteOrder = 'le' | 'be';
