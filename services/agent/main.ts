import { randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { ImastreamError } from '../../lib/errors.ts';
import { parseBinaryLog } from '../../lib/ima/binary.ts';
import { parseAttest } from '../../lib/tpm/attest.ts';
import type { Challenge, LogRecord, ResendRequest } from '../shared/records.ts';
import { archiveDir, RecordArchive } from './archive.ts';
import type { AgentConfig } from './config.ts';
import { type FollowedRecord, LogFollower } from './follower.ts';
import { type AgentPosition, bootIdOf, bootStart, loadPosition, savePosition } from './position.ts';
import { AgentKafka, DEFAULT_TOPICS, type Measurement } from './producer.ts';
import { type PlacedQuote, quoteAndPlace, toPcrValues } from './quoter.ts';
import { BankTracker, SeqMatcher } from './seq-match.ts';
import { readAkPublic, ShardSealer } from './shard-sealer.ts';
import { ensureAk, type TpmTools, takeQuote } from './tpm.ts';

/**
 * The host agent: follows the binary IMA log, stamps each record with (hostId, bootId, seq),
 * archives it durably, produces it, and quotes the TPM on a timer and on request.
 *
 * Delivery guarantee: at-least-once, in order, with exactly-once effect downstream. A record is
 * archived (fsync'd) and acknowledged by the broker before the position past it is saved; a crash
 * in between re-sends that tail with the same seqs, which the replayer applies once because it is
 * idempotent by (hostId, bootId, seq). Nothing read is ever lost or renumbered.
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
  private follower!: LogFollower;
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
    this.resume(resetCount);
    if (!this.pos.bootAnnounced) await this.announceBoot();
    await this.sealer.publishPending();
    await this.kafka.listen({
      onChallenge: (c) => void this.serial(() => this.answerChallenge(c)).catch((err) => this.fail(err)),
      onResend: (r) => void this.serial(() => this.resend(r)).catch((err) => this.fail(err)),
    });
    this.every(this.config.pollMs, () => this.step());
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
      if (this.failure === undefined && this.follower !== undefined) await this.serial(() => this.step());
    } finally {
      await this.lock.catch(() => undefined);
      this.follower?.close();
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

  /** Publishes the AK (created under the EK on first start) for trust-on-first-use enrolment. */
  private async enrol(): Promise<void> {
    const ak = await ensureAk(this.tpm, this.config.akHandle, this.config.akAlg);
    this.akName = ak.akName;
    if (ak.created) this.log.info({ akHandle: this.config.akHandle, akAlg: this.config.akAlg }, 'AK created');
    await this.kafka.enrollment({
      hostId: this.config.hostId,
      akPublic: Buffer.from(ak.akPublic),
      akName: Buffer.from(ak.akName),
      ekPublic: Buffer.from(ak.ekPublic),
      ekCertificate: null,
      policy: 'tofu',
      status: 'unverified-tofu',
      at: Date.now(),
    });
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

  /** Resumes the saved position of this boot, or starts the boot afresh. */
  private resume(resetCount: number): void {
    const bootId = bootIdOf(this.config.hostBootId, resetCount);
    const saved = loadPosition(this.config.stateDir);
    if (saved !== undefined && saved.bootId === bootId) {
      this.pos = saved;
      if (statSync(this.config.logPath).size < saved.logOffset && statSync(this.config.logPath).size > 0) {
        throw new ImastreamError(
          'IMS_AGENT_LOG_SHRANK',
          `${this.config.logPath} is shorter than offset ${saved.logOffset}`,
        );
      }
    } else {
      if (saved !== undefined) this.log.info({ previous: saved.bootId, bootId }, 'new boot');
      this.pos = bootStart(this.config.hostBootId, resetCount);
      savePosition(this.config.stateDir, this.pos);
    }
    const dir = archiveDir(this.config.stateDir, bootId);
    this.archive = RecordArchive.open(dir, { bootId, digestAlg: this.config.digestAlg }, this.pos.nextSeq);
    this.matcher = this.rebuildMatcher();
    this.sealer = ShardSealer.open({
      stateDir: this.config.stateDir,
      hostId: this.config.hostId,
      bootId,
      digestAlg: this.config.digestAlg,
      archive: this.archive,
      publish: (record) => this.kafka.sealedShard(record),
    });
    this.follower = new LogFollower(this.config.logPath, this.pos.logOffset, {
      digestAlg: this.config.digestAlg,
    });
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
      firstSeq: 0,
      kind: 'COLD' as const,
      at: Date.now(),
    };
    await this.kafka.measurements([{ name: 'BootEvent', value }]);
    this.pos = { ...this.pos, bootAnnounced: true, updatedAt: Date.now() };
    savePosition(this.config.stateDir, this.pos);
    this.log.info({ bootId, resetCount }, 'boot announced');
  }

  /** Reads what the log has grown by; archives, produces and saves it batch by batch. */
  private async step(): Promise<void> {
    const read = this.follower.poll();
    for (let i = 0; i < read.length; i += this.config.batchSize) {
      await this.ship(read.slice(i, i + this.config.batchSize));
    }
  }

  private async ship(batch: FollowedRecord[]): Promise<void> {
    this.archive.append(batch.map((f) => f.raw));
    this.archive.sync();
    const first = this.pos.nextSeq;
    const values = batch.map(
      (f, i): Measurement => ({ name: 'LogRecord', value: this.logRecord(f, first + i) }),
    );
    for (const f of batch) this.matcher.add(f.record);
    await this.kafka.measurements(values);
    const last = batch.at(-1) as FollowedRecord;
    this.pos = { ...this.pos, nextSeq: first + batch.length, logOffset: last.end, updatedAt: Date.now() };
    savePosition(this.config.stateDir, this.pos);
    this.log.debug({ from: first, count: batch.length }, 'records sent');
  }

  private logRecord(f: FollowedRecord, seq: number): LogRecord {
    return {
      hostId: this.config.hostId,
      bootId: this.pos.bootId,
      seq,
      pcr: f.record.pcr,
      templateName: f.record.templateName,
      templateData: Buffer.from(f.record.templateData),
      templateDigest: Buffer.from(f.record.templateDigest),
      digestAlg: this.config.digestAlg,
      byteOrder: this.follower.byteOrder === 'be' ? 'BE' : 'LE',
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
  private async quote(nonce: Uint8Array, nonceEpoch: number | null, quoteId: string): Promise<void> {
    const deps = {
      tpm: this.tpm,
      akHandle: this.config.akHandle,
      akAlg: this.config.akAlg,
      matcher: this.matcher,
    };
    const placed = await quoteAndPlace({ ...deps, readMore: () => this.step() }, nonce);
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
        value: this.logRecord({ record, raw: raws[i] as Uint8Array, end: 0 }, r.fromSeq + i),
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
