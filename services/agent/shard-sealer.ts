import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ImastreamError, isImastreamError } from '../../lib/errors.ts';
import { digestSize, type HashAlg } from '../../lib/hash.ts';
import { parseBinaryLog } from '../../lib/ima/binary.ts';
import type { PcrValues } from '../../lib/pcr.ts';
import { decodeShard } from '../../lib/shard/decode.ts';
import { encodeShard, SHARD_DIGEST_SIZE, storedShardDigest } from '../../lib/shard/format.ts';
import type { ClosingQuote, RecordFormat } from '../../lib/shard/types.ts';
import { MAX_SHARD_MESSAGE_BYTES } from '../shared/codec.ts';
import type { SealedShard as SealedShardRecord } from '../shared/records.ts';
import { MAX_RESEND_RECORDS } from './archive.ts';
import { writeFileAtomic } from './position.ts';
import type { TpmTools } from './tpm.ts';

/** File name of a sealed shard: `<startSeq>-<endSeq>.imsshard`. */
const SHARD_FILE = /^(\d{1,16})-(\d{1,16})\.imsshard$/;
/** Room for the SealedShard record's other fields and the Avro/framing overhead. */
const RECORD_ROOM = 16 * 1024;
/** Largest shard file put on ima.shards; a bigger one stays on the host (record without bytes). */
export const MAX_SHIPPED_SHARD_BYTES = MAX_SHARD_MESSAGE_BYTES - RECORD_ROOM;

/** The range [startSeq, endSeq) the next shard starts from, and what it chains to. */
interface ShardTip {
  endSeq: number;
  /** Quoted PCR values of the last shard (its end state); undefined before the first shard. */
  pcrs?: PcrValues;
  /** Trailing digest of the last shard file; all zeros before the first shard. */
  digest: Uint8Array;
}

export interface SealerOptions {
  stateDir: string;
  hostId: string;
  bootId: string;
  /** Bank of the template digests in the archived records (the agent's --digest-alg). */
  digestAlg: HashAlg;
  /** The agent's durable record archive of this boot (records by seq). */
  archive: { read(fromSeq: number, toSeq: number): Uint8Array[] };
  /** Sends one SealedShard record and resolves once the broker acknowledged it. */
  publish: (record: SealedShardRecord) => Promise<void>;
}

/** What a quote gives the sealer: the seq it covers and its closing evidence. */
export interface QuoteToSeal {
  quoteId: string;
  /** The quote covers records [0, seq) of the boot. */
  seq: number;
  quote: ClosingQuote;
}

/** One shard the sealer wrote. */
export interface SealedFile {
  path: string;
  startSeq: number;
  endSeq: number;
  bytes: number;
  shipped: boolean;
}

/**
 * Seals the agent's log into shards, one per quote that covers new records (DESIGN §4): records
 * [previous quote's seq, this quote's seq) raw from the archive, the previous closing quote's PCR
 * values as the start (zeros at seq 0), the quote as the closing evidence, and the previous file's
 * digest as the chain link. Files go to `<stateDir>/shards/<bootId>/<start>-<end>.imsshard`,
 * written atomically, then published on ima.shards.
 *
 * Trust: everything sealed here is what this agent read and quoted; nothing is verified on the
 * host. The shard archiver and `imastream verify-shard` verify it.
 *
 * Restarts: the tip (end seq, end PCRs, digest) is recovered from the newest file of the boot.
 * That file may have been written but never acknowledged by the broker (a crash in between), so
 * it is published again at {@link publishPending}; the archiver takes a shard it already holds as
 * a no-op. A quote taken but not sealed before a crash is simply folded into the next shard.
 */
export class ShardSealer {
  readonly dir: string;
  private readonly opts: SealerOptions;
  private tip: ShardTip;
  private format: RecordFormat | undefined;
  /** The newest file, if it is not known to have reached the broker. */
  private pending: string | undefined;

  private constructor(opts: SealerOptions, dir: string, tip: ShardTip, pending: string | undefined) {
    this.opts = opts;
    this.dir = dir;
    this.tip = tip;
    this.pending = pending;
  }

  /** Opens the shard folder of the boot and recovers where the last shard ended. */
  static open(opts: SealerOptions): ShardSealer {
    const dir = shardDir(opts.stateDir, opts.bootId);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const newest = listShardFiles(dir).at(-1);
    if (newest === undefined) {
      return new ShardSealer(opts, dir, { endSeq: 0, digest: new Uint8Array(SHARD_DIGEST_SIZE) }, undefined);
    }
    const path = join(dir, newest.name);
    const file = new Uint8Array(readFileSync(path));
    let shard: ReturnType<typeof decodeShard>;
    try {
      shard = decodeShard(file);
    } catch (err) {
      if (!isImastreamError(err)) throw err;
      // Files are renamed into place whole, so a bad one was damaged after it was written.
      throw new ImastreamError('IMS_AGENT_ARCHIVE_CORRUPT', `${path}: ${err.code}: ${err.message}`, {
        details: { where: path },
      });
    }
    if (shard.bootId !== opts.bootId || shard.endSeq !== newest.endSeq) {
      throw new ImastreamError(
        'IMS_AGENT_ARCHIVE_CORRUPT',
        `${path} is not shard ${newest.name} of this boot`,
        {
          details: { where: path },
        },
      );
    }
    const tip = { endSeq: shard.endSeq, pcrs: shard.closingQuote.pcrs, digest: storedShardDigest(file) };

    return new ShardSealer(opts, dir, tip, path);
  }

  /** Seq the next shard starts at. */
  get nextStartSeq(): number {
    return this.tip.endSeq;
  }

  /** Publishes the newest file again if a crash may have kept it from the broker. */
  async publishPending(): Promise<void> {
    const path = this.pending;
    if (path === undefined) return;
    const file = new Uint8Array(readFileSync(path));
    const shard = decodeShard(file);
    await this.publish(file, { ...shard, quoteId: quoteIdOf(shard.closingQuote) });
    this.pending = undefined;
  }

  /**
   * Seals the records the quote newly covers, writes the file, publishes it. Returns undefined
   * when the quote covers no record past the last shard (nothing to seal).
   */
  async seal(q: QuoteToSeal): Promise<SealedFile | undefined> {
    await this.publishPending();
    const startSeq = this.tip.endSeq;
    if (q.seq <= startSeq) return undefined;
    const records = this.readRecords(startSeq, q.seq);
    const file = encodeShard({
      hostId: this.opts.hostId,
      bootId: this.opts.bootId,
      startSeq,
      endSeq: q.seq,
      startPcrs: this.tip.pcrs ?? zerosLike(q.quote.pcrs),
      // The extend scheme is left for the verifier to find: the host does not vouch for it.
      scheme: null,
      recordFormat: this.recordFormat(records[0] as Uint8Array),
      records,
      closingQuote: q.quote,
      prevShardDigest: this.tip.digest,
    });
    const path = join(this.dir, `${startSeq}-${q.seq}.imsshard`);
    writeFileAtomic(path, file);
    this.tip = { endSeq: q.seq, pcrs: q.quote.pcrs, digest: storedShardDigest(file) };
    this.pending = path;
    const shipped = await this.publish(file, { startSeq, endSeq: q.seq, quoteId: q.quoteId });
    this.pending = undefined;

    return { path, startSeq, endSeq: q.seq, bytes: file.byteLength, shipped };
  }

  /** Sends the record; a file over the message limit goes without its bytes (returns false). */
  private async publish(
    file: Uint8Array,
    about: { startSeq: number; endSeq: number; quoteId: string },
  ): Promise<boolean> {
    const shipped = file.byteLength <= MAX_SHIPPED_SHARD_BYTES;
    await this.opts.publish({
      hostId: this.opts.hostId,
      bootId: this.opts.bootId,
      startSeq: about.startSeq,
      endSeq: about.endSeq,
      quoteId: about.quoteId,
      digest: Buffer.from(storedShardDigest(file)),
      size: file.byteLength,
      shard: shipped ? Buffer.from(file.buffer, file.byteOffset, file.byteLength) : null,
      at: Date.now(),
    });

    return shipped;
  }

  /** The archive holds the log's own bytes: their byte order is sniffed once, as on the log. */
  private recordFormat(first: Uint8Array): RecordFormat {
    if (this.format === undefined) {
      const { byteOrder } = parseBinaryLog(first, { digestAlg: this.opts.digestAlg });
      if (byteOrder === undefined) {
        throw new ImastreamError('IMS_AGENT_ARCHIVE_CORRUPT', 'an archived record does not parse', {
          details: { digestAlg: this.opts.digestAlg },
        });
      }
      this.format = { digestAlg: this.opts.digestAlg, byteOrder };
    }

    return this.format;
  }

  /** Raw records [from, to) from the archive, which serves at most MAX_RESEND_RECORDS a read. */
  private readRecords(from: number, to: number): Uint8Array[] {
    const out: Uint8Array[] = [];
    while (from + out.length < to) {
      const chunk = this.opts.archive.read(
        from + out.length,
        Math.min(to, from + out.length + MAX_RESEND_RECORDS),
      );
      if (chunk.length === 0) break;
      out.push(...chunk);
    }
    if (out.length !== to - from) {
      throw new ImastreamError(
        'IMS_AGENT_ARCHIVE_CORRUPT',
        `archive holds ${out.length} of records [${from}, ${to}) to seal`,
        { details: { from, to } },
      );
    }

    return out;
  }
}

/** Folder of one boot's sealed shards; the boot id is made safe as a file name. */
export function shardDir(stateDir: string, bootId: string): string {
  return join(stateDir, 'shards', encodeURIComponent(bootId));
}

/** The `<start>-<end>.imsshard` files of a folder, in chain order (by endSeq). */
export function listShardFiles(dir: string): { name: string; startSeq: number; endSeq: number }[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const out: { name: string; startSeq: number; endSeq: number }[] = [];
  for (const name of names) {
    const m = SHARD_FILE.exec(name);
    if (m !== null) out.push({ name, startSeq: Number(m[1]), endSeq: Number(m[2]) });
  }

  return out.sort((a, b) => a.endSeq - b.endSeq || a.startSeq - b.startSeq);
}

/**
 * The start state of a boot: zeros for every quoted PCR outside the firmware range (0–9 hold
 * firmware measurements, not IMA's; a start state never carries them, docs/shards.md).
 */
function zerosLike(quoted: PcrValues): PcrValues {
  const out: PcrValues = new Map();
  for (const [bank, pcrs] of quoted) {
    const zeros = new Map<number, Uint8Array>();
    for (const index of pcrs.keys()) if (index >= 10) zeros.set(index, new Uint8Array(digestSize(bank)));
    if (zeros.size > 0) out.set(bank, zeros);
  }

  return out;
}

/** A quoteId for a shard re-published after a restart: the closing quote's nonce, in hex. */
function quoteIdOf(quote: ClosingQuote): string {
  return `recovered-${Buffer.from(quote.nonce).toString('hex')}`;
}

/** TPM2B_PUBLIC of the AK at `akHandle`, as the TPM reports it (goes into every closing quote). */
export async function readAkPublic(tpm: TpmTools, akHandle: string): Promise<Uint8Array> {
  return tpm.exclusive(async () => {
    await tpm.tool('tpm2_readpublic', ['-c', akHandle, '-o', tpm.file('ak.shard.pub')]);
    return tpm.readOut('ak.shard.pub');
  });
}
