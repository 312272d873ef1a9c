import { makeAlert } from '../alerts/make.ts';
import type { SchemePin } from '../replayer/doc.ts';
import { type PcrValueJson, pcrsFromJson, pcrsToJson } from '../replayer/pcrs.ts';
import type { Alert, Checkpoint, ClosingQuote, PcrValue, Verdict } from '../shared/records.ts';
import type { Comparison } from './compare.ts';
import { type CutInfo, startValues } from './lifecycle.ts';

/** The end of a host's last closed shard: where the next one starts, with its quote-verified PCRs. */
export interface ClosedShard {
  bootId: string;
  endSeq: number;
  scheme: string;
  endPcrs: PcrValueJson[];
}

export interface VerdictInput {
  checkpoint: Checkpoint;
  quoteId: string;
  /** The verified quote's signed bytes, carried in the verdict (null when not kept, e.g. an old parked quote). */
  quote?: ClosingQuote | null;
  /**
   * The shard the replayer cut at the checkpoint (stored with it in Redis). When present it fixes
   * the range and start values; without it the range runs from the last closed end (shardRange).
   */
  cut?: CutInfo | null;
  /** Policy the host's AK was enrolled under, when known. */
  akPolicy?: string | null;
  comparison: Comparison;
  /** Last closed shard of the host, of any boot. */
  closed: ClosedShard | null;
  /** Scheme an earlier quote pinned for the host, if any. */
  pinned?: SchemePin | null;
  now: number;
}

export interface VerdictOutcome {
  verdict: Verdict;
  alerts: Alert[];
  /** The new last closed shard when this one closed. */
  closed: ClosedShard | null;
  /** The scheme the match pinned. */
  pin: SchemePin | null;
}

/**
 * The shard a quote at `seq` judges: from the end of the last closed shard of the same boot (or
 * the boot's start, from zeros) to `seq`. A later quote matching closes everything before it, so
 * a quote at or before the last closed end judges [0, seq) again rather than an empty range.
 */
export function shardRange(
  closed: ClosedShard | null,
  bootId: string,
  seq: number,
): { startSeq: number; endSeq: number } {
  const startSeq = closed !== null && closed.bootId === bootId && closed.endSeq < seq ? closed.endSeq : 0;

  return { startSeq, endSeq: seq };
}

/**
 * Where the shard a quote at (bootId, seq) judges starts: the last closed shard of the boot, else
 * the snapshot_aggregate a replay of the boot started from (the replayer's `unverifiedFrom`, with
 * the claimed values as start PCRs), else null (the boot's start, from zeros).
 */
export function startingPoint(
  closed: ClosedShard | null,
  anchor: ClosedShard | null,
  bootId: string,
  seq: number,
): ClosedShard | null {
  if (closed !== null && closed.bootId === bootId && closed.endSeq < seq) return closed;
  if (anchor !== null && anchor.bootId === bootId && anchor.endSeq < seq) return anchor;

  return closed;
}

/** Builds the verdict of a joined quote and checkpoint, with the PCR_MISMATCH alert of a failure. */
export function buildVerdict(input: VerdictInput): VerdictOutcome {
  const { checkpoint: c, comparison } = input;
  const cut = input.cut ?? null;
  const { startSeq, endSeq } =
    cut === null ? shardRange(input.closed, c.bootId, c.seq) : cutRange(cut, c.seq);
  const scheme = comparison.match ? comparison.scheme : null;
  const endPcrs = scheme === null ? c.pcrs : c.pcrs.filter((p) => p.scheme === scheme);
  const startPcrs =
    cut === null ? startPcrsOf(input.closed, startSeq, endPcrs) : startValues(cut, endPcrs, scheme);
  const verdict: Verdict = {
    hostId: c.hostId,
    bootId: c.bootId,
    shardId: `${c.bootId}:${startSeq}-${endSeq}`,
    startSeq,
    endSeq,
    status: comparison.match ? 'CLOSED' : 'FAILED',
    quoteId: input.quoteId,
    quote: input.quote ?? null,
    scheme,
    startPcrs,
    endPcrs,
    cutKind: cut?.kind ?? null,
    akPolicy: input.akPolicy ?? null,
    reasons: comparison.match ? [] : [comparison.reason],
    at: input.now,
  };
  if (!comparison.match)
    return { verdict, alerts: [mismatchAlert(input, comparison)], closed: null, pin: null };
  const closed = { bootId: c.bootId, endSeq, scheme: comparison.scheme, endPcrs: pcrsToJson(endPcrs) };

  // Only a match no other scheme shares tells which rule the kernel used.
  const matched = comparison.scheme as SchemePin['scheme'];
  const pin = comparison.ambiguous ? null : { bootId: c.bootId, scheme: matched };
  const pinned = input.pinned ?? null;
  const changed =
    pin !== null && pinned !== null && pinned.bootId === pin.bootId && pinned.scheme !== matched;

  return {
    verdict,
    alerts: changed ? [schemeChangedAlert(input, pinned.scheme, matched)] : [],
    closed,
    pin,
  };
}

function cutRange(cut: CutInfo, seq: number): { startSeq: number; endSeq: number } {
  return { startSeq: cut.startSeq, endSeq: seq };
}

/** Within one boot the kernel's extend rule cannot change (DOMAIN.md §2.2): say so when it seems to. */
function schemeChangedAlert(input: VerdictInput, before: string, now: string): Alert {
  const c = input.checkpoint;

  return makeAlert({
    kind: 'SCHEME_CHANGED',
    hostId: c.hostId,
    bootId: c.bootId,
    seq: c.seq,
    key: input.quoteId,
    message: `${c.hostId} boot ${c.bootId}: quote ${input.quoteId} at seq ${c.seq} matched ${now}, earlier quotes ${before}`,
    details: { quoteId: input.quoteId, before, now },
    at: input.now,
  });
}

/** The previous shard's quote-verified end values, or zeros at a boot's start. */
function startPcrsOf(closed: ClosedShard | null, startSeq: number, endPcrs: readonly PcrValue[]): PcrValue[] {
  if (startSeq > 0 && closed !== null) return pcrsFromJson(closed.endPcrs);

  return endPcrs.map((p) => ({ ...p, value: Buffer.alloc(p.value.length) }));
}

function mismatchAlert(input: VerdictInput, comparison: Extract<Comparison, { match: false }>): Alert {
  const c = input.checkpoint;
  const d = comparison.divergence;

  return makeAlert({
    kind: 'PCR_MISMATCH',
    hostId: c.hostId,
    bootId: c.bootId,
    seq: c.seq,
    bank: d?.bank ?? null,
    pcr: d?.pcr ?? null,
    key: input.quoteId,
    message: `${c.hostId} boot ${c.bootId}: replay of records [0, ${c.seq}) disagrees with quote ${input.quoteId}: ${comparison.reason}`,
    details: {
      quoteId: input.quoteId,
      schemes: c.schemes,
      ...(d === null
        ? {}
        : { scheme: d.scheme, quoted: d.quoted.toString('hex'), replayed: d.replayed.toString('hex') }),
    },
    at: input.now,
  });
}
