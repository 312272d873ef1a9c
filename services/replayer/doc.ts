import { ImastreamError } from '../../lib/errors.ts';
import type { CutKind } from '../shared/records.ts';
import type { PcrValueJson } from './pcrs.ts';

/** An extend scheme (DOMAIN.md §2.2): per-bank digests, or SHA-1 zero-padded into every bank. */
export type Scheme = 'perbank' | 'padded';

export const ALL_SCHEMES: readonly Scheme[] = ['perbank', 'padded'];

/**
 * ok: replaying; gap: held until a resent range arrives; mismatch: the log contradicts itself;
 * unverified: started from a snapshot_aggregate's claimed PCRs, not yet confirmed by a quote.
 */
export type HostStatus = 'ok' | 'gap' | 'mismatch' | 'unknown' | 'unverified';

/** Records [fromSeq, toSeq) were asked for again; records up to heldTo were seen and dropped meanwhile. */
export interface GapHold {
  fromSeq: number;
  toSeq: number;
  heldTo: number;
}

/** A QuoteTaken seen before the replay reached its seq (the host was held by a gap). */
export interface PendingQuote {
  seq: number;
  quoteId: string;
  /** The agent's cut kind at seq, when a SnapshotEvent announced it (absent for a plain quote). */
  kind?: CutKind | null;
}

/**
 * A cut the replay passed: the shard [startSeq, seq) ended there. Kept in a small ring so a
 * redelivered QuoteTaken, or a SnapshotEvent after its QuoteTaken, gives the same shard again.
 */
export interface CutMark {
  seq: number;
  startSeq: number;
  /** Replayed PCR values at startSeq (every live scheme); null at a boot's start (zeros). */
  startPcrs: PcrValueJson[] | null;
  kind: CutKind | null;
}

/**
 * The PCR values after records [0, seq), kept for the last few seqs of each batch, so a QuoteTaken
 * that arrives after later records can still be checkpointed.
 */
export interface RecentPcrs {
  seq: number;
  schemes: Scheme[];
  pcrs: PcrValueJson[];
}

/**
 * One host's replay state, the JSON at `h:{hostId}:replay` (docs/contract.md). Written only through the
 * compare-and-set in store.ts. The PCR values in `replay` are what the log claims; they prove
 * nothing until a verified quote matches a checkpoint taken from them.
 */
export interface ReplayDoc {
  bootId: string;
  /** Seq of the next record to apply: every record of the boot below it has been extended once. */
  nextSeq: number;
  /** ReplayState of lib/ima/replay.ts: JSON-safe, opaque here. */
  replay: unknown;
  status: HostStatus;
  /** Seq where the current shard starts (the last cut). */
  shardStart: number;
  /** Replayed PCR values at shardStart; null at a boot's start (zeros). */
  cutPcrs: PcrValueJson[] | null;
  /** Newest last: the last cuts (see CutMark). */
  cuts: CutMark[];
  /** Extend schemes still live; one after a quote pinned it. */
  schemes: Scheme[];
  gap: GapHold | null;
  pendingQuotes: PendingQuote[];
  /** Recent boots left behind, so a redelivered old BootEvent does not rewind the host. */
  pastBoots: string[];
  /**
   * Seq of the snapshot_aggregate this replay started from (no state before it), until a quote
   * closes a shard past it; null for a replay from the boot's start or once confirmed.
   */
  unverifiedFrom: number | null;
  /** The claimed PCR values the replay started from at unverifiedFrom (both schemes); null with it. */
  startPcrs: PcrValueJson[] | null;
  /** Newest last: PCR values at recent seqs (a small ring, see RecentPcrs). */
  recent: RecentPcrs[];
  updatedAt: number;
}

/** The scheme a verified quote matched, written by the quote-checker at `h:{hostId}:scheme`. */
/** The state of a boot replayed from its start, from zeros, both schemes live. */
export function freshDoc(bootId: string, pastBoots: string[], now: number): ReplayDoc {
  return {
    bootId,
    nextSeq: 0,
    replay: null,
    status: 'ok',
    shardStart: 0,
    cutPcrs: null,
    cuts: [],
    schemes: [...ALL_SCHEMES],
    gap: null,
    pendingQuotes: [],
    pastBoots,
    unverifiedFrom: null,
    startPcrs: null,
    recent: [],
    updatedAt: now,
  };
}

export interface SchemePin {
  bootId: string;
  scheme: Scheme;
}

function bad(message: string, hostId: string): ImastreamError {
  return new ImastreamError('IMS_REPLAY_BAD_STATE', `replay state of ${hostId}: ${message}`, {
    details: { hostId },
  });
}

function isSeq(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
}

function isScheme(s: unknown): s is Scheme {
  return s === 'perbank' || s === 'padded';
}

/** Parses and checks a stored replay doc; the PCR state itself is checked by PcrReplay.fromState. */
export function parseReplayDoc(json: string, hostId: string): ReplayDoc {
  let d: Partial<ReplayDoc>;
  try {
    d = JSON.parse(json) as Partial<ReplayDoc>;
  } catch {
    throw bad('not JSON', hostId);
  }
  if (typeof d !== 'object' || d === null) throw bad('not an object', hostId);
  if (typeof d.bootId !== 'string' || !isSeq(d.nextSeq) || !isSeq(d.shardStart))
    throw bad('bad position', hostId);
  if (!Array.isArray(d.schemes) || d.schemes.length === 0 || !d.schemes.every(isScheme)) {
    throw bad('bad schemes', hostId);
  }

  return {
    bootId: d.bootId,
    nextSeq: d.nextSeq,
    replay: d.replay,
    status: d.status ?? 'unknown',
    shardStart: d.shardStart,
    schemes: d.schemes,
    gap: d.gap ?? null,
    pendingQuotes: Array.isArray(d.pendingQuotes) ? d.pendingQuotes : [],
    pastBoots: Array.isArray(d.pastBoots) ? d.pastBoots : [],
    unverifiedFrom: isSeq(d.unverifiedFrom) ? d.unverifiedFrom : null,
    startPcrs: Array.isArray(d.startPcrs) ? d.startPcrs : null,
    recent: Array.isArray(d.recent) ? d.recent : [],
    cutPcrs: Array.isArray(d.cutPcrs) ? d.cutPcrs : null,
    cuts: Array.isArray(d.cuts) ? d.cuts : [],
    updatedAt: typeof d.updatedAt === 'number' ? d.updatedAt : 0,
  };
}

/** Parses `h:{hostId}:scheme`; anything unusable is ignored (the pin is an optimisation). */
export function parseSchemePin(json: string | null): SchemePin | null {
  if (json === null) return null;
  try {
    const p = JSON.parse(json) as Partial<SchemePin>;
    return typeof p.bootId === 'string' && isScheme(p.scheme) ? { bootId: p.bootId, scheme: p.scheme } : null;
  } catch {
    return null;
  }
}
