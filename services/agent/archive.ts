import {
  closeSync,
  fstatSync,
  fsyncSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { ImastreamError } from '../../lib/errors.ts';
import { type HashAlg, isHashAlg } from '../../lib/hash.ts';
import { fsyncDir, writeFileAtomic } from './position.ts';

/** One index entry: u64le offset of the record in records.bin, u32le length. */
const ENTRY_SIZE = 12;
/** Most records one resend may read back, so a hostile request cannot exhaust memory. */
export const MAX_RESEND_RECORDS = 100_000;

/**
 * How the archived bytes are to be parsed again (they are the log's own bytes; the byte order is
 * sniffed from the first record, as on the log itself).
 */
export interface ArchiveMeta {
  bootId: string;
  /** Bank of the template digests in the records (`sha1` for the legacy log file). */
  digestAlg: HashAlg;
}

/**
 * The agent's durable, append-only copy of every record of one boot, in the log's own binary
 * bytes, with an index by seq. Record i of the boot is entry i. Records are appended as they are
 * read and fsync'd before the agent saves a position past them, so any range the pipeline asks
 * for (ResendRequest) can be served even after the kernel has trimmed its list.
 *
 * Layout of `dir`: `meta.json`, `records.bin` (records back to back), `index.bin` (entries).
 */
export class RecordArchive {
  readonly dir: string;
  readonly meta: ArchiveMeta;
  private readonly dataFd: number;
  private readonly indexFd: number;
  private dataSize: number;
  private entries: number;
  private dirty = false;

  private constructor(dir: string, meta: ArchiveMeta, dataFd: number, indexFd: number) {
    this.dir = dir;
    this.meta = meta;
    this.dataFd = dataFd;
    this.indexFd = indexFd;
    this.dataSize = fstatSync(dataFd).size;
    this.entries = Math.floor(fstatSync(indexFd).size / ENTRY_SIZE);
  }

  /**
   * Opens (or creates) the archive of one boot and cuts it back to `keep` records: entries past
   * the saved position were read but never confirmed, and will be read from the log again.
   */
  static open(dir: string, meta: ArchiveMeta, keep: number): RecordArchive {
    mkdirSync(dir, { recursive: true });
    const metaFile = join(dir, 'meta.json');
    const stored = readMeta(metaFile);
    if (stored === undefined) writeFileAtomic(metaFile, `${JSON.stringify(meta)}\n`);
    else if (stored.bootId !== meta.bootId) {
      throw archiveCorrupt(dir, `archive belongs to boot ${stored.bootId}, not ${meta.bootId}`);
    }
    const dataFd = openSync(join(dir, 'records.bin'), 'a+');
    const indexFd = openSync(join(dir, 'index.bin'), 'a+');
    fsyncDir(dir);
    const archive = new RecordArchive(dir, stored ?? meta, dataFd, indexFd);
    archive.truncate(keep);

    return archive;
  }

  /** Records in the archive (= seq of the next record to append). */
  get count(): number {
    return this.entries;
  }

  /** Appends records in seq order; durable only after {@link sync}. */
  append(records: readonly Uint8Array[]): void {
    if (records.length === 0) return;
    const index = Buffer.alloc(records.length * ENTRY_SIZE);
    let offset = this.dataSize;
    records.forEach((raw, i) => {
      index.writeBigUInt64LE(BigInt(offset), i * ENTRY_SIZE);
      index.writeUInt32LE(raw.byteLength, i * ENTRY_SIZE + 8);
      offset += raw.byteLength;
    });
    writeSync(this.dataFd, Buffer.concat(records));
    writeSync(this.indexFd, index);
    this.dataSize = offset;
    this.entries += records.length;
    this.dirty = true;
  }

  /** Bytes of the records from `seq` to the end (what a shard starting there would hold raw). */
  bytesFrom(seq: number): number {
    if (seq >= this.entries) return 0;
    if (seq <= 0) return this.dataSize;
    const entry = Buffer.alloc(ENTRY_SIZE);
    readSync(this.indexFd, entry, 0, ENTRY_SIZE, seq * ENTRY_SIZE);

    return this.dataSize - Number(entry.readBigUInt64LE(0));
  }

  /** Makes every appended record durable: data first, so an index entry never outlives its bytes. */
  sync(): void {
    if (!this.dirty) return;
    fsyncSync(this.dataFd);
    fsyncSync(this.indexFd);
    this.dirty = false;
  }

  /** Raw bytes of records [fromSeq, toSeq), clamped to what the archive holds. */
  read(fromSeq: number, toSeq: number): Uint8Array[] {
    const from = Math.max(0, fromSeq);
    const to = Math.min(this.entries, toSeq, from + MAX_RESEND_RECORDS);
    if (to <= from) return [];
    const index = Buffer.alloc((to - from) * ENTRY_SIZE);
    readSync(this.indexFd, index, 0, index.byteLength, from * ENTRY_SIZE);
    const out: Uint8Array[] = [];
    for (let i = 0; i < to - from; i++) {
      const offset = Number(index.readBigUInt64LE(i * ENTRY_SIZE));
      const length = index.readUInt32LE(i * ENTRY_SIZE + 8);
      const raw = Buffer.alloc(length);
      readSync(this.dataFd, raw, 0, length, offset);
      out.push(new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength));
    }

    return out;
  }

  close(): void {
    this.sync();
    closeSync(this.dataFd);
    closeSync(this.indexFd);
  }

  /** Drops a torn tail (an index entry whose bytes are missing) and every record past `keep`. */
  private truncate(keep: number): void {
    let entries = this.entries;
    while (entries > 0 && this.entryEnd(entries - 1) > this.dataSize) entries--;
    if (entries < keep) {
      throw archiveCorrupt(this.dir, `archive holds ${entries} records, the saved position needs ${keep}`);
    }
    const dataEnd = keep === 0 ? 0 : this.entryEnd(keep - 1);
    ftruncateSync(this.indexFd, keep * ENTRY_SIZE);
    ftruncateSync(this.dataFd, dataEnd);
    fsyncSync(this.indexFd);
    fsyncSync(this.dataFd);
    this.entries = keep;
    this.dataSize = dataEnd;
  }

  private entryEnd(i: number): number {
    const entry = Buffer.alloc(ENTRY_SIZE);
    readSync(this.indexFd, entry, 0, ENTRY_SIZE, i * ENTRY_SIZE);

    return Number(entry.readBigUInt64LE(0)) + entry.readUInt32LE(8);
  }
}

/** Directory of one boot's archive; the boot id is made safe as a file name. */
export function archiveDir(stateDir: string, bootId: string): string {
  return join(stateDir, 'archive', encodeURIComponent(bootId));
}

function readMeta(file: string): ArchiveMeta | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const meta = JSON.parse(text) as ArchiveMeta;
  if (typeof meta.bootId !== 'string' || !isHashAlg(meta.digestAlg)) {
    throw archiveCorrupt(file, 'meta.json is malformed');
  }

  return meta;
}

function archiveCorrupt(where: string, why: string): ImastreamError {
  return new ImastreamError('IMS_AGENT_ARCHIVE_CORRUPT', `${where}: ${why}`, { details: { where } });
}
