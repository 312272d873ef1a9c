import { closeSync, openSync, readSync } from 'node:fs';
import { ImastreamError } from '../../lib/errors.ts';
import type { HashAlg } from '../../lib/hash.ts';
import { BinaryLogParser, encodeBinaryRecord } from '../../lib/ima/binary.ts';
import type { ByteOrder, ImaRecord, ParseProblem } from '../../lib/ima/record.ts';

/** Bytes read per system call; securityfs hands out a page or so per read anyway. */
const READ_BYTES = 256 * 1024;

/** A record read from the log, with its raw bytes (for the archive) and where it ends. */
export interface FollowedRecord {
  record: ImaRecord;
  /** The record's binary bytes exactly as in the log. */
  raw: Uint8Array;
  /** Byte offset in the log just after the record: the resume position once it is saved. */
  end: number;
}

export interface FollowerOptions {
  /** Bank of the template-digest field: sha1 for the legacy file, else the `_<alg>` file's. */
  digestAlg: HashAlg;
  /** Known byte order (from the archive of this boot), or auto-detected from the first record. */
  byteOrder?: ByteOrder;
}

/**
 * Follows a binary IMA log (securityfs or a file) from a byte offset that is a record boundary.
 * Each poll reads whatever the log has grown by and returns the whole records in it; a record cut
 * short by the end of the log waits for the next poll. A framing problem (a log that cannot be
 * parsed past some offset) is fatal: skipping bytes would let the host choose what is replayed.
 *
 * The log is the host's claim, not evidence: records are passed on as read, never judged here.
 */
export class LogFollower {
  readonly path: string;
  private readonly parser: BinaryLogParser;
  private readonly startOffset: number;
  private readPos: number;
  private endOfRecords: number;
  private fd: number | undefined;

  constructor(path: string, startOffset: number, opts: FollowerOptions) {
    this.path = path;
    this.startOffset = startOffset;
    this.readPos = startOffset;
    this.endOfRecords = startOffset;
    this.parser = new BinaryLogParser({ digestAlg: opts.digestAlg, byteOrder: opts.byteOrder ?? 'auto' });
  }

  /** Offset just after the last whole record returned. */
  get offset(): number {
    return this.endOfRecords;
  }

  /** Byte order of the log, once the first record has been seen. */
  get byteOrder(): ByteOrder | undefined {
    return this.parser.byteOrder;
  }

  /** Reads what the log has grown by; `maxBytes` bounds one poll so a huge backlog streams. */
  poll(maxBytes = 4 * 1024 * 1024): FollowedRecord[] {
    const fd = this.open();
    const out: FollowedRecord[] = [];
    let budget = maxBytes;
    while (budget > 0) {
      const chunk = Buffer.allocUnsafe(Math.min(READ_BYTES, budget));
      const n = readSync(fd, chunk, 0, chunk.byteLength, this.readPos);
      if (n === 0) break;
      this.readPos += n;
      budget -= n;
      for (const record of this.parser.push(chunk.subarray(0, n))) out.push(this.followed(record));
      this.checkStopped();
    }

    return out;
  }

  /** Whether bytes of an unfinished record are waiting (a writer caught mid-record). */
  get pendingBytes(): number {
    return this.readPos - this.endOfRecords;
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }

  private followed(record: ImaRecord): FollowedRecord {
    // Re-encoding a parsed record gives back its exact bytes: the binary layout has one encoding
    // per record (no padding, no choices), so this is the log's own bytes, not a rebuild.
    const raw = encodeBinaryRecord(record, this.parser.byteOrder ?? 'le');
    const start = this.startOffset + record.offset;
    this.endOfRecords = start + raw.byteLength;

    return { record: { ...record, offset: start }, raw, end: this.endOfRecords };
  }

  private checkStopped(): void {
    if (!this.parser.hasStopped) return;
    const problem = this.parser.problems.at(-1) as ParseProblem;
    throw new ImastreamError(problem.code, `${this.path}: ${problem.message}`, {
      details: { offset: this.startOffset + problem.offset, path: this.path },
    });
  }

  private open(): number {
    if (this.fd === undefined) {
      try {
        this.fd = openSync(this.path, 'r');
      } catch (err) {
        throw new ImastreamError('IMS_AGENT_IO', `cannot open ${this.path}`, { cause: err, canRetry: true });
      }
    }

    return this.fd;
  }
}
