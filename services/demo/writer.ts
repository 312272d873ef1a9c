import { appendFileSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { toHex } from '../../lib/bytes/hex.ts';
import type { HashAlg } from '../../lib/hash.ts';
import { encodeBinaryRecord } from '../../lib/ima/encode.ts';
import type { ImaRecord } from '../../lib/ima/record.ts';
import { extendDigest } from '../../lib/ima/replay.ts';
import type { LogSource } from './logs.ts';
import type { Swtpm } from './swtpm.ts';

/** Banks swtpm 0.7 allocates by default (DOMAIN.md §5): every one is extended, as a kernel would. */
export const SWTPM_BANKS: readonly HashAlg[] = ['sha1', 'sha256', 'sha384', 'sha512'];

export interface WriterOptions {
  /** Records appended per step. */
  batch: number;
  /** Pause between steps, so the agent sees a growing log and quotes land mid-stream. */
  pauseMs: number;
}

/**
 * Plays the kernel's part for a simulated host: appends records to the binary log file and
 * extends the same records into the host's TPM, each bank with its own digest of the template
 * data (kernels ≥ 5.8), violations as 0xFF. The TPM starts at zero and gets exactly these
 * records, so an honest replay equals the TPM by construction. Like the kernel, a record is in
 * the log before it is in the PCR, so a quote may briefly lag what the agent has read.
 */
export class LogWriter {
  readonly path: string;
  private readonly tpm: Swtpm;
  private readonly source: LogSource;
  private next = 0;

  constructor(tpm: Swtpm, path: string, source: LogSource) {
    this.tpm = tpm;
    this.path = path;
    this.source = source;
    writeFileSync(path, new Uint8Array(0));
  }

  /** Records written so far. */
  get written(): number {
    return this.next;
  }

  get total(): number {
    return this.source.records.length;
  }

  /** Appends the next `n` records to the log, then extends them into the TPM in one tool call. */
  async writeNext(n: number): Promise<number> {
    const records = this.source.records.slice(this.next, this.next + n);
    if (records.length === 0) return 0;
    appendFileSync(this.path, Buffer.concat(records.map((r) => encodeBinaryRecord(r, 'le'))));
    // tpm2_pcrextend takes several PCR:bank=digest,... arguments; one TPM2_PCR_Extend each.
    await this.tpm.tool('tpm2_pcrextend', records.map(extendArg));
    this.next += records.length;

    return records.length;
  }

  /** Writes the whole log, `batch` records at a time. */
  async writeAll(opts: WriterOptions, stopped: () => boolean = () => false): Promise<void> {
    while (!stopped() && (await this.writeNext(opts.batch)) > 0) await sleep(opts.pauseMs);
  }
}

function extendArg(rec: ImaRecord): string {
  const digests = SWTPM_BANKS.map((bank) => `${bank}=${toHex(extendDigest(rec, bank, 'perbank'))}`);

  return `${rec.pcr}:${digests.join(',')}`;
}
