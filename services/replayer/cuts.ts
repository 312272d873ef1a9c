import type { CutKind } from '../shared/records.ts';
import type { CutMark, ReplayDoc } from './doc.ts';
import type { PcrValueJson } from './pcrs.ts';

/** Cuts remembered for redeliveries and late SnapshotEvents. */
export const CUTS_KEPT = 8;

/**
 * Where the shard ending at a checkpoint starts, as the replayer fixed it: stored with the
 * checkpoint in Redis (`h:{host}:ckpt:<boot>:<seq>`, field `cut`) for the quote-checker. The
 * values are the replay's, not the TPM's: a quote matching the shard's end confirms them too,
 * since the end is a hash chain through them.
 */
export interface ShardCut {
  startSeq: number;
  /** Null: zeros (the boot's start). */
  startPcrs: PcrValueJson[] | null;
  kind: CutKind | null;
}

/**
 * Fixes the end of the host's current shard at `seq` (a QuoteTaken or SnapshotEvent the replay
 * reached), so shards are cut in seq order by the one writer of the host's state, whatever order
 * their quotes are later judged in. A cut already made at `seq` is returned again (a redelivery,
 * or the SnapshotEvent of a cut whose QuoteTaken came first: it adds the kind). `endPcrs` are the
 * replay's values at `seq`, the next shard's start. Null for a cut behind the last one that the
 * ring no longer remembers: the quote-checker then falls back to its closed-end range.
 */
export function cutAt(
  doc: ReplayDoc,
  seq: number,
  endPcrs: PcrValueJson[],
  kind: CutKind | null,
): ShardCut | null {
  const known = doc.cuts.find((c) => c.seq === seq);
  if (known !== undefined) {
    if (kind === null || known.kind !== null) return shardCut(known);
    const labelled = { ...known, kind };
    doc.cuts = doc.cuts.map((c) => (c === known ? labelled : c));
    return shardCut(labelled);
  }
  if (seq <= doc.shardStart) return null;
  // Only the schemes still live: a pin since the last cut dropped the other.
  const live = (p: PcrValueJson) => (doc.schemes as string[]).includes(p.scheme);
  const startPcrs = doc.cutPcrs === null ? null : doc.cutPcrs.filter(live);
  const mark: CutMark = { seq, startSeq: doc.shardStart, startPcrs, kind };
  doc.cuts = [...doc.cuts, mark].slice(-CUTS_KEPT);
  doc.shardStart = seq;
  doc.cutPcrs = endPcrs;

  return shardCut(mark);
}

function shardCut(m: CutMark): ShardCut {
  return { startSeq: m.startSeq, startPcrs: m.startPcrs, kind: m.kind };
}
