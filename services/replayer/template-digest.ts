import { bytesEqual, isAllZero } from '../../lib/bytes/hex.ts';
import { isImastreamError } from '../../lib/errors.ts';
import { hashAlgFromKernelName } from '../../lib/hash.ts';
import { templateDigestOf } from '../../lib/ima/replay.ts';
import type { LogRecord } from '../shared/records.ts';

/** Whether a record's logged digest matched its data, or why it was not checked. */
export type DigestCheck = 'match' | 'mismatch' | 'violation' | 'unsupported';

/**
 * Recomputes a record's template digest from its raw template data with the record's digestAlg and
 * compares it with the logged one (DOMAIN.md §1.7, §1.10 step 3). A violation (all-zero digest) has
 * nothing to recompute. A mismatch means the data is not what the kernel hashed: the record was
 * altered after measurement, or its data is malformed.
 */
export function checkTemplateDigest(rec: LogRecord): DigestCheck {
  if (isAllZero(rec.templateDigest)) return 'violation';
  const alg = hashAlgFromKernelName(rec.digestAlg);
  if (alg === undefined) return 'unsupported';
  try {
    return bytesEqual(templateDigestOf(rec, alg), rec.templateDigest) ? 'match' : 'mismatch';
  } catch (err) {
    if (isImastreamError(err)) return 'mismatch';
    throw err;
  }
}
