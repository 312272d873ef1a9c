import { fromHex, toHex } from '../../lib/bytes/hex.ts';
import { parseSchemePin, type SchemePin } from '../replayer/doc.ts';
import { hostKeys, JOIN_TTL_SECONDS } from '../replayer/keys.ts';
import { LuaScript, type RedisClient } from '../replayer/lua.ts';
import type { PcrValueJson } from '../replayer/pcrs.ts';
import type { Enrollment, NonceEpoch } from '../shared/records.ts';
import type { EnrolledAk, LastQuote } from './judge.ts';
import type { IssuedNonce } from './nonce-window.ts';
import type { ClosedShard } from './verdict.ts';

/** Fleet-wide nonce epochs (sorted set by epoch); not a host key. */
export const NONCE_EPOCHS_KEY = 'imastream:nonce-epochs';
/** Joins waiting for their other half, scored by deadline (sorted set); not a host key. */
export const PENDING_JOINS_KEY = 'imastream:pending-joins';

const EPOCHS_KEPT = 16;
const RECENT_SHARDS_KEPT = 100;
/** How long a challenge nonce stays acceptable. */
const CHALLENGE_TTL_MS = 10 * 60_000;
/** How long a quote's signed bytes are remembered, to catch it replayed. */
const SEEN_QUOTES_TTL_SECONDS = 8 * 24 * 3600;

/** A verified quote waiting for its checkpoint, as parked in Redis. */
export interface ParkedQuote {
  quoteId: string;
  hashAlg: string;
  /** TPMS_ATTEST hex, for the digest fallback when no PCR values were shipped; in the verdict. */
  attest: string;
  quoted: PcrValueJson[] | null;
  /** TPMT_SIGNATURE, AK name and nonce (hex), carried in the verdict; absent in quotes parked by older builds. */
  signature?: string;
  akName?: string;
  nonce?: string;
}

export type JoinResult =
  | { state: 'parked' | 'wait' | 'done' | 'busy' }
  | { state: 'join'; quote: ParkedQuote; checkpoint?: string };

/**
 * A checkpoint's arrival at the join: `cut` (no quote yet; this caller holds the join's lease
 * while it announces the cut), `join` (the quote is parked), `done` or `busy`. `stored` is the
 * replayer's copy of the checkpoint (with its `cut`), '' when it expired; `newest` says whether no
 * later cut of the host was seen before (only then does the next shard open).
 */
export type CutResult =
  | { state: 'busy'; stored: string }
  | { state: 'done'; stored: string; verdict: Buffer | null; quote: ParkedQuote | null }
  | { state: 'cut'; stored: string; newest: boolean }
  | { state: 'join'; stored: string; newest: boolean; quote: ParkedQuote };

/**
 * Parks a verified quote and claims the join when its checkpoint is already stored. The claim is
 * a lease: a claimer that dies before recording the verdict loses it after `leaseMs`, and the
 * redelivered message claims again. KEYS: quote, ckpt. ARGV: parked, ttl, now, leaseUntil, token.
 */
const PARK_QUOTE = new LuaScript(`
redis.call('HSETNX', KEYS[1], 'quote', ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
if redis.call('HGET', KEYS[1], 'done') then return {'done'} end
local ckpt = redis.call('GET', KEYS[2])
if not ckpt then return {'parked'} end
local holder = redis.call('HGET', KEYS[1], 'lease')
local untilMs = tonumber(redis.call('HGET', KEYS[1], 'leaseUntil') or '0')
if holder and holder ~= ARGV[5] and untilMs > tonumber(ARGV[3]) then return {'busy'} end
redis.call('HSET', KEYS[1], 'lease', ARGV[5], 'leaseUntil', ARGV[4])
return {'join', redis.call('HGET', KEYS[1], 'quote'), ckpt}
`);

/**
 * A checkpoint arrives. Claims the join's lease even when the quote is not parked yet, so that a
 * quote arriving while the CUT state is being published finds the join busy and leaves it to
 * this caller (which then rejoins): the CUT can never land after the shard's CLOSED or FAILED.
 * Also records the host's newest cut. KEYS: quote, ckpt, cut. ARGV: now, leaseUntil, token,
 * bootId, seq, ttl.
 */
const CUT_CHECKPOINT = new LuaScript(`
local stored = redis.call('GET', KEYS[2]) or ''
if redis.call('HGET', KEYS[1], 'done') then
  return {'done', stored, redis.call('HGET', KEYS[1], 'verdict') or '', redis.call('HGET', KEYS[1], 'quote') or ''}
end
local holder = redis.call('HGET', KEYS[1], 'lease')
local untilMs = tonumber(redis.call('HGET', KEYS[1], 'leaseUntil') or '0')
if holder and holder ~= ARGV[3] and untilMs > tonumber(ARGV[1]) then return {'busy', stored} end
local newest = '1'
local cur = redis.call('GET', KEYS[3])
if cur then
  local c = cjson.decode(cur)
  if c.bootId == ARGV[4] and tonumber(c.seq) >= tonumber(ARGV[5]) then newest = '0' end
end
if newest == '1' then redis.call('SET', KEYS[3], cjson.encode({bootId = ARGV[4], seq = tonumber(ARGV[5])})) end
redis.call('HSET', KEYS[1], 'lease', ARGV[3], 'leaseUntil', ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
local q = redis.call('HGET', KEYS[1], 'quote')
if q then return {'join', stored, newest, q} end
return {'cut', stored, newest}
`);

/**
 * The deadline sweep's claim on an overdue join: the lease, unless the join is done, taken by
 * another, or its quote is already parked (then it is joining). KEYS: quote. ARGV: now,
 * leaseUntil, token. Returns 'claimed', 'done', 'busy' or 'quoted'.
 */
const CLAIM_OVERDUE = new LuaScript(`
if redis.call('HGET', KEYS[1], 'done') then return 'done' end
local holder = redis.call('HGET', KEYS[1], 'lease')
local untilMs = tonumber(redis.call('HGET', KEYS[1], 'leaseUntil') or '0')
if holder and holder ~= ARGV[3] and untilMs > tonumber(ARGV[1]) then return 'busy' end
if redis.call('HGET', KEYS[1], 'quote') then return 'quoted' end
redis.call('HSET', KEYS[1], 'lease', ARGV[3], 'leaseUntil', ARGV[2])
return 'claimed'
`);

/**
 * The checkpoint side of the join, after the CUT was announced: joins when the quote came
 * meanwhile, else gives the lease back. KEYS: quote. ARGV: now, leaseUntil, token.
 */
const JOIN_CHECKPOINT = new LuaScript(`
if redis.call('HGET', KEYS[1], 'done') then return {'done'} end
local holder = redis.call('HGET', KEYS[1], 'lease')
local untilMs = tonumber(redis.call('HGET', KEYS[1], 'leaseUntil') or '0')
if holder and holder ~= ARGV[3] and untilMs > tonumber(ARGV[1]) then return {'busy'} end
local q = redis.call('HGET', KEYS[1], 'quote')
if not q then
  if holder == ARGV[3] then redis.call('HDEL', KEYS[1], 'lease', 'leaseUntil') end
  return {'wait'}
end
redis.call('HSET', KEYS[1], 'lease', ARGV[3], 'leaseUntil', ARGV[2])
return {'join', q}
`);

const RELABEL = new LuaScript(`
if redis.call('HGET', KEYS[1], 'done') then redis.call('HSET', KEYS[1], 'verdict', ARGV[1]) end
return 1
`);

/**
 * Records a produced verdict: marks the join done, keeps it in the host's recent shards, and for a
 * closed shard moves the closed end forward (never back) and pins the scheme.
 * The verdict itself (framed Avro, base64) stays with the join, for a cut kind learnt later.
 * KEYS: quote, shards, closed, scheme. ARGV: summary, closedJson|'', bootId, endSeq, pinJson|'', kept, verdict.
 */
const RECORD_VERDICT = new LuaScript(`
redis.call('HSET', KEYS[1], 'done', '1', 'verdict', ARGV[7])
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[6]) - 1)
if ARGV[2] == '' then return 1 end
local cur = redis.call('GET', KEYS[3])
if cur then
  local c = cjson.decode(cur)
  if c.bootId == ARGV[3] and tonumber(c.endSeq) >= tonumber(ARGV[4]) then return 1 end
end
redis.call('SET', KEYS[3], ARGV[2])
redis.call('SET', KEYS[4], ARGV[5])
return 1
`);

/** h:{host}:enrollment as JSON (hex bytes). */
interface StoredEnrollment {
  akPublic: string;
  akName: string;
  status: string;
  policy?: unknown;
  at?: number;
  previous?: { akPublic: string; akName: string; policy?: unknown; until: number } | null;
}

/** The quote-checker's view of Redis. */
export class QuoteStore {
  constructor(private readonly redis: RedisClient) {}

  async enrollment(hostId: string): Promise<EnrolledAk | null> {
    const raw = await this.redis.get(hostKeys.enrollment(hostId));
    if (raw === null) return null;
    const e = JSON.parse(raw) as StoredEnrollment;
    const policy = typeof e.policy === 'string' ? e.policy : null;
    const p = e.previous;
    const previous =
      p === undefined || p === null
        ? null
        : {
            akPublic: fromHex(p.akPublic),
            akName: fromHex(p.akName),
            policy: typeof p.policy === 'string' ? p.policy : null,
            until: p.until,
          };

    return { akPublic: fromHex(e.akPublic), akName: fromHex(e.akName), status: e.status, policy, previous };
  }

  /**
   * Stores the host's enrolment. When an active enrolment replaces another active AK, the old AK
   * is kept as `previous` until `e.at + overlapMs` (judge.ts accepts it until then); a revocation
   * keeps nothing. A redelivered record (same AK) keeps the overlap it had.
   */
  async saveEnrollment(e: Enrollment, overlapMs = 0): Promise<void> {
    const key = hostKeys.enrollment(e.hostId);
    const raw = await this.redis.get(key);
    const held = raw === null ? null : (JSON.parse(raw) as StoredEnrollment);
    if (held !== null && typeof held.at === 'number' && held.at > e.at) return; // older than what we hold
    const akName = toHex(e.akName);
    let previous: StoredEnrollment['previous'] = null;
    if (held !== null && e.status === 'active') {
      if (held.akName === akName) previous = held.previous ?? null;
      else if (held.status === 'active' && overlapMs > 0) {
        previous = {
          akPublic: held.akPublic,
          akName: held.akName,
          policy: held.policy,
          until: e.at + overlapMs,
        };
      }
    }
    const json: StoredEnrollment = {
      akPublic: toHex(e.akPublic),
      akName,
      status: e.status,
      policy: e.policy,
      at: e.at,
      previous,
    };
    await this.redis.set(key, JSON.stringify(json));
  }

  async saveNonceEpoch(n: NonceEpoch): Promise<void> {
    const json = JSON.stringify({ epoch: n.epoch, nonce: toHex(n.nonce), validUntil: n.validUntil });
    await this.redis
      .multi()
      .zremrangebyscore(NONCE_EPOCHS_KEY, n.epoch, n.epoch)
      .zadd(NONCE_EPOCHS_KEY, n.epoch, json)
      .zremrangebyrank(NONCE_EPOCHS_KEY, 0, -EPOCHS_KEPT - 1)
      .exec();
  }

  async saveChallenge(hostId: string, requestId: string, nonce: Uint8Array, at: number): Promise<void> {
    const key = hostKeys.challenges(hostId);
    await this.redis
      .multi()
      .zadd(key, at, JSON.stringify({ requestId, nonce: toHex(nonce) }))
      .zremrangebyscore(key, 0, at - CHALLENGE_TTL_MS)
      .pexpire(key, CHALLENGE_TTL_MS)
      .exec();
  }

  /** Nonce epochs (newest first) and the host's challenges still pending. */
  async nonces(hostId: string, now: number): Promise<{ epochs: IssuedNonce[]; challenges: IssuedNonce[] }> {
    const [epochs, challenges] = await Promise.all([
      this.redis.zrevrange(NONCE_EPOCHS_KEY, 0, EPOCHS_KEPT - 1),
      this.redis.zrangebyscore(hostKeys.challenges(hostId), now - CHALLENGE_TTL_MS, '+inf'),
    ]);
    const parse = (s: string) =>
      JSON.parse(s) as { epoch?: number; requestId?: string; nonce: string; validUntil?: number };

    return {
      epochs: epochs.map(parse).map((e) => ({
        nonce: fromHex(e.nonce),
        epoch: e.epoch ?? null,
        ...(typeof e.validUntil === 'number' ? { validUntil: e.validUntil } : {}),
      })),
      challenges: challenges
        .map(parse)
        .map((c) => ({ nonce: fromHex(c.nonce), epoch: null, requestId: c.requestId ?? '' })),
    };
  }

  async lastQuote(hostId: string): Promise<LastQuote | null> {
    const raw = await this.redis.get(hostKeys.quoteLast(hostId));
    return raw === null ? null : (JSON.parse(raw) as LastQuote);
  }

  /** Where these signed bytes were first accepted, if they were. */
  async seenAt(hostId: string, attestHash: string): Promise<string | null> {
    return this.redis.hget(hostKeys.quoteIds(hostId), attestHash);
  }

  /** Remembers an accepted quote: its clock for the counter rules, its bytes against replay. */
  async saveAccepted(hostId: string, last: LastQuote, position: string): Promise<void> {
    const ids = hostKeys.quoteIds(hostId);
    await this.redis
      .multi()
      .set(hostKeys.quoteLast(hostId), JSON.stringify(last))
      .hsetnx(ids, last.attestHash, position)
      .expire(ids, SEEN_QUOTES_TTL_SECONDS)
      .exec();
  }

  async parkQuote(
    hostId: string,
    bootId: string,
    seq: number,
    parked: ParkedQuote,
    lease: Lease,
  ): Promise<JoinResult> {
    const keys = [hostKeys.quote(hostId, bootId, seq), hostKeys.ckpt(hostId, bootId, seq)];
    const args = [JSON.stringify(parked), JOIN_TTL_SECONDS, lease.now, lease.now + lease.ms, lease.token];

    return joinResult(await PARK_QUOTE.run(this.redis, keys, args));
  }

  /** A checkpoint arrives (CUT_CHECKPOINT). */
  async cutCheckpoint(hostId: string, bootId: string, seq: number, lease: Lease): Promise<CutResult> {
    const keys = [
      hostKeys.quote(hostId, bootId, seq),
      hostKeys.ckpt(hostId, bootId, seq),
      hostKeys.cut(hostId),
    ];
    const args = [lease.now, lease.now + lease.ms, lease.token, bootId, seq, JOIN_TTL_SECONDS];
    const [state, stored, third, quote] = (await CUT_CHECKPOINT.run(this.redis, keys, args)) as string[];
    if (state === 'busy') return { state, stored: stored ?? '' };
    if (state === 'done') {
      const verdict = third ? Buffer.from(third, 'base64') : null;
      return {
        state,
        stored: stored ?? '',
        verdict,
        quote: quote ? (JSON.parse(quote) as ParkedQuote) : null,
      };
    }
    if (state === 'cut') return { state, stored: stored ?? '', newest: third === '1' };

    return { state: 'join', stored: stored ?? '', newest: third === '1', quote: JSON.parse(quote!) };
  }

  /**
   * Replaces the verdict kept with a done join (the same shard, now labelled with its cut kind),
   * unless it is gone. KEYS: quote. ARGV: verdict.
   */
  async relabelVerdict(hostId: string, bootId: string, seq: number, verdict: Buffer): Promise<void> {
    await RELABEL.run(this.redis, [hostKeys.quote(hostId, bootId, seq)], [verdict.toString('base64')]);
  }

  /**
   * Claims an overdue join for its FAILED state (CLAIM_OVERDUE): held like the CUT's lease, so a
   * quote arriving meanwhile leaves the join to the sweeper, whose judged state then comes last.
   */
  async claimOverdue(
    hostId: string,
    bootId: string,
    seq: number,
    lease: Lease,
  ): Promise<'claimed' | 'done' | 'busy' | 'quoted'> {
    const keys = [hostKeys.quote(hostId, bootId, seq)];
    const reply = await CLAIM_OVERDUE.run(this.redis, keys, [lease.now, lease.now + lease.ms, lease.token]);

    return reply as 'claimed' | 'done' | 'busy' | 'quoted';
  }

  /** The replayer's stored checkpoint (with its cut), or null once expired. */
  async storedCheckpoint(hostId: string, bootId: string, seq: number): Promise<string | null> {
    return this.redis.get(hostKeys.ckpt(hostId, bootId, seq));
  }

  async joinCheckpoint(hostId: string, bootId: string, seq: number, lease: Lease): Promise<JoinResult> {
    const keys = [hostKeys.quote(hostId, bootId, seq)];

    return joinResult(
      await JOIN_CHECKPOINT.run(this.redis, keys, [lease.now, lease.now + lease.ms, lease.token]),
    );
  }

  /** The scheme a verified quote pinned for the host, if any. */
  async pin(hostId: string): Promise<SchemePin | null> {
    return parseSchemePin(await this.redis.get(hostKeys.scheme(hostId)));
  }

  async closed(hostId: string): Promise<ClosedShard | null> {
    const raw = await this.redis.get(hostKeys.closed(hostId));
    return raw === null ? null : (JSON.parse(raw) as ClosedShard);
  }

  /**
   * The snapshot_aggregate start of the host's replay, while unconfirmed, as a start point: the
   * replayer's doc (`h:{host}:replay`) is read, never written, here.
   */
  async snapshotAnchor(hostId: string): Promise<ClosedShard | null> {
    const raw = await this.redis.get(hostKeys.replay(hostId));
    if (raw === null) return null;
    try {
      const d = JSON.parse(raw) as { bootId?: unknown; unverifiedFrom?: unknown; startPcrs?: unknown };
      if (typeof d.bootId !== 'string' || !Number.isSafeInteger(d.unverifiedFrom)) return null;
      if (!Array.isArray(d.startPcrs)) return null;
      const endPcrs = d.startPcrs as PcrValueJson[];
      return { bootId: d.bootId, endSeq: d.unverifiedFrom as number, scheme: 'snapshot', endPcrs };
    } catch {
      return null;
    }
  }

  async recordVerdict(
    at: { hostId: string; bootId: string; seq: number },
    summary: object,
    closed: ClosedShard | null,
    pin: object | null,
    verdict: Buffer,
  ): Promise<void> {
    const { hostId, bootId, seq } = at;
    const keys = [hostKeys.quote(hostId, bootId, seq), hostKeys.shards(hostId), hostKeys.closed(hostId)];
    keys.push(hostKeys.scheme(hostId));
    const args = [JSON.stringify(summary), closed === null ? '' : JSON.stringify(closed), bootId, seq];
    await RECORD_VERDICT.run(this.redis, keys, [
      ...args,
      pin === null ? '' : JSON.stringify(pin),
      RECENT_SHARDS_KEPT,
      verdict.toString('base64'),
    ]);
    await this.redis.zrem(PENDING_JOINS_KEY, pendingMember(hostId, bootId, seq));
  }

  /**
   * Starts the deadline of a half-arrived join. The earliest deadline stays (LT): a redelivery
   * never postpones it, nor does an instance configured with a longer one.
   */
  async awaitJoin(hostId: string, bootId: string, seq: number, deadline: number): Promise<void> {
    await this.redis.zadd(PENDING_JOINS_KEY, 'LT', deadline, pendingMember(hostId, bootId, seq));
  }

  /** Joins past their deadline that this caller won (ZREM), with whether the join ever completed. */
  async takeOverdue(
    now: number,
    limit = 100,
  ): Promise<{ hostId: string; bootId: string; seq: number; done: boolean }[]> {
    const members = await this.redis.zrangebyscore(PENDING_JOINS_KEY, 0, now, 'LIMIT', 0, limit);
    const out = [];
    for (const m of members) {
      if ((await this.redis.zrem(PENDING_JOINS_KEY, m)) !== 1) continue;
      const [hostId, bootId, seq] = JSON.parse(m) as [string, string, number];
      const done = (await this.redis.hget(hostKeys.quote(hostId, bootId, seq), 'done')) !== null;
      out.push({ hostId, bootId, seq, done });
    }

    return out;
  }
}

/** Who holds a join claim, from when, for how long. */
export interface Lease {
  token: string;
  now: number;
  ms: number;
}

function pendingMember(hostId: string, bootId: string, seq: number): string {
  return JSON.stringify([hostId, bootId, seq]);
}

function joinResult(reply: unknown): JoinResult {
  const [state, quote, checkpoint] = reply as [string, string?, string?];
  if (state !== 'join') return { state: state as 'parked' | 'wait' | 'done' | 'busy' };
  const parked = JSON.parse(quote!) as ParkedQuote;

  return checkpoint === undefined ? { state, quote: parked } : { state, quote: parked, checkpoint };
}
