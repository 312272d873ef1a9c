import { randomUUID } from 'node:crypto';
import { fromHex } from '../../lib/bytes/hex.ts';
import { ImastreamError } from '../../lib/errors.ts';
import { type HashAlg, isHashAlg } from '../../lib/hash.ts';
import type { PcrValues } from '../../lib/pcr.ts';
import { parseAttest } from '../../lib/tpm/attest.ts';
import { matchPcrDigest } from '../../lib/tpm/quote.ts';
import { makeAlert } from '../alerts/make.ts';
import { type PcrValueJson, pcrsFromJson, pcrsToJson } from '../replayer/pcrs.ts';
import { decode, encode } from '../shared/codec.ts';
import type { ImsProducer, InMessage } from '../shared/kafka.ts';
import type { Logger } from '../shared/logger.ts';
import type { Alert, Checkpoint, ClosingQuote, PcrValue, Quote, Verdict } from '../shared/records.ts';
import { checkKeyPart } from '../shared/redis.ts';
import { TOPIC } from '../shared/topics.ts';
import { type Comparison, compareByDigest, compareWithCheckpoint } from './compare.ts';
import { attestHashOf, judgeQuote, type QuoteContext } from './judge.ts';
import { type CutInfo, cutVerdict, deadlineVerdict, openVerdict, parseCut, verdictKey } from './lifecycle.ts';
import { acceptedNonces, findNonce, type IssuedNonce } from './nonce-window.ts';
import type { CutResult, Lease, ParkedQuote, QuoteStore } from './store.ts';
import { buildVerdict, startingPoint, type VerdictOutcome } from './verdict.ts';

/** A checkpoint with the shard the replayer cut at it (null: unknown, the range falls back). */
interface StoredCheckpoint {
  checkpoint: Checkpoint;
  cut: CutInfo | null;
}

/** A quote this recent may have overtaken its host's enrolment or challenge on the way in. */
const FRESH_QUOTE_MS = 60_000;

export interface QuoteWorkerOptions {
  /** How long a quote or checkpoint waits for its other half before SHARD_DEADLINE. */
  deadlineMs: number;
  /** How long a join claim holds before another delivery may take it over. */
  leaseMs?: number;
  /** How long a quote waits for its host's enrolment or nonce to reach Redis. */
  refWaitMs?: number;
  now?: () => number;
}

export interface QuoteCheckerStats {
  quotes: number;
  rejected: number;
  verdicts: number;
  deadlines: number;
}

/**
 * The quote-checker's Kafka handler for ima.quotes and ima.checkpoints. A quote is judged, and
 * if accepted parked; whichever half of (quote, checkpoint) arrives second claims the join in
 * Redis and produces the verdict. Every output carries a deterministic id (alertId, shardId), so
 * a redelivery or a second instance producing it again is harmless.
 */
export class QuoteWorker {
  readonly stats: QuoteCheckerStats = { quotes: 0, rejected: 0, verdicts: 0, deadlines: 0 };
  private readonly token = randomUUID();
  private readonly now: () => number;

  constructor(
    private readonly store: QuoteStore,
    private readonly producer: ImsProducer,
    private readonly logger: Logger,
    private readonly options: QuoteWorkerOptions,
  ) {
    this.now = options.now ?? Date.now;
  }

  readonly handleMessage = async (m: InMessage): Promise<void> => {
    if (m.value === null) throw new ImastreamError('IMS_WIRE_BAD_FRAME', 'message has no value');
    const decoded = decode(m.value);
    if (decoded.schema === 'Quote')
      return this.onQuote(decoded.value, `${m.topic}:${m.partition}:${m.offset}`);
    if (decoded.schema === 'Checkpoint') return this.onCheckpoint(decoded.value);
    throw new ImastreamError('IMS_WIRE_UNKNOWN_SCHEMA', `${decoded.schema} does not belong on ${m.topic}`);
  };

  private async onQuote(quote: Quote, position: string): Promise<void> {
    checkIds(quote.hostId, quote.bootId);
    this.stats.quotes++;
    const judgement = await judgeQuote(quote, await this.context(quote, position));
    if (!judgement.ok) {
      this.stats.rejected++;
      this.logger.warn(
        { hostId: quote.hostId, quoteId: quote.quoteId, reasons: judgement.reasons },
        'quote rejected',
      );
      await this.produceAlerts(judgement.alerts);
      return;
    }
    const accepted = judgement.quote;
    await this.store.saveAccepted(quote.hostId, accepted.clock, position);
    const parked: ParkedQuote = {
      quoteId: quote.quoteId,
      hashAlg: accepted.hashAlg,
      attest: Buffer.from(quote.attest).toString('hex'),
      quoted: accepted.quoted === null ? null : pcrsToJson(accepted.quoted),
      signature: Buffer.from(quote.signature).toString('hex'),
      akName: Buffer.from(quote.akName).toString('hex'),
      nonce: Buffer.from(quote.nonce).toString('hex'),
    };
    const r = await this.store.parkQuote(quote.hostId, quote.bootId, quote.seq, parked, this.lease());
    this.logger.debug(
      { hostId: quote.hostId, quoteId: quote.quoteId, seq: quote.seq, join: r.state },
      'quote accepted',
    );
    if (r.state === 'parked')
      await this.store.awaitJoin(quote.hostId, quote.bootId, quote.seq, this.deadline());
    if (r.state === 'join') await this.finishJoin(r.quote, storedCheckpoint(r.checkpoint!, null));
  }

  /**
   * A checkpoint: the replayer fixed a shard's end. Publishes CUT (and OPEN for the next shard when
   * this is the host's newest cut) unless the quote is already there, then joins or waits. The
   * join's lease is held across the CUT publication, so a quote arriving meanwhile cannot publish
   * CLOSED or FAILED before it: the shard's last state is always the judged one.
   */
  private async onCheckpoint(c: Checkpoint): Promise<void> {
    checkIds(c.hostId, c.bootId);
    const r = await this.store.cutCheckpoint(c.hostId, c.bootId, c.seq, this.lease());
    this.logger.debug({ hostId: c.hostId, seq: c.seq, join: r.state }, 'checkpoint');
    if (r.state === 'busy') return;
    if (r.state === 'done') {
      await this.labelCut(c, r);
      return;
    }
    const stored = storedCheckpoint(r.stored, c);
    const akPolicy = await this.akPolicy(c.hostId);
    const states: Verdict[] = [];
    if (r.state === 'cut' && stored.cut !== null)
      states.push(cutVerdict({ checkpoint: stored.checkpoint, cut: stored.cut, akPolicy, now: this.now() }));
    if ('newest' in r && r.newest)
      states.push(openVerdict({ checkpoint: stored.checkpoint, akPolicy, now: this.now() }));
    await this.produceVerdicts(states);
    if (r.state === 'join') {
      await this.finishJoin(r.quote, stored);
      return;
    }
    const again = await this.store.joinCheckpoint(c.hostId, c.bootId, c.seq, this.lease());
    if (again.state === 'wait') await this.store.awaitJoin(c.hostId, c.bootId, c.seq, this.deadline());
    if (again.state === 'join') await this.finishJoin(again.quote, stored);
  }

  /**
   * A checkpoint again after its shard was judged: the agent's SnapshotEvent follows its quote, so
   * the cut kind may reach the replayer (which checkpoints the cut again with it) only then.
   * Publishes the judged verdict again with the kind; nothing else about it changes. A join done
   * by a build that kept no verdict is judged again from its parked quote (same inputs, same state).
   */
  private async labelCut(c: Checkpoint, r: Extract<CutResult, { state: 'done' }>): Promise<void> {
    if (r.stored === '') return;
    const stored = storedCheckpoint(r.stored, c);
    const kind = stored.cut?.kind ?? null;
    if (kind === null) return;
    const kept = r.verdict === null ? null : decode(r.verdict);
    let labelled: Verdict;
    if (kept?.schema === 'Verdict') {
      if (kept.value.cutKind !== null) return;
      labelled = { ...kept.value, cutKind: kind, at: this.now() };
    } else if (r.quote !== null) {
      labelled = (await this.judge(r.quote, stored)).verdict;
    } else return;
    await this.produceVerdicts([labelled]);
    await this.store.relabelVerdict(c.hostId, c.bootId, c.seq, encode('Verdict', labelled));
    this.logger.info({ hostId: c.hostId, shardId: labelled.shardId, cutKind: kind }, 'shard cut kind');
  }

  private lease(): Lease {
    return { token: this.token, now: this.now(), ms: this.options.leaseMs ?? 30_000 };
  }

  private async akPolicy(hostId: string): Promise<string | null> {
    return (await this.store.enrollment(hostId))?.policy ?? null;
  }

  private async produceVerdicts(verdicts: readonly Verdict[]): Promise<void> {
    if (verdicts.length === 0) return;
    await this.producer.send(
      TOPIC.verdicts,
      verdicts.map((v) => ({ key: verdictKey(v), value: encode('Verdict', v) })),
    );
  }

  /**
   * What the fleet knows about the quote's host. The enrolment and nonce arrive on other topics,
   * through another consumer, so a fresh quote may overtake them: wait a little for what could
   * still be on its way. An old quote (a backlog) or a nonce epoch older than the newest known
   * gets no wait, so a flood of bad quotes cannot slow the checker down.
   */
  private async context(quote: Quote, position: string): Promise<QuoteContext> {
    const until = this.now() + (this.options.refWaitMs ?? 3_000);
    const attestHash = attestHashOf(quote.attest);
    for (;;) {
      const [enrollment, nonces, last, seenAt] = await Promise.all([
        this.store.enrollment(quote.hostId),
        this.store.nonces(quote.hostId, this.now()),
        this.store.lastQuote(quote.hostId),
        this.store.seenAt(quote.hostId, attestHash),
      ]);
      const accepted = acceptedNonces(nonces.epochs, nonces.challenges, this.now());
      const context = { enrollment, accepted, last, seenAt, position, now: this.now() };
      if (seenAt !== null || this.now() >= until || !this.mayStillArrive(quote, context, nonces.epochs))
        return context;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }

  private mayStillArrive(quote: Quote, ctx: QuoteContext, epochs: readonly IssuedNonce[]): boolean {
    const fresh = Math.abs(this.now() - quote.at) < FRESH_QUOTE_MS;
    if (ctx.enrollment === null) return fresh;
    if (findNonce(ctx.accepted, quote.nonce) !== undefined) return false;
    if (quote.nonceEpoch === null) return fresh;
    const newest = Math.max(-1, ...epochs.map((e) => e.epoch ?? -1));

    return quote.nonceEpoch > newest;
  }

  private async finishJoin(parked: ParkedQuote, stored: StoredCheckpoint): Promise<void> {
    const { checkpoint } = stored;
    const out = await this.judge(parked, stored);
    await this.produceVerdicts([out.verdict]);
    await this.produceAlerts(out.alerts);
    const encoded = encode('Verdict', out.verdict);
    await this.store.recordVerdict(checkpoint, summary(out.verdict), out.closed, out.pin, encoded);
    this.stats.verdicts++;
    const log = { hostId: checkpoint.hostId, shardId: out.verdict.shardId, status: out.verdict.status };
    if (out.verdict.status === 'CLOSED') this.logger.info(log, 'shard closed');
    else this.logger.warn({ ...log, reasons: out.verdict.reasons }, 'shard failed');
  }

  /** Compares the joined quote and checkpoint: the verdict, its alerts, the closed end and pin. */
  private async judge(parked: ParkedQuote, stored: StoredCheckpoint): Promise<VerdictOutcome> {
    const { checkpoint, cut } = stored;
    const comparison = compare(parked, checkpoint);
    const [closed, anchor, pinned, akPolicy] = await Promise.all([
      this.store.closed(checkpoint.hostId),
      this.store.snapshotAnchor(checkpoint.hostId),
      this.store.pin(checkpoint.hostId),
      this.akPolicy(checkpoint.hostId),
    ]);
    return buildVerdict({
      checkpoint,
      quoteId: parked.quoteId,
      quote: closingQuote(parked),
      cut,
      akPolicy,
      comparison,
      closed: startingPoint(closed, anchor, checkpoint.bootId, checkpoint.seq),
      pinned,
      now: this.now(),
    });
  }

  /**
   * Raises SHARD_DEADLINE for joins whose other half never came, and fails the shard when its end
   * was cut (the checkpoint is there, so the range is known); safe to run on every instance (the
   * ZREM picks one). A quote that still joins later publishes the judged state over it.
   */
  async sweep(): Promise<void> {
    for (const overdue of await this.store.takeOverdue(this.now())) {
      if (overdue.done) continue;
      this.stats.deadlines++;
      const { hostId, bootId, seq } = overdue;
      await this.failUnattested(hostId, bootId, seq);
      const alert = makeAlert({
        kind: 'SHARD_DEADLINE',
        hostId,
        bootId,
        seq,
        message: `${hostId} boot ${bootId}: records [.., ${seq}) not attested in time (quote or checkpoint missing)`,
        details: { deadlineMs: this.options.deadlineMs },
        at: this.now(),
      });
      this.logger.warn({ hostId, bootId, seq }, 'shard deadline passed');
      await this.produceAlerts([alert]);
    }
  }

  /**
   * FAILED for a cut shard no quote joined in time. The join's lease is held while it is
   * published, and the join tried again after: a quote that came meanwhile is judged, and its
   * state lands after FAILED.
   */
  private async failUnattested(hostId: string, bootId: string, seq: number): Promise<void> {
    const raw = await this.store.storedCheckpoint(hostId, bootId, seq);
    if (raw === null) return;
    const stored = storedCheckpoint(raw, null);
    const { checkpoint, cut } = stored;
    if (cut === null) return;
    if ((await this.store.claimOverdue(hostId, bootId, seq, this.lease())) !== 'claimed') return;
    const akPolicy = await this.akPolicy(hostId);
    const deadlineMs = this.options.deadlineMs;
    await this.produceVerdicts([deadlineVerdict({ checkpoint, cut, akPolicy, now: this.now(), deadlineMs })]);
    const again = await this.store.joinCheckpoint(hostId, bootId, seq, this.lease());
    if (again.state === 'join') await this.finishJoin(again.quote, stored);
  }

  private deadline(): number {
    return this.now() + this.options.deadlineMs;
  }

  private async produceAlerts(alerts: readonly Alert[]): Promise<void> {
    if (alerts.length === 0) return;
    await this.producer.send(
      TOPIC.alerts,
      alerts.map((a) => ({ key: a.hostId, value: encode('Alert', a) })),
    );
  }
}

function checkIds(hostId: string, bootId: string): void {
  checkKeyPart('hostId', hostId);
  checkKeyPart('bootId', bootId);
}

/** Compares by the trusted PCR values when the quote shipped them, else by the signed digest. */
function compare(parked: ParkedQuote, checkpoint: Checkpoint): Comparison {
  if (parked.quoted !== null)
    return compareWithCheckpoint(pcrsFromJson(parked.quoted), checkpoint.pcrs, checkpoint.schemes);
  const attest = parseAttest(fromHex(parked.attest));
  const hashAlg = parked.hashAlg as HashAlg;

  return compareByDigest(
    (s) => matchPcrDigest(attest, valuesOf(checkpoint.pcrs, s), hashAlg),
    checkpoint.schemes,
  );
}

function valuesOf(pcrs: readonly PcrValue[], scheme: string): PcrValues {
  const out: PcrValues = new Map();
  for (const p of pcrs) {
    if (p.scheme !== scheme || !isHashAlg(p.bank)) continue;
    if (!out.has(p.bank)) out.set(p.bank, new Map());
    out.get(p.bank)!.set(p.pcr, p.value);
  }

  return out;
}

/**
 * The replayer's stored checkpoint (`h:{host}:ckpt:…`, with the shard it ends), or the one from
 * Kafka without a cut when the stored copy is gone ('').
 */
function storedCheckpoint(json: string, fallback: Checkpoint | null): StoredCheckpoint {
  if (json === '' && fallback !== null) return { checkpoint: fallback, cut: null };
  const c = JSON.parse(json) as Omit<Checkpoint, 'pcrs'> & { pcrs: PcrValueJson[]; cut?: unknown };
  const checkpoint: Checkpoint = {
    hostId: c.hostId,
    bootId: c.bootId,
    seq: c.seq,
    pcrs: pcrsFromJson(c.pcrs),
    schemes: c.schemes,
    at: c.at,
  };

  return { checkpoint, cut: parseCut(c.cut, c.seq) };
}

/** The verified quote's signed bytes for the verdict; null for a quote parked without them. */
function closingQuote(p: ParkedQuote): ClosingQuote | null {
  if (p.signature === undefined || p.akName === undefined || p.nonce === undefined) return null;

  return {
    attest: Buffer.from(p.attest, 'hex'),
    signature: Buffer.from(p.signature, 'hex'),
    akName: Buffer.from(p.akName, 'hex'),
    nonce: Buffer.from(p.nonce, 'hex'),
  };
}

function summary(v: Verdict): object {
  const { shardId, status, quoteId, startSeq, endSeq, scheme, reasons, at } = v;

  return { shardId, status, quoteId, startSeq, endSeq, scheme, reasons, at };
}
