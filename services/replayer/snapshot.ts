import { isImastreamError } from '../../lib/errors.ts';
import type { PcrReplay } from '../../lib/ima/replay.ts';
import {
  checkSnapshotAggregate,
  parseSnapshotAggregate,
  replayFromSnapshot,
  type SnapshotAggregate,
  snapshotAggregateData,
} from '../../lib/ima/snapshot-aggregate.ts';
import type { LogRecord } from '../shared/records.ts';
import type { ReplayDoc } from './doc.ts';

/** What a `snapshot_aggregate` record claims, or why its claim cannot be read. */
export type SnapshotClaim = { ok: true; agg: SnapshotAggregate } | { ok: false; reason: string };

/**
 * The claim of a `snapshot_aggregate` record (2023 RFC, DOMAIN.md §3.1), or undefined for any other
 * record. The record is hostile input like any other: recognising it says nothing about its truth,
 * and a buffer that does not parse is reported, not thrown.
 */
export function snapshotClaim(rec: LogRecord): SnapshotClaim | undefined {
  try {
    const data = snapshotAggregateData(rec, rec.byteOrder === 'LE');
    if (data === undefined) return undefined;

    return { ok: true, agg: parseSnapshotAggregate(data) };
  } catch (err) {
    if (!isImastreamError(err)) throw err;
    return { ok: false, reason: `${err.code}: ${err.message}` };
  }
}

/**
 * Whether a snapshot_aggregate record may start its boot's replay: seq > 0 and nothing of the boot
 * replayed here (no state, a new boot, or the boot's doc still at 0 and held no further than it).
 */
export function mayStartFrom(doc: ReplayDoc | null, rec: LogRecord): boolean {
  if (rec.seq === 0 || doc?.pastBoots.includes(rec.bootId)) return false;
  if (doc === null || doc.bootId !== rec.bootId) return true;

  return doc.nextSeq === 0 && (doc.gap === null || doc.gap.heldTo <= rec.seq + 1);
}

/** A replay from the claimed values, or undefined when the claim has no bank this build can hash. */
export function replayFromClaim(agg: SnapshotAggregate): PcrReplay | undefined {
  try {
    return replayFromSnapshot(agg);
  } catch (err) {
    if (!isImastreamError(err)) throw err;
    return undefined;
  }
}

/** What makes a snapshot claim met mid-replay a SNAPSHOT_MISMATCH. */
export interface SnapshotFinding {
  bank: string | null;
  pcr: number | null;
  scheme: string | null;
  why: string;
  /** Disagreeing (scheme, bank, PCR) values. */
  count: number;
}

/**
 * Compares a claim with the replay of records [0, seq): null when a scheme agrees on every (bank,
 * PCR) both have, or when they share none (nothing to check); else the first disagreement. A
 * claim that cannot be read is a finding without a bank.
 */
export function snapshotFinding(
  replay: PcrReplay,
  claim: SnapshotClaim,
  seq: number,
): SnapshotFinding | null {
  if (!claim.ok) {
    const why = `snapshot_aggregate unreadable (${claim.reason})`;
    return { bank: null, pcr: null, scheme: null, why, count: 0 };
  }
  const check = checkSnapshotAggregate(replay, claim.agg);
  const first = check.mismatches[0];
  if (check.ok || first === undefined) return null;
  const why = `snapshot_aggregate claims ${first.bank} PCR ${first.pcr} = ${first.expected}, replay of records [0, ${seq}) (${first.scheme}) gives ${first.got}`;

  return { bank: first.bank, pcr: first.pcr, scheme: first.scheme, why, count: check.mismatches.length };
}

/** The seq and boot of a host's last quote-closed shard (`h:{host}:closed`, written by the quote-checker). */
export interface ClosedEnd {
  bootId: string;
  endSeq: number;
}

/** Parses `h:{host}:closed`; anything unusable is ignored (it only lifts an `unverified` mark). */
export function parseClosedEnd(json: string | null): ClosedEnd | null {
  if (json === null) return null;
  try {
    const c = JSON.parse(json) as Partial<ClosedEnd>;
    const ok = typeof c.bootId === 'string' && Number.isSafeInteger(c.endSeq);
    return ok ? { bootId: c.bootId!, endSeq: c.endSeq! } : null;
  } catch {
    return null;
  }
}
