import { isImastreamError } from '../../lib/errors.ts';
import type { HashAlg } from '../../lib/hash.ts';
import { PcrReplay } from '../../lib/ima/replay.ts';
import type { SnapshotAggregate } from '../../lib/ima/snapshot-aggregate.ts';
import { makeAlert } from '../alerts/make.ts';
import { QUOTE_TRAIL_MAX } from '../shared/quote-trail.ts';
import type {
  BootEvent,
  Checkpoint,
  CutKind,
  LogRecord,
  QuoteTaken,
  SnapshotEvent,
} from '../shared/records.ts';
import { cutAt, type ShardCut } from './cuts.ts';
import {
  freshDoc,
  type PendingQuote,
  type RecentPcrs,
  type ReplayDoc,
  type Scheme,
  type SchemePin,
} from './doc.ts';
import type { MeasurementEvent, ReplayEffect } from './events.ts';
import { holdAt, resendRequest } from './gap.ts';
import { flattenPcrs, pcrsFromJson, pcrsToJson } from './pcrs.ts';
import {
  type ClosedEnd,
  mayStartFrom,
  replayFromClaim,
  type SnapshotClaim,
  snapshotClaim,
  snapshotFinding,
} from './snapshot.ts';
import { checkTemplateDigest } from './template-digest.ts';

/** Boots remembered after they end, so their redelivered events are recognised as stale. */
const PAST_BOOTS_KEPT = 8;
/** QuoteTaken markers remembered while a gap holds the host. */
const PENDING_QUOTES_KEPT = 32;
/**
 * Seqs whose PCR values are kept in the doc for a QuoteTaken in a later batch: the last ones of
 * each batch. The agent produces at most QUOTE_TRAIL_MAX records past a quote's seq before its
 * QuoteTaken (docs/contract.md), so a QuoteTaken that a batch boundary separates from its
 * records still finds its seq here. Within one batch every named seq is kept (HostBatch.named).
 */
export const RECENT_PCRS_KEPT = QUOTE_TRAIL_MAX + 1;

/** One host's consecutive events from one Kafka batch, with the state stored before them. */
export interface ApplyInput {
  hostId: string;
  doc: ReplayDoc | null;
  pin: SchemePin | null;
  /** End of the host's last quote-closed shard: confirms a replay started from a snapshot. */
  closed?: ClosedEnd | null;
  events: readonly MeasurementEvent[];
  now: number;
  /** Banks to replay for a new boot (default: PcrReplay's). */
  banks?: readonly HashAlg[];
}

export interface ApplyResult {
  /** The state to store; null only when there was none and nothing created one. */
  doc: ReplayDoc | null;
  /** Whether `doc` differs from the stored one (no write needed otherwise). */
  changed: boolean;
  /** Alerts, checkpoints and resend requests, in the order they arose. */
  effects: ReplayEffect[];
  /** Records extended. */
  applied: number;
  /** Events already applied (redelivery) or belonging to a boot left behind. */
  skipped: number;
}

/**
 * Applies one host's batch to its stored replay state. Pure: hashing only, no I/O. The caller
 * stores the result with a compare-and-set on the input doc's (bootId, nextSeq), then produces the
 * effects, so a batch delivered twice applies once: every record below nextSeq is skipped.
 */
export function applyBatch(input: ApplyInput): ApplyResult {
  const batch = new HostBatch(input);
  for (const ev of input.events) batch.apply(ev);

  return batch.finish();
}

class HostBatch {
  private doc: ReplayDoc | null;
  private replay: PcrReplay | null = null;
  private changed = false;
  private applied = 0;
  private skipped = 0;
  private readonly effects: ReplayEffect[] = [];
  /** A held range was filled but records dropped meanwhile are still missing. */
  private droppedResendDue = false;
  /** LogRecords of the batch not yet seen: the last RECENT_PCRS_KEPT of them leave PCR values behind. */
  private recordsLeft: number;
  /**
   * `<bootId>/<seq>` of every QuoteTaken and quoted SnapshotEvent in this batch: the replay keeps
   * its values at those seqs while passing them, so a marker that trails its records inside the
   * batch is checkpointed however many records came between (not only the last few).
   */
  private readonly named: Set<string>;
  /** The values kept for `named` seqs during this batch (not stored: the doc's ring is for later batches). */
  private readonly batchPcrs = new Map<string, RecentPcrs>();

  constructor(private readonly input: ApplyInput) {
    const d = input.doc;
    this.doc =
      d === null ? null : { ...d, schemes: [...d.schemes], gap: d.gap === null ? null : { ...d.gap } };
    if (this.doc !== null) this.honourPin(this.doc, input.pin);
    if (this.doc !== null) this.honourClosed(this.doc, input.closed ?? null);
    this.recordsLeft = input.events.filter((e) => e.type === 'LogRecord').length;
    this.named = namedSeqs(input.events);
  }

  apply(ev: MeasurementEvent): void {
    switch (ev.type) {
      case 'LogRecord':
        this.onRecord(ev.value);
        break;
      case 'BootEvent':
        this.onBoot(ev.value);
        break;
      case 'SnapshotEvent':
        this.onSnapshot(ev.value);
        break;
      case 'QuoteTaken':
        this.onQuoteTaken(ev.value);
        break;
    }
  }

  finish(): ApplyResult {
    const doc = this.doc;
    if (doc !== null) this.resendDropped(doc);
    if (doc !== null && this.changed) {
      if (this.replay !== null) doc.replay = this.replay.state();
      doc.updatedAt = this.input.now;
    }

    return {
      doc,
      changed: this.changed,
      effects: this.effects,
      applied: this.applied,
      skipped: this.skipped,
    };
  }

  /** A scheme pinned by a verified quote of this boot drops the other chain. */
  private honourPin(doc: ReplayDoc, pin: SchemePin | null): void {
    if (pin === null || pin.bootId !== doc.bootId || doc.schemes.length < 2) return;
    if (!doc.schemes.includes(pin.scheme)) return;
    this.pcrs(doc).pin(pin.scheme);
    doc.schemes = [pin.scheme];
    this.changed = true;
  }

  /** A quote closed a shard past the snapshot this replay started from: the start is confirmed. */
  private honourClosed(doc: ReplayDoc, closed: ClosedEnd | null): void {
    const from = doc.unverifiedFrom;
    if (from === null || closed === null || closed.bootId !== doc.bootId || closed.endSeq <= from) return;
    doc.unverifiedFrom = null;
    doc.startPcrs = null;
    if (doc.status === 'unverified') doc.status = 'ok';
    this.changed = true;
  }

  private onBoot(ev: BootEvent): void {
    const doc = this.doc;
    if (doc !== null && (doc.bootId === ev.bootId || doc.pastBoots.includes(ev.bootId))) {
      this.skipped++;
      return;
    }
    if (ev.kind === 'KEXEC' && doc !== null) {
      // The PCRs survive a kexec and the log carries on: same replay, new boot name.
      doc.pastBoots = [doc.bootId, ...doc.pastBoots].slice(0, PAST_BOOTS_KEPT);
      doc.bootId = ev.bootId;
      this.changed = true;
      return;
    }
    this.startBoot(ev.bootId);
  }

  /**
   * The agent cut its log at seq (Linux 7.2 staging, a virtual shard, a snapshot_aggregate). With
   * the quote taken at the cut, the shard ends there like at a QuoteTaken, labelled with the
   * cut's kind (whichever of the two events comes first makes the cut; the other finds it made).
   * Without a quote, only the next shard's start moves.
   */
  private onSnapshot(ev: SnapshotEvent): void {
    const doc = this.current(ev.bootId, ev.seq);
    if (doc === null) return;
    if (ev.seq < doc.nextSeq) {
      if (ev.quoteId !== null) this.lateCheckpoint(doc, ev.seq, ev.kind);
      return;
    }
    if (ev.seq > doc.nextSeq) {
      if (ev.quoteId !== null) this.remember(doc, { seq: ev.seq, quoteId: ev.quoteId, kind: ev.kind });
      this.hold(doc, ev.seq);
      return;
    }
    if (ev.quoteId !== null) {
      this.checkpoint(doc, ev.kind);
      return;
    }
    cutAt(doc, ev.seq, pcrsToJson(this.livePcrs(doc)), ev.kind);
    this.changed = true;
  }

  /** A quote or cut past the records seen: its checkpoint waits for them (kinds merge). */
  private remember(doc: ReplayDoc, q: PendingQuote): void {
    const known = doc.pendingQuotes.find((p) => p.seq === q.seq);
    if (known === undefined) {
      doc.pendingQuotes = [...doc.pendingQuotes, q].slice(-PENDING_QUOTES_KEPT);
      return;
    }
    if (q.kind != null && known.kind == null)
      doc.pendingQuotes = doc.pendingQuotes.map((p) => (p === known ? { ...p, kind: q.kind } : p));
  }

  private onQuoteTaken(ev: QuoteTaken): void {
    const doc = this.current(ev.bootId, ev.seq);
    if (doc === null) return;
    if (ev.seq < doc.nextSeq) {
      this.lateCheckpoint(doc, ev.seq, null);
      return;
    }
    if (ev.seq === doc.nextSeq) {
      this.checkpoint(doc, null);
      return;
    }
    this.remember(doc, { seq: ev.seq, quoteId: ev.quoteId });
    this.hold(doc, ev.seq);
  }

  private onRecord(rec: LogRecord): void {
    this.recordsLeft--;
    const claim = snapshotClaim(rec);
    const start = claim?.ok === true ? this.snapshotStart(rec, claim.agg) : undefined;
    const doc = start === undefined ? this.current(rec.bootId, rec.seq) : this.startFromSnapshot(rec, start);
    if (doc === null) return;
    if (rec.seq < doc.nextSeq) {
      this.skipped++;
      return;
    }
    if (rec.seq > doc.nextSeq) {
      this.hold(doc, rec.seq + 1);
      return;
    }
    if (claim !== undefined && start === undefined) this.checkSnapshot(doc, rec, claim);
    this.extend(doc, rec);
    const named = this.named.has(seqKey(doc.bootId, doc.nextSeq));
    if (named || this.recordsLeft < RECENT_PCRS_KEPT) {
      const entry = this.recentEntry(doc);
      if (named) this.batchPcrs.set(seqKey(doc.bootId, doc.nextSeq), entry);
      if (this.recordsLeft < RECENT_PCRS_KEPT) {
        doc.recent = [...doc.recent.filter((r) => r.seq < doc.nextSeq), entry].slice(-RECENT_PCRS_KEPT);
      }
    }
    this.afterAdvance(doc);
  }

  /** The replay's values at nextSeq, as the ring keeps them. */
  private recentEntry(doc: ReplayDoc): RecentPcrs {
    const replay = this.pcrs(doc);
    const pcrs = pcrsToJson(doc.schemes.flatMap((s) => flattenPcrs(s, replay.values(s))));
    return { seq: doc.nextSeq, schemes: [...doc.schemes], pcrs };
  }

  /**
   * The replay a snapshot_aggregate at seq > 0 lets this host start from, when nothing of its boot
   * was replayed here (no state, a new boot, or a doc of the boot still at 0 and held no further
   * than this record); undefined otherwise, or when the claim has no bank this build can hash.
   */
  private snapshotStart(rec: LogRecord, agg: SnapshotAggregate): PcrReplay | undefined {
    return mayStartFrom(this.doc, rec) ? replayFromClaim(agg) : undefined;
  }

  /**
   * Starts the boot's replay at the snapshot record from the PCR values it claims. The claim is
   * unverified (the records before it were never seen here) until a quote closes a shard past it.
   * The record itself is then extended like any ima-buf record: the RFC measures it as critical
   * data into PCR 10, after reading the PCRs it reports.
   */
  private startFromSnapshot(rec: LogRecord, replay: PcrReplay): ReplayDoc {
    const old = this.doc;
    const sameBoot = old !== null && old.bootId === rec.bootId;
    const pastBoots =
      old === null || sameBoot
        ? (old?.pastBoots ?? [])
        : [old.bootId, ...old.pastBoots].slice(0, PAST_BOOTS_KEPT);
    this.replay = replay;
    const claimed = pcrsToJson(replay.schemes.flatMap((s) => flattenPcrs(s, replay.values(s))));
    this.doc = {
      ...freshDoc(rec.bootId, pastBoots, this.input.now),
      nextSeq: rec.seq,
      status: 'unverified',
      shardStart: rec.seq,
      pendingQuotes: sameBoot ? old.pendingQuotes.filter((q) => q.seq > rec.seq) : [],
      unverifiedFrom: rec.seq,
      startPcrs: claimed,
      // The first shard starts at the snapshot, from the values it claims.
      cutPcrs: claimed,
    };
    this.changed = true;

    return this.doc;
  }

  /**
   * A snapshot_aggregate met mid-replay: its claimed PCRs must equal the replay of every record
   * before it. A mismatch (or a claim that cannot be read) is SNAPSHOT_MISMATCH; the replay goes on.
   * A claim sharing no (bank, PCR) with the replay cannot be checked and raises nothing.
   */
  private checkSnapshot(doc: ReplayDoc, rec: LogRecord, claim: SnapshotClaim): void {
    const found = snapshotFinding(this.pcrs(doc), claim, rec.seq);
    if (found === null) return;
    if (doc.status !== 'gap') doc.status = 'mismatch';
    this.alert({
      kind: 'SNAPSHOT_MISMATCH',
      hostId: this.input.hostId,
      bootId: doc.bootId,
      seq: rec.seq,
      bank: found.bank,
      pcr: found.pcr,
      message: `${this.input.hostId} boot ${doc.bootId} seq ${rec.seq}: ${found.why}`,
      details: { scheme: found.scheme, mismatches: found.count },
    });
  }

  /**
   * Extends the PCRs with one record. A record whose data does not hash to its logged digest was
   * altered after the kernel measured it: alert, and extend the hash of the data as received, so the
   * replay diverges from the TPM and the next quote fails too.
   */
  private extend(doc: ReplayDoc, rec: LogRecord): void {
    const check = checkTemplateDigest(rec);
    if (check === 'mismatch')
      this.digestMismatch(doc, rec, 'template data does not hash to the logged digest');
    try {
      this.pcrs(doc).extend(rec);
    } catch (err) {
      if (!isImastreamError(err)) throw err;
      this.digestMismatch(doc, rec, `record cannot be extended: ${err.message}`);
    }
    doc.nextSeq++;
    this.applied++;
    this.changed = true;
  }

  private digestMismatch(doc: ReplayDoc, rec: LogRecord, why: string): void {
    if (doc.status !== 'gap') doc.status = 'mismatch';
    this.alert({
      kind: 'TEMPLATE_DIGEST_MISMATCH',
      hostId: this.input.hostId,
      bootId: doc.bootId,
      seq: rec.seq,
      bank: rec.digestAlg,
      pcr: rec.pcr,
      message: `${this.input.hostId} boot ${doc.bootId} seq ${rec.seq}: ${why}`,
      details: { templateName: rec.templateName, digestAlg: rec.digestAlg },
    });
  }

  /** After nextSeq moved: emit checkpoints that were waiting for it, close or move the gap. */
  private afterAdvance(doc: ReplayDoc): void {
    const waiting = doc.pendingQuotes.find((q) => q.seq === doc.nextSeq);
    if (waiting !== undefined) {
      doc.pendingQuotes = doc.pendingQuotes.filter((q) => q.seq > doc.nextSeq);
      this.checkpoint(doc, waiting.kind ?? null);
    }
    const gap = doc.gap;
    if (gap === null || doc.nextSeq < gap.toSeq) return;
    if (gap.heldTo > doc.nextSeq) {
      // Records seen while the host was held were dropped: ask for them too, at the end of the
      // batch, unless the rest of the batch brings them (a resend usually covers both ranges).
      doc.gap = { fromSeq: doc.nextSeq, toSeq: gap.heldTo, heldTo: gap.heldTo };
      this.droppedResendDue = true;
      return;
    }
    doc.gap = null;
    doc.status = doc.unverifiedFrom === null ? 'ok' : 'unverified';
  }

  /** The deferred request for records dropped while held, if the batch did not bring them. */
  private resendDropped(doc: ReplayDoc): void {
    if (!this.droppedResendDue || doc.gap === null) return;
    doc.gap.fromSeq = doc.nextSeq;
    this.resend(doc);
  }

  /** Holds the host at a gap, raising SEQUENCE_GAP and asking for the range once per gap. */
  private hold(doc: ReplayDoc, end: number): void {
    this.changed = true;
    if (!holdAt(doc, end)) return;
    this.alert({
      kind: 'SEQUENCE_GAP',
      hostId: this.input.hostId,
      bootId: doc.bootId,
      seq: doc.nextSeq,
      message: `${this.input.hostId} boot ${doc.bootId}: records from seq ${doc.nextSeq} missing (saw ${end - 1})`,
      details: { fromSeq: doc.nextSeq, seenSeq: end - 1 },
    });
    this.resend(doc);
  }

  private resend(doc: ReplayDoc): void {
    this.effects.push({ kind: 'resend', request: resendRequest(this.input.hostId, doc, this.input.now) });
  }

  /**
   * A QuoteTaken for a seq the replay already passed: records after it came first. Checkpointed from
   * the values this batch kept at that seq, or from the doc's ring of recent values (a QuoteTaken
   * separated from its records by a batch boundary; a redelivered QuoteTaken gives the same
   * checkpoint again); otherwise it is skipped and its shard ends in SHARD_DEADLINE.
   */
  private lateCheckpoint(doc: ReplayDoc, seq: number, kind: CutKind | null): void {
    const kept = this.batchPcrs.get(seqKey(doc.bootId, seq)) ?? doc.recent.find((r) => r.seq === seq);
    if (kept === undefined) {
      this.skipped++;
      return;
    }
    const schemes = kept.schemes.filter((s) => doc.schemes.includes(s));
    const pcrs = pcrsFromJson(kept.pcrs).filter((p) => schemes.includes(p.scheme as Scheme));
    const cut = cutAt(doc, seq, pcrsToJson(pcrs), kind);
    this.emitCheckpoint(doc.bootId, seq, schemes, pcrs, cut);
  }

  /** The shard ends at nextSeq: the checkpoint the quote at that seq is judged against. */
  private checkpoint(doc: ReplayDoc, kind: CutKind | null): void {
    const pcrs = this.livePcrs(doc);
    const cut = cutAt(doc, doc.nextSeq, pcrsToJson(pcrs), kind);
    this.emitCheckpoint(doc.bootId, doc.nextSeq, doc.schemes, pcrs, cut);
  }

  private livePcrs(doc: ReplayDoc): Checkpoint['pcrs'] {
    const replay = this.pcrs(doc);
    return doc.schemes.flatMap((s) => flattenPcrs(s, replay.values(s)));
  }

  /** One checkpoint per (boot, seq) in a batch: a second one (now with its cut kind) replaces it. */
  private emitCheckpoint(
    bootId: string,
    seq: number,
    schemes: readonly Scheme[],
    pcrs: Checkpoint['pcrs'],
    cut: ShardCut | null,
  ): void {
    const checkpoint: Checkpoint = {
      hostId: this.input.hostId,
      bootId,
      seq,
      pcrs,
      schemes: [...schemes],
      at: this.input.now,
    };
    const same = (e: ReplayEffect) =>
      e.kind === 'checkpoint' && e.checkpoint.bootId === bootId && e.checkpoint.seq === seq;
    const at = this.effects.findIndex(same);
    if (at >= 0) this.effects.splice(at, 1);
    this.effects.push({ kind: 'checkpoint', checkpoint, cut });
    // The checkpoint is stored with the state, where the quote-checker's join looks for it.
    this.changed = true;
  }

  /**
   * The doc an event of (bootId, seq) applies to, or null when the event belongs to a boot left
   * behind. An event of an unknown boot starts that boot, as a cold boot would; with no state at
   * all part-way into a boot, the state was lost and REPLAY_STATE_LOST says so.
   */
  private current(bootId: string, seq: number): ReplayDoc | null {
    const doc = this.doc;
    if (doc !== null && doc.bootId === bootId) return doc;
    if (doc?.pastBoots.includes(bootId)) {
      this.skipped++;
      return null;
    }
    if (doc === null && seq > 0) this.stateLost(bootId, seq);

    return this.startBoot(bootId);
  }

  private stateLost(bootId: string, seq: number): void {
    this.alert({
      kind: 'REPLAY_STATE_LOST',
      hostId: this.input.hostId,
      bootId,
      seq,
      message: `${this.input.hostId} boot ${bootId}: no replay state at seq ${seq}; asking for the boot's records again`,
    });
  }

  private startBoot(bootId: string): ReplayDoc {
    const old = this.doc;
    const pastBoots = old === null ? [] : [old.bootId, ...old.pastBoots].slice(0, PAST_BOOTS_KEPT);
    this.replay = new PcrReplay(this.input.banks === undefined ? {} : { banks: [...this.input.banks] });
    this.doc = freshDoc(bootId, pastBoots, this.input.now);
    this.changed = true;

    return this.doc;
  }

  /** The running PCRs, deserialised once per batch. */
  private pcrs(doc: ReplayDoc): PcrReplay {
    this.replay ??= PcrReplay.fromState(doc.replay);
    return this.replay;
  }

  private alert(f: Omit<Parameters<typeof makeAlert>[0], 'at'>): void {
    this.effects.push({ kind: 'alert', alert: makeAlert({ ...f, at: this.input.now }) });
  }
}

function seqKey(bootId: string, seq: number): string {
  return `${bootId}/${seq}`;
}

/** The seqs a batch's QuoteTakens and quoted SnapshotEvents name, per boot. */
function namedSeqs(events: readonly MeasurementEvent[]): Set<string> {
  const named = new Set<string>();
  for (const ev of events) {
    if (ev.type === 'QuoteTaken' || (ev.type === 'SnapshotEvent' && ev.value.quoteId !== null)) {
      named.add(seqKey(ev.value.bootId, ev.value.seq));
    }
  }
  return named;
}
