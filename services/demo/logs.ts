import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ImastreamError } from '../../lib/errors.ts';
import type { HashAlg } from '../../lib/hash.ts';
import { parseLog } from '../../lib/ima/parse.ts';
import type { ImaRecord } from '../../lib/ima/record.ts';
import { generateLog } from '../../lib/ima/synthetic.ts';

/** The shared corpus of real third-party logs: read in place, never copied into the repo. */
export const CORPUS_DIR = fileURLToPath(new URL('../../../shared/corpus/', import.meta.url));

/** Longest log one simulated host replays, so the demo stays quick. */
export const DEFAULT_CAP = 3000;

/** A log a simulated host plays back: real records, in the order the kernel logged them. */
export interface LogSource {
  name: string;
  records: ImaRecord[];
  /** Bank of the template-digest field; the host's log file is written the same way. */
  digestAlg: HashAlg;
}

/** Corpus logs the demo fleet uses by default, with the bank of their template digests. */
export const CORPUS_LOGS: readonly { path: string; digestAlg: HashAlg }[] = [
  { path: 'kunpengsecl/ascii_runtime_measurements_ima-ng_sha256_orig', digestAlg: 'sha1' },
  { path: 'keylime/ascii_runtime_measurements_ima', digestAlg: 'sha1' },
  { path: 'rust-keylime/ascii_runtime_measurements', digestAlg: 'sha1' },
  { path: 'ibmtss/imatest.log', digestAlg: 'sha1' },
  { path: 'kunpengsecl/ascii_runtime_measurements_ima-ng_sha1_orig', digestAlg: 'sha1' },
  { path: 'global-trust-authority/ima.bin', digestAlg: 'sha256' },
  { path: 'tpm2-tss/sml-ima-sig-sha256.bin', digestAlg: 'sha1' },
  { path: 'kunpengsecl/ascii_runtime_measurements_orig', digestAlg: 'sha1' },
];

/**
 * Reads a binary or ASCII log (ASCII lines are rebuilt into binary template data by the parser)
 * and keeps at most `cap` records. Trailing junk after the last whole record (several corpus
 * files have a stray byte) is dropped with the records before it kept, as a kernel list would
 * have them; a log with no record at all is an error.
 */
export function loadLog(path: string, digestAlg?: HashAlg, cap = DEFAULT_CAP): LogSource {
  const bytes = new Uint8Array(readFileSync(path));
  const tries: HashAlg[] = digestAlg !== undefined ? [digestAlg] : ['sha1', 'sha256'];
  for (const alg of tries) {
    const { records, problems } = parseLog(bytes, { format: 'auto', digestAlg: alg });
    const framing = problems.some(
      (p) => p.code !== 'IMS_IMA_TRUNCATED' && p.code !== 'IMS_IMA_UNKNOWN_TEMPLATE',
    );
    if (records.length > 0 && (!framing || tries.length === 1)) {
      return { name: path.replace(CORPUS_DIR, ''), records: copyAll(records.slice(0, cap)), digestAlg: alg };
    }
  }
  throw new ImastreamError('IMS_IMA_UNKNOWN_FORMAT', `${path}: no IMA records`);
}

/** A corpus log by its path inside the corpus. */
export function corpusLog(path: string, digestAlg: HashAlg, cap = DEFAULT_CAP): LogSource {
  return loadLog(`${CORPUS_DIR}${path}`, digestAlg, cap);
}

/** A synthetic log (for when no real log fits), deterministic from its seed. */
export function syntheticLog(records: number, seed: number, violations: number[] = []): LogSource {
  const log = generateLog({ records, seed, violations });

  return { name: `synthetic:${records}:${seed}`, records: copyAll(log.records), digestAlg: 'sha1' };
}

/** Records detached from the parse buffer, so a long-lived host does not pin the whole file. */
function copyAll(records: ImaRecord[]): ImaRecord[] {
  return records.map((r) => ({
    ...r,
    templateDigest: r.templateDigest.slice(),
    templateData: r.templateData.slice(),
  }));
}
