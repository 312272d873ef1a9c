/**
 * Redis connections and the key layout of docs/contract.md.
 *
 * Every key of one host carries the hash tag `{hostId}`, so in a Redis Cluster all of a host's keys
 * sit in one slot and one Lua script can touch them together. A hostId or bootId comes from
 * messages (untrusted), so key parts are checked: a brace would move the hash tag, and control
 * characters or unbounded lengths have no business in a key (IMS_REDIS_BAD_KEY).
 */
import { Redis, type RedisOptions } from 'ioredis';

import { ImastreamError } from '../../lib/errors.ts';
import type { Logger } from './logger.ts';

export type { Redis };

export interface CreateRedisOptions {
  url: string;
  logger: Logger;
  /** CLIENT SETNAME, to tell services apart in `CLIENT LIST`. */
  connectionName?: string;
}

/** How often a still-failing connection is logged again. */
const ERROR_LOG_INTERVAL_MS = 30_000;

/**
 * An ioredis client, not yet connected (call `connect()`, or use {@link connectRedis}).
 * - protocol 2: RESP3 support in ioredis 6 is new; RESP2 is what every Redis 7 speaks the same way.
 * - maxRetriesPerRequest 2: while Redis is down a command fails within about a second instead of
 *   queueing for long; the Kafka adapter then retries the whole message with backoff, uncommitted.
 * - reconnects forever with capped backoff; errors are logged at most every 30 s.
 */
export function createRedis({ url, logger, connectionName }: CreateRedisOptions): Redis {
  const options: RedisOptions = {
    protocol: 2,
    lazyConnect: true,
    maxRetriesPerRequest: 2,
    connectTimeout: 5_000,
    retryStrategy: (times) => Math.min(100 * 2 ** Math.min(times, 5), 3_000),
    ...(connectionName ? { connectionName } : {}),
  };
  const redis = new Redis(url, options);

  let lastLogged = 0;
  redis.on('error', (err: Error) => {
    const now = Date.now();
    if (now - lastLogged < ERROR_LOG_INTERVAL_MS) return;
    lastLogged = now;
    logger.error({ err, redis: redis.options.host }, 'redis connection error');
  });
  redis.on('ready', () => logger.info({ redis: redis.options.host }, 'redis ready'));

  return redis;
}

/** Creates a client and waits until it is connected; throws if Redis cannot be reached. */
export async function connectRedis(options: CreateRedisOptions): Promise<Redis> {
  const redis = createRedis(options);
  await redis.connect();

  return redis;
}

const MAX_KEY_PART = 256;

/** Throws IMS_REDIS_BAD_KEY unless `part` can sit inside a key (and a hash tag). */
export function checkKeyPart(what: string, part: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control characters is the point
  if (part.length === 0 || part.length > MAX_KEY_PART || /[{}\s\u0000-\u001f\u007f]/.test(part)) {
    throw new ImastreamError('IMS_REDIS_BAD_KEY', `${what} cannot be part of a Redis key`, {
      details: { [what]: part.slice(0, 64), length: part.length },
    });
  }
  return part;
}

function seqPart(seq: number): string {
  if (!Number.isSafeInteger(seq) || seq < 0) {
    throw new ImastreamError('IMS_REDIS_BAD_KEY', `seq ${seq} is not a non-negative integer`, {
      details: { seq },
    });
  }
  return String(seq);
}

const host = (hostId: string) => `h:{${checkKeyPart('hostId', hostId)}}`;

/** Redis keys of docs/contract.md. All keys of one host share the `{hostId}` hash tag. */
export const redisKeys = {
  /** Replay state JSON; written only by the compare-and-set script. */
  replay: (hostId: string) => `${host(hostId)}:replay`,
  /** Checkpoint JSON at (bootId, seq), TTL 1 day. */
  checkpoint: (hostId: string, bootId: string, seq: number) =>
    `${host(hostId)}:ckpt:${checkKeyPart('bootId', bootId)}:${seqPart(seq)}`,
  /** Parked verified-quote result waiting for its checkpoint. */
  quote: (hostId: string, bootId: string, seq: number) =>
    `${host(hostId)}:quote:${checkKeyPart('bootId', bootId)}:${seqPart(seq)}`,
  /** Recent shard verdicts (list, capped). */
  shards: (hostId: string) => `${host(hostId)}:shards`,
  /** Last verified clockInfo {resetCount, restartCount, clock}. */
  quoteLast: (hostId: string) => `${host(hostId)}:quote-last`,
};

/** The hash tag of a key (what Redis Cluster hashes), or the whole key when it has none. */
export function hashTagOf(key: string): string {
  const open = key.indexOf('{');
  const close = open < 0 ? -1 : key.indexOf('}', open + 1);
  return close > open + 1 ? key.slice(open + 1, close) : key;
}
