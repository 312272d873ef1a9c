import type { ExtendScheme } from '../ima/replay.ts';
import type { ReplayMismatch } from './replay-check.ts';

/**
 * Why a shard was not accepted. Stable: verdict records and alerts carry these codes.
 * - SHARD_INTEGRITY: the file fails its digest (a corrupted byte).
 * - SHARD_MALFORMED: the file does not decode (bad structure, even with a valid digest).
 * - SHARD_CHAIN_BREAK: not the continuation of the previous shard (host, boot, seq, digest link).
 * - SHARD_START_MISMATCH: start PCRs are not the previous quoted end, or not zeros + boot_aggregate
 *   at the start of a boot.
 * - SHARD_BAD_RECORD: a raw record does not parse cleanly or its template digest is wrong.
 * - SHARD_REPLAY_MISMATCH: the records do not replay to the closing quote's PCRs.
 * - SHARD_SCHEME_CHANGED: the extend scheme differs from the one pinned earlier in the chain.
 * - SHARD_BAD_QUOTE: the closing quote is malformed, badly signed, lacks the nonce or its PCR
 *   values do not give its pcrDigest (or include a PCR it does not select).
 * - SHARD_UNTRUSTED_AK: signed by another AK than the trusted one or than the chain's.
 * - SHARD_COUNTER_REGRESSION: resetCount changed or is not the bootId's, restartCount or clock
 *   went backwards, or unsafe.
 */
export type ShardFailureCode =
  | 'SHARD_INTEGRITY'
  | 'SHARD_MALFORMED'
  | 'SHARD_CHAIN_BREAK'
  | 'SHARD_START_MISMATCH'
  | 'SHARD_BAD_RECORD'
  | 'SHARD_REPLAY_MISMATCH'
  | 'SHARD_SCHEME_CHANGED'
  | 'SHARD_BAD_QUOTE'
  | 'SHARD_UNTRUSTED_AK'
  | 'SHARD_COUNTER_REGRESSION';

export interface ShardFailure {
  code: ShardFailureCode;
  message: string;
}

/** The verdict on one shard of a chain. */
export interface ShardResult {
  /** Position in the chain given to the verifier. */
  index: number;
  /** `<bootId>:<startSeq>-<endSeq>` when the file decoded (PIPELINE Verdict.shardId). */
  shardId?: string;
  hostId?: string;
  bootId?: string;
  startSeq?: number;
  endSeq?: number;
  /** The file's SHA-256 (hex) as computed, whatever its content. */
  digest: string;
  ok: boolean;
  /** The extend scheme the replay matched with; null when the quoted banks cannot tell. */
  scheme?: ExtendScheme | null;
  failures: ShardFailure[];
  replayMismatches: ReplayMismatch[];
}

/** The verdict on a chain: ok only when every shard is. */
export interface ShardChainVerdict {
  ok: boolean;
  /** True when a caller-given AK signed every quote; otherwise the chain vouches only for itself. */
  akTrusted: boolean;
  /** True when the chain starts at seq 0 of its boot, so its first start state is zeros by rule. */
  anchored: boolean;
  shards: ShardResult[];
}
