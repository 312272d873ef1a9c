import { isImastreamError } from '../../lib/errors.ts';
import {
  parseSnapshotAggregate,
  type SnapshotAggregate,
  snapshotAggregateData,
} from '../../lib/ima/snapshot-aggregate.ts';
import type { LogRecord } from '../shared/records.ts';

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
