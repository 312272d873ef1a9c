import { randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { bytesEqual } from '../../lib/bytes/hex.ts';
import { ImastreamError, isImastreamError } from '../../lib/errors.ts';
import { parseBinaryLog } from '../../lib/ima/binary.ts';
import type { ByteOrder, ImaRecord } from '../../lib/ima/record.ts';
import { parseAttest } from '../../lib/tpm/attest.ts';
import type { Challenge, LogRecord, ResendRequest } from '../shared/records.ts';
import { archiveDir, RecordArchive } from './archive.ts';
import type { AgentConfig } from './config.ts';
import { crashPoint } from './crash.ts';
import { type CutHost, LogCutter } from './cut.ts';
import { enrolAk } from './enrol.ts';
import { type AgentKernelLog, type ListRecord, openKernelLog, readList } from './kernel-source.ts';
import { type AgentPosition, bootIdOf, bootStart, loadPosition, savePosition } from './position.ts';
import { AgentKafka, DEFAULT_TOPICS, type Measurement } from './producer.ts';
import { type PlacedQuote, quoteAndPlace, toPcrValues } from './quoter.ts';
import { BankTracker, SeqMatcher } from './seq-match.ts';
import { readAkPublic, ShardSealer } from './shard-sealer.ts';
import { type TpmTools, takeQuote } from './tpm.ts';

/** Quotes tried at a cut before giving up (the TPM lagging the list), and the pause between. */
const CUT_QUOTE_TRIES = 20;
const CUT_QUOTE_PAUSE_MS = 250;

/**
 * The host agent: reads the kernel's binary IMA list through a KernelLog (securityfs, the 7.2
 * emulator, or a plain file), stamps each record with (hostId, bootId, seq), archives it durably,
 * produces it, quotes the TPM on a timer and on request, and cuts the kernel's list (cut.ts).
 *
 * Delivery guarantee: every record once, in order. A record is archived (fsync'd) and
 * acknowledged by the broker before the position past it is saved; after a crash in between,
 * the broker's tail of the host's partition says which records it already holds, and those are
 * archived again but not produced (broker-tail.ts). The replayer is idempotent by
 * (hostId, bootId, seq) anyway. Nothing read is ever lost or renumbered.
 *
 * Every step that touches the log, the archive, the position or the TPM runs under one lock, so
 * a QuoteTaken is produced only after every LogRecord before its seq has been acknowledged.
 */
export class Agent {
  private readonly config: AgentConfig;
  private readonly log: Logger;
  private readonly kafka: AgentKafka;
  private readonly tpm: TpmTools;
  private lock: Promise<unknown> = Promise.resolve();
  private pos!: AgentPosition;
  private archive!: RecordArchive;
  private kernel!: AgentKernelLog;
  private cutter!: LogCutter;
  /** Byte order of the list, once its first record was read. */
  private byteOrder: ByteOrder | undefined;
  /** Records the broker already holds past the saved position (a crash after the ack): not sent again. */
  private acked = new Map<number, LogRecord>();
  /** SnapshotEvents the broker already holds for this chain: seq → quoteId. */
  private snapshotsSent = new Map<number, string | null>();
  /** Set while a cut runs, for the cut's crash points. */
  private cutting = false;
  /** Where the current virtual shard began (seq) and when. */
  private shardFrom = { seq: 0, at: Date.now() };
  private matcher!: SeqMatcher;
  private sealer!: ShardSealer;
  private akPublic: Uint8Array | undefined;
  private akName!: Uint8Array;
  private timers: NodeJS.Timeout[] = [];
  private stopping = false;
  private failure: unknown;
  /** Resolves when the agent stops, with the reason if it failed. */
  readonly done: Promise<unknown>;
  private finish!: (reason: unknown) => void;

  constructor(config: AgentConfig, log: Logger, tpm: TpmTools) {
    this.config = config;
    this.log = log;
    this.tpm = tpm;
    const topics = { ...DEFAULT_TOPICS, measurements: config.measurementsTopic, shards: config.shardsTopic };
    this.kafka = new AgentKafka(config.brokers, config.hostId, topics, log);
    this.done = new Promise((resolve) => {
      this.finish = resolve;
    });
  }

  /** Loads or creates the AK, finds the boot, resumes from the saved position, starts the loops. */
  async start(): Promise<void> {
    await this.kafka.connect();
    await this.enrol();
    const resetCount = await this.probeResetCount();
    this.kernel = await openKernelLog(this.config.kernel, this.config.digestAlg);
    await this.resume(resetCount);
    if (!this.pos.bootAnnounced) await this.announceBoot();
    this.cutter = new LogCutter(this.cutHost(), this.config.cut);
    if (this.kernel.canCut) await this.serial(() => this.cutter.recover());
    this.shardFrom = { seq: this.pos.nextSeq, at: Date.now() };
    await this.sealer.publishPending();
    await this.kafka.listen({
      onChallenge: (c) => void this.serial(() => this.answerChallenge(c)).catch((err) => this.fail(err)),
      onResend: (r) => void this.serial(() => this.resend(r)).catch((err) => this.fail(err)),
      onCut: (r) => void this.serial(() => this.cutOnRequest(r.requestId)).catch((err) => this.fail(err)),
    });
    this.every(this.config.pollMs, () => this.tick());
    this.every(this.config.quoteIntervalMs, () => this.periodicQuote());
    this.log.info(
      { bootId: this.pos.bootId, nextSeq: this.pos.nextSeq, logOffset: this.pos.logOffset },
      'agent ready',
    );
  }

  /** Stops the loops, sends what has been read, saves the position, closes everything. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    for (const t of this.timers) clearInterval(t);
    try {
      if (this.failure === undefined && this.kernel !== undefined) await this.serial(() => this.step());
    } finally {
      await this.lock.catch(() => undefined);
      await this.kernel?.close().catch(() => undefined);
      this.archive?.close();
      await this.kafka.close().catch(() => undefined);
      this.log.info({ nextSeq: this.pos?.nextSeq, logOffset: this.pos?.logOffset }, 'agent stopped');
      this.finish(this.failure);
    }
  }

  private every(ms: number, fn: () => Promise<void>): void {
    let busy = false;
    const tick = () => {
      if (busy || this.stopping) return;
      busy = true;
      this.serial(fn)
        .catch((err) => this.fail(err))
        .finally(() => {
          busy = false;
        });
    };
    this.timers.push(setInterval(tick, ms));
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.lock.then(fn, fn);
    this.lock = next.catch(() => undefined);

    return next;
  }

  private fail(err: unknown): void {
    if (this.stopping) return;
    this.failure = err;
    this.log.error({ err }, 'agent failed');
    void this.stop();
  }

  /** Creates the AK under the EK on first start and enrols it through the enroller (./enrol.ts). */
  private async enrol(): Promise<void> {
    // The enroller alone writes ima.enrollments; the agent proves its AK through the protocol.
    const enrolled = await enrolAk({
      brokers: this.config.brokers,
      hostId: this.config.hostId,
      tpm: this.tpm,
      akHandle: this.config.akHandle,
      akAlg: this.config.akAlg,
      stateDir: this.config.stateDir,
      log: this.log,
    });
    this.akName = enrolled.akName;
  }

  /** The TPM's resetCount, from a quote's clockInfo (real values: the AK is under the EK). */
  private async probeResetCount(): Promise<number> {
    const raw = await takeQuote(this.tpm, {
      akHandle: this.config.akHandle,
      akAlg: this.config.akAlg,
      selection: this.config.selection,
      nonce: randomBytes(16),
      hashAlg: 'sha256',
    });

    return parseAttest(raw.attest).clockInfo.resetCount;
  }

  /**
   * Resumes the saved position of this boot, continues the same replay after a kexec (the host
   * boot id changed, the TPM's resetCount did not), or starts a new boot from zeros. Then learns
   * from the broker's tail what was acknowledged after the saved position.
   */
  private async resume(resetCount: number): Promise<void> {
    const bootId = bootIdOf(this.config.hostBootId, resetCount);
    const saved = loadPosition(this.config.stateDir);
    if (saved !== undefined && saved.bootId === bootId) {
      this.pos = saved;
      this.checkFileLength(saved.logOffset);
    } else if (saved !== undefined && saved.resetCount === resetCount && this.kernel.canCut) {
      // kexec: the PCRs kept every extend, so the replay goes on under the new boot name.
      this.log.info({ previous: saved.bootId, bootId }, 'kexec: same TPM boot, new kernel');
      this.pos = this.kexecPosition(saved);
    } else {
      if (saved !== undefined) this.log.info({ previous: saved.bootId, bootId }, 'new boot');
      this.pos = bootStart(this.config.hostBootId, resetCount);
      savePosition(this.config.stateDir, this.pos);
    }
    const archiveBootId = this.pos.archiveBootId;
    const dir = archiveDir(this.config.stateDir, archiveBootId);
    this.archive = RecordArchive.open(
      dir,
      { bootId: archiveBootId, digestAlg: this.config.digestAlg },
      this.pos.nextSeq,
    );
    if (saved !== undefined && this.pos.resetCount === saved.resetCount) await this.learnBrokerTail();
    this.matcher = this.rebuildMatcher();
    this.sealer = ShardSealer.open({
      stateDir: this.config.stateDir,
      hostId: this.config.hostId,
      bootId,
      digestAlg: this.config.digestAlg,
      archive: this.archive,
      publish: (record) => this.kafka.sealedShard(record),
    });
  }

  /** A plain file that shrank under the same boot would make the saved offset meaningless. */
  private checkFileLength(offset: number): void {
    if (this.config.kernel.kind !== 'file') return;
    const size = statSync(this.config.kernel.path).size;
    if (size < offset && size > 0) {
      throw new ImastreamError(
        'IMS_AGENT_LOG_SHRANK',
        `${this.config.kernel.path} is shorter than offset ${offset}`,
      );
    }
  }

  /**
   * The position after a kexec: new boot name, same seqs and archive. The new kernel's list holds
   * the carried-over records (staged ones first) from `listBase` on, then its own boot_aggregate;
   * it is read again from offset 0, and records below `nextSeq` are checked against the archive
   * instead of being sent twice. A staged cut cannot finish (D is gone with the old kernel): its
   * journal is dropped and the records are cut again later. A delete-N journal stays: whether N
   * was applied is decided by comparing the list with the archive (cut.ts).
   */
  private kexecPosition(saved: AgentPosition): AgentPosition {
    const cut = saved.cut?.flavour === 'delete' && saved.cut.phase === 'quoted' ? saved.cut : null;
    const pos: AgentPosition = {
      ...saved,
      bootId: bootIdOf(this.config.hostBootId, saved.resetCount),
      hostBootId: this.config.hostBootId,
      bootAnnounced: false,
      cursor: 'current',
      logOffset: 0,
      cursorSeq: saved.listBase,
      cut,
      updatedAt: Date.now(),
    };
    if (saved.cut?.flavour === 'stage' && saved.cut.phase === 'quoted') {
      // D may or may not have run before the kexec: both list heads are possible (cut.ts decides).
      pos.cut = { ...saved.cut, flavour: 'delete', n: 0, cutBytes: 0 };
    }
    savePosition(this.config.stateDir, pos);

    return pos;
  }

  /**
   * Reads the host's partition tail: records acknowledged after the saved position are archived
   * again from the kernel but not sent; a BootEvent or SnapshotEvent already there is not sent
   * again either. Only records of this TPM boot (same resetCount) are considered.
   */
  private async learnBrokerTail(): Promise<void> {
    const suffix = `:${this.pos.resetCount}`;
    const tail = await this.kafka.tail((bootId) => bootId.endsWith(suffix), this.pos.nextSeq);
    this.acked = tail.records;
    this.snapshotsSent = tail.snapshots;
    if (!this.pos.bootAnnounced && tail.boots.has(this.pos.bootId)) {
      this.pos = { ...this.pos, bootAnnounced: true, updatedAt: Date.now() };
      savePosition(this.config.stateDir, this.pos);
    }
    if (tail.records.size > 0 || tail.snapshots.size > 0)
      this.log.info(
        { nextSeq: this.pos.nextSeq, brokerLastSeq: tail.lastSeq, snapshots: [...tail.snapshots.keys()] },
        'broker already holds records past the saved position: they are not sent again',
      );
  }

  /** Replays the archived records of this boot, so quotes after a restart are placed too. */
  private rebuildMatcher(): SeqMatcher {
    const banks = this.config.selection.flatMap((s) => (typeof s.bank === 'number' ? [] : [s.bank]));
    const tracker = new BankTracker(banks, this.config.scheme);
    const archived = this.archive.read(0, this.pos.nextSeq);
    const { records } = parseBinaryLog(concatBytes(archived), { digestAlg: this.config.digestAlg });
    if (records.length !== this.pos.nextSeq) {
      throw new ImastreamError('IMS_AGENT_ARCHIVE_CORRUPT', `archive parses to ${records.length} records`);
    }
    for (const r of records) tracker.extend(r);

    return new SeqMatcher(tracker, this.config.selection, 'sha256', records.length);
  }

  private async announceBoot(): Promise<void> {
    const { hostId } = this.config;
    const { bootId, hostBootId, resetCount } = this.pos;
    const value = {
      hostId,
      bootId,
      hostBootId,
      resetCount,
      // After a kexec the replay continues: the new boot's first record is the next seq.
      firstSeq: this.pos.archiveBootId === bootId ? 0 : this.pos.nextSeq,
      kind: this.pos.archiveBootId === bootId ? ('COLD' as const) : ('KEXEC' as const),
      at: Date.now(),
    };
    await this.kafka.measurements([{ name: 'BootEvent', value }]);
    this.pos = { ...this.pos, bootAnnounced: true, updatedAt: Date.now() };
    savePosition(this.config.stateDir, this.pos);
    this.log.info({ bootId, resetCount }, 'boot announced');
  }

  /** One poll: a cut when one is due, else read what the list has grown by; then virtual shards. */
  private async tick(): Promise<void> {
    if (this.kernel.canCut && this.config.cut !== 'none' && (await this.cutDue())) await this.runCut();
    else await this.step();
    await this.virtualShard();
    await this.boundShard();
  }

  /**
   * A quote once the records since the last sealed shard reach --shard-max-bytes, so a host that
   * logs fast between its periodic quotes still seals shards that fit on ima.shards. It bounds the
   * steady state only: a quote covers what the TPM holds, so a backlog read in one go is sealed
   * whole by this quote (and a shard over the message limit stays on the host).
   */
  private async boundShard(): Promise<void> {
    if (this.archive.bytesFrom(this.sealer.nextStartSeq) < this.config.shardMaxBytes) return;
    const epoch = this.kafka.currentNonce();
    // Without a fleet nonce yet, a fresh random one: the quote still closes the shard offline.
    await this.quote(epoch?.nonce ?? randomBytes(20), epoch?.epoch ?? null, `size-${randomUUID()}`);
  }

  /** A CutRequest: a cut of the configured flavour now, or a virtual shard when the kernel cannot cut. */
  private async cutOnRequest(requestId: string): Promise<void> {
    this.log.info({ requestId }, 'cut requested');
    if (!this.kernel.canCut || this.config.cut === 'none') {
      await this.step();
      await this.virtualShard(true);
      return;
    }
    await this.runCut();
  }

  /** One cut; a refusal worth retrying (EBUSY: another process has the file) waits for the next poll. */
  private async runCut(): Promise<void> {
    this.cutting = true;
    try {
      await this.cutter.cut();
    } catch (err) {
      // The journal says where the cut stands; the next try continues from there.
      if (!(isImastreamError(err) && err.code === 'IMS_AGENT_CUT_FAILED' && err.canRetry)) throw err;
      this.log.warn({ err: err.message }, 'cut refused for now, retried at the next poll');
    } finally {
      this.cutting = false;
    }
  }

  /** Whether the kernel holds enough records (runtime_measurements_count) or bytes to cut. */
  private async cutDue(): Promise<boolean> {
    const { cutRecords, cutBytes } = this.config;
    if (cutRecords > 0 && (await this.kernel.count()) >= cutRecords) return true;
    return cutBytes > 0 && this.pos.cursor === 'current' && this.pos.logOffset >= cutBytes;
  }

  /**
   * Reads the cursor's list from its offset; archives, produces and saves batch by batch. At the
   * end of a staged list the cursor moves to the new current list (its seqs follow the staged
   * ones). Records below `nextSeq` (re-read after a kexec) are checked against the archive only.
   * With `limit`, at most that many new records are sent (a quote being placed reads a few at a
   * time: quoter.ts); the rest stay in the kernel's list for the next read. Returns how many were sent.
   */
  private async step(limit = Number.POSITIVE_INFINITY): Promise<number> {
    let sent = 0;
    for (;;) {
      const { cursor, logOffset } = this.pos;
      const read = await readList(this.kernel, cursor, logOffset, this.config.digestAlg, this.byteOrder);
      this.byteOrder ??= read.byteOrder;
      if (read.records.length === 0) {
        if (cursor !== 'staged') return sent;
        const cut = this.pos.cut === null ? null : { ...this.pos.cut, cutSeq: this.pos.cursorSeq };
        this.savePos({ cursor: 'current', logOffset: 0, cut });
        continue;
      }
      const fresh = this.skipKnown(read.records).slice(0, limit - sent);
      for (let i = 0; i < fresh.length; i += this.config.batchSize) {
        await this.ship(fresh.slice(i, i + this.config.batchSize));
      }
      sent += fresh.length;
      if (sent >= limit) return sent;
    }
  }

  /** Passes over records already archived (after a kexec), checking they are the archived ones. */
  private skipKnown(records: ListRecord[]): ListRecord[] {
    const known = Math.min(records.length, this.pos.nextSeq - this.pos.cursorSeq);
    if (known <= 0) return records;
    const archived = this.archive.read(this.pos.cursorSeq, this.pos.cursorSeq + known);
    records.slice(0, known).forEach((r, i) => {
      if (archived[i] === undefined || !bytesEqual(archived[i], r.raw)) {
        throw new ImastreamError(
          'IMS_AGENT_KERNEL_STATE',
          `the kernel's record at seq ${this.pos.cursorSeq + i} is not the archived one`,
          { details: { seq: this.pos.cursorSeq + i } },
        );
      }
    });
    const last = records[known - 1] as ListRecord;
    this.savePos({ cursorSeq: this.pos.cursorSeq + known, logOffset: last.end });

    return records.slice(known);
  }

  private savePos(change: Partial<AgentPosition>): void {
    this.pos = { ...this.pos, ...change, updatedAt: Date.now() };
    savePosition(this.config.stateDir, this.pos);
  }

  private async ship(batch: ListRecord[]): Promise<void> {
    this.archive.append(batch.map((f) => f.raw));
    this.archive.sync();
    if (this.cutting) crashPoint('cut-archived');
    const first = this.pos.nextSeq;
    const values = batch.map(
      (f, i): Measurement => ({ name: 'LogRecord', value: this.logRecord(f, first + i) }),
    );
    for (const f of batch) this.matcher.add(f.record);
    await this.kafka.measurements(values.filter((m) => !this.alreadyAcked(m.value as LogRecord)));
    if (this.cutting) crashPoint('cut-produced');
    const last = batch.at(-1) as ListRecord;
    const nextSeq = first + batch.length;
    this.savePos({ nextSeq, cursorSeq: nextSeq, logOffset: last.end });
    this.log.debug({ from: first, count: batch.length }, 'records sent');
  }

  /**
   * Whether the broker already holds this record (acknowledged before a crash, position not
   * saved). The broker's copy must be the same record, else the host's list changed under the
   * agent: that is fatal, not something to paper over.
   */
  private alreadyAcked(rec: LogRecord): boolean {
    const held = this.acked.get(rec.seq);
    if (held === undefined) return false;
    this.acked.delete(rec.seq);
    const same =
      held.pcr === rec.pcr &&
      held.templateName === rec.templateName &&
      bytesEqual(held.templateData, rec.templateData) &&
      bytesEqual(held.templateDigest, rec.templateDigest);
    if (!same) {
      throw new ImastreamError(
        'IMS_AGENT_BROKER_DIVERGED',
        `the broker's seq ${rec.seq} differs from the list's`,
        {
          details: { seq: rec.seq },
        },
      );
    }

    return true;
  }

  private logRecord(f: { record: ImaRecord }, seq: number): LogRecord {
    return {
      hostId: this.config.hostId,
      bootId: this.pos.bootId,
      seq,
      pcr: f.record.pcr,
      templateName: f.record.templateName,
      templateData: Buffer.from(f.record.templateData),
      templateDigest: Buffer.from(f.record.templateDigest),
      digestAlg: this.config.digestAlg,
      byteOrder: this.byteOrder === 'be' ? 'BE' : 'LE',
      producedAt: Date.now(),
    };
  }

  private async periodicQuote(): Promise<void> {
    const epoch = this.kafka.currentNonce();
    if (epoch === undefined) {
      this.log.debug('no valid nonce epoch yet: quote skipped');
      return;
    }
    await this.step();
    // Before the first record there is nothing to attest (a real log starts with boot_aggregate).
    if (this.matcher.count === 0) return;
    await this.quote(epoch.nonce, epoch.epoch, `q-${randomUUID()}`);
  }

  private async answerChallenge(c: Challenge): Promise<void> {
    this.log.info({ requestId: c.requestId }, 'challenge');
    await this.step();
    await this.quote(c.nonce, null, `${c.requestId}:${randomUUID().slice(0, 8)}`);
  }

  /** Quotes, places the quote in the log, then sends QuoteTaken and the Quote. */
  private async quote(nonce: Uint8Array, nonceEpoch: number | null, quoteId: string): Promise<PlacedQuote> {
    const deps = {
      tpm: this.tpm,
      akHandle: this.config.akHandle,
      akAlg: this.config.akAlg,
      matcher: this.matcher,
    };
    const placed = await quoteAndPlace({ ...deps, readMore: (limit) => this.step(limit) }, nonce);
    if (placed.attest.clockInfo.resetCount !== this.pos.resetCount) {
      throw new ImastreamError(
        'IMS_CONFIG_INVALID',
        'the TPM was reset under a running agent: restart the agent',
        {
          details: { was: this.pos.resetCount, now: placed.attest.clockInfo.resetCount },
        },
      );
    }
    if (!placed.matched)
      this.log.warn({ quoteId, read: placed.seq }, 'no prefix of the log matches the quote');
    const { hostId } = this.config;
    const { bootId } = this.pos;
    const at = Date.now();
    await this.kafka.measurements([
      { name: 'QuoteTaken', value: { hostId, bootId, seq: placed.seq, quoteId, at } },
    ]);
    const quote = {
      hostId,
      bootId,
      seq: placed.seq,
      quoteId,
      attest: Buffer.from(placed.raw.attest),
      signature: Buffer.from(placed.raw.signature),
      akName: Buffer.from(this.akName),
      nonce: Buffer.from(nonce),
      nonceEpoch,
      pcrs: toPcrValues(placed.pcrs),
      at,
    };
    await this.kafka.quote(quote);
    this.log.info({ quoteId, seq: placed.seq, matched: placed.matched }, 'quote sent');
    await this.sealShard(quoteId, placed, nonce);

    return placed;
  }

  /**
   * The quote at a cut: it must cover every record being freed (seq ≥ `from`). The TPM may lag
   * what was read (the kernel appends, then extends), so quotes are retried a bounded number of
   * times. The SnapshotEvent follows the quote, at `from` (stage all: the cut is where `A` put
   * it), or with `atQuote` exactly at the quote's seq (delete N: the cut is then chosen there).
   * A SnapshotEvent the broker already holds in that range is not sent again: its cut is reused.
   */
  private async quoteAtCut(from: number, atQuote: boolean): Promise<{ seq: number; quoteId: string }> {
    for (const [seq, quoteId] of this.snapshotsSent) {
      const inRange = atQuote ? seq >= from && seq <= this.pos.nextSeq : seq === from;
      if (inRange && quoteId !== null) return { seq, quoteId };
    }
    for (let attempt = 0; attempt < CUT_QUOTE_TRIES; attempt++) {
      const epoch = this.kafka.currentNonce();
      // Without a fleet nonce yet, a fresh random one: the quote still closes the shard offline.
      const nonce = epoch?.nonce ?? randomBytes(20);
      const quoteId = `cut-${randomUUID()}`;
      const placed = await this.quote(nonce, epoch?.epoch ?? null, quoteId);
      if (placed.seq >= from) {
        const seq = atQuote ? placed.seq : from;
        await this.sendSnapshot('STAGING', seq, quoteId);
        return { seq, quoteId };
      }
      await sleep(CUT_QUOTE_PAUSE_MS);
    }
    throw new ImastreamError('IMS_AGENT_CUT_FAILED', `no quote covers the cut at seq ${from}`, {
      canRetry: true,
      details: { cutSeq: from },
    });
  }

  private async sendSnapshot(kind: 'STAGING' | 'VIRTUAL', seq: number, quoteId: string): Promise<void> {
    const { hostId } = this.config;
    const value = { hostId, bootId: this.pos.bootId, seq, kind, quoteId, at: Date.now() };
    await this.kafka.measurements([{ name: 'SnapshotEvent', value }]);
    this.snapshotsSent.set(seq, quoteId);
    this.log.info({ kind, seq, quoteId }, 'cut quoted');
  }

  /**
   * Virtual shards, for kernels that cannot cut: every `--shard-records` records or
   * `--shard-seconds` (when records arrived), a quote closes the shard at the seq it covers.
   */
  private async virtualShard(now = false): Promise<void> {
    const { shardRecords, shardMs, cut } = this.config;
    if (!now && (cut !== 'none' || (shardRecords === 0 && shardMs === 0))) return;
    const pending = this.pos.nextSeq - this.shardFrom.seq;
    if (pending <= 0) return;
    const due =
      now ||
      (shardRecords > 0 && pending >= shardRecords) ||
      (shardMs > 0 && Date.now() - this.shardFrom.at >= shardMs);
    if (!due) return;
    const epoch = this.kafka.currentNonce();
    const quoteId = `shard-${randomUUID()}`;
    const placed = await this.quote(epoch?.nonce ?? randomBytes(20), epoch?.epoch ?? null, quoteId);
    if (placed.seq > this.shardFrom.seq) await this.sendSnapshot('VIRTUAL', placed.seq, quoteId);
    this.shardFrom = { seq: Math.max(placed.seq, this.shardFrom.seq), at: Date.now() };
  }

  /** The cut protocol's view of the agent (cut.ts). */
  private cutHost(): CutHost {
    return {
      kernel: this.kernel,
      digestAlg: this.config.digestAlg,
      position: () => this.pos,
      update: (change) => this.savePos(change),
      readAll: async () => {
        await this.step();
      },
      quoteAtCut: (from, atQuote) => this.quoteAtCut(from, atQuote),
      archived: (from, to) => this.archive.read(from, to),
    };
  }

  /** Seals the records this quote newly covers into a shard file and sends it (shard-sealer.ts). */
  private async sealShard(quoteId: string, placed: PlacedQuote, nonce: Uint8Array): Promise<void> {
    this.akPublic ??= await readAkPublic(this.tpm, this.config.akHandle);
    const closingQuote = { ...placed.raw, akPublic: this.akPublic, nonce, pcrs: placed.pcrs };
    const sealed = await this.sealer.seal({ quoteId, seq: placed.seq, quote: closingQuote });
    if (sealed === undefined) return;
    const { path, startSeq, endSeq, bytes, shipped } = sealed;
    if (shipped) this.log.info({ quoteId, startSeq, endSeq, bytes, path }, 'shard sealed');
    else this.log.warn({ quoteId, startSeq, endSeq, bytes, path }, 'shard sealed, too large to send');
  }

  /** Serves a ResendRequest from the archive of the current boot. */
  private async resend(r: ResendRequest): Promise<void> {
    if (r.bootId !== this.pos.bootId) {
      this.log.warn({ requestId: r.requestId, bootId: r.bootId }, 'resend for another boot ignored');
      return;
    }
    const raws = this.archive.read(r.fromSeq, Math.min(r.toSeq, this.pos.nextSeq));
    const { records } = parseBinaryLog(concatBytes(raws), { digestAlg: this.config.digestAlg });
    const values = records.map(
      (record, i): Measurement => ({
        name: 'LogRecord',
        value: this.logRecord({ record }, r.fromSeq + i),
      }),
    );
    for (let i = 0; i < values.length; i += this.config.batchSize) {
      await this.kafka.measurements(values.slice(i, i + this.config.batchSize));
    }
    this.log.info(
      { requestId: r.requestId, from: r.fromSeq, count: values.length, reason: r.reason },
      'resent',
    );
  }
}

/** Scratch folder for tpm2-tools output files, inside the state directory. */
export function toolDir(stateDir: string): string {
  const dir = join(stateDir, 'tpm');
  mkdirSync(dir, { recursive: true, mode: 0o700 });

  return dir;
}

function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  return Buffer.concat(parts);
}
