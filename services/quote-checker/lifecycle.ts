import { type PcrValueJson, pcrsFromJson } from '../replayer/pcrs.ts';
import type { Checkpoint, PcrValue, ShardCutKind, Verdict } from '../shared/records.ts';

/**
 * The shard lifecycle states the quote-checker publishes besides the join's CLOSED/FAILED
 * (docs/pipeline.md): OPEN from a cut until the next one, CUT once the replayer fixed the end,
 * FAILED when the end was never attested before the deadline. Every state of a shard goes to
 * ima.verdicts under one key (verdictKey), so on the compacted topic the last state wins.
 */

/**
 * The shard a checkpoint ends, as the replayer cut it (services/replayer/cuts.ts, stored with the
 * checkpoint in Redis). Written by the replayer, read here: Redis is trusted like the replayer.
 */
export interface CutInfo {
  startSeq: number;
  /** Replayed values at startSeq, every live scheme; null = zeros (a boot's start). */
  startPcrs: PcrValueJson[] | null;
  kind: ShardCutKind | null;
}

/** The Kafka key of a verdict: one per shard state history (host and shard id). */
export function verdictKey(v: Pick<Verdict, 'hostId' | 'shardId'>): string {
  return `${v.hostId}/${v.shardId}`;
}

/** Shard id of a shard with a fixed end, or of an open one (`<boot>:<start>-`). */
export function shardIdOf(bootId: string, startSeq: number, endSeq: number | null): string {
  return `${bootId}:${startSeq}-${endSeq ?? ''}`;
}

/**
 * Start values of a cut shard, narrowed to the matched scheme once one matched. Zeros (in the
 * shape of the end values) at a boot's start.
 */
export function startValues(cut: CutInfo, endPcrs: readonly PcrValue[], scheme: string | null): PcrValue[] {
  if (cut.startPcrs === null) return endPcrs.map((p) => ({ ...p, value: Buffer.alloc(p.value.length) }));
  const all = pcrsFromJson(cut.startPcrs);

  return scheme === null ? all : all.filter((p) => p.scheme === scheme);
}

interface StateInput {
  checkpoint: Checkpoint;
  cut: CutInfo;
  akPolicy: string | null;
  now: number;
}

/** CUT: the replayer fixed the shard's end at the checkpoint; its quote is not judged yet. */
export function cutVerdict(input: StateInput): Verdict {
  return fixedEnd(input, 'CUT', []);
}

/** FAILED: the shard's end was cut but no verified quote joined it before the deadline. */
export function deadlineVerdict(input: StateInput & { deadlineMs: number }): Verdict {
  return fixedEnd(input, 'FAILED', [
    `SHARD_DEADLINE: no verified quote joined the checkpoint within ${input.deadlineMs} ms`,
  ]);
}

/** OPEN: the shard that starts at the checkpoint's cut; its end is not known yet. */
export function openVerdict(input: Omit<StateInput, 'cut'>): Verdict {
  const c = input.checkpoint;

  return {
    hostId: c.hostId,
    bootId: c.bootId,
    shardId: shardIdOf(c.bootId, c.seq, null),
    startSeq: c.seq,
    endSeq: null,
    status: 'OPEN',
    quoteId: null,
    quote: null,
    scheme: null,
    startPcrs: c.pcrs,
    endPcrs: [],
    cutKind: null,
    akPolicy: input.akPolicy,
    reasons: [],
    at: input.now,
  };
}

function fixedEnd(input: StateInput, status: 'CUT' | 'FAILED', reasons: string[]): Verdict {
  const { checkpoint: c, cut } = input;

  return {
    hostId: c.hostId,
    bootId: c.bootId,
    shardId: shardIdOf(c.bootId, cut.startSeq, c.seq),
    startSeq: cut.startSeq,
    endSeq: c.seq,
    status,
    quoteId: null,
    quote: null,
    scheme: null,
    startPcrs: startValues(cut, c.pcrs, null),
    endPcrs: c.pcrs,
    cutKind: cut.kind,
    akPolicy: input.akPolicy,
    reasons,
    at: input.now,
  };
}

const CUT_KINDS: ReadonlySet<string> = new Set(['STAGING', 'VIRTUAL', 'SNAPSHOT_AGGREGATE']);

/** Reads the `cut` field of a stored checkpoint; null when absent or not the replayer's shape. */
export function parseCut(raw: unknown, seq: number): CutInfo | null {
  if (typeof raw !== 'object' || raw === null) return null;
  const c = raw as { startSeq?: unknown; startPcrs?: unknown; kind?: unknown };
  if (!Number.isSafeInteger(c.startSeq) || (c.startSeq as number) < 0 || (c.startSeq as number) >= seq)
    return null;
  const startPcrs = Array.isArray(c.startPcrs) ? (c.startPcrs as PcrValueJson[]) : null;
  const kind = typeof c.kind === 'string' && CUT_KINDS.has(c.kind) ? (c.kind as ShardCutKind) : null;

  return { startSeq: c.startSeq as number, startPcrs, kind };
}
