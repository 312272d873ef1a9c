import { checkKeyPart, redisKeys } from '../shared/redis.ts';

const host = (hostId: string) => `h:{${checkKeyPart('hostId', hostId)}}`;

/**
 * Redis keys of one host (docs/contract.md), the shared ones from services/shared/redis.ts plus those
 * only the replayer and the quote-checker use. Key parts come from messages, so they are checked
 * (IMS_REDIS_BAD_KEY). The `{hostId}` hash tag puts all of a host's keys in one
 * Redis Cluster slot, so one Lua script may touch several of them.
 */
export const hostKeys = {
  replay: redisKeys.replay,
  ckpt: redisKeys.checkpoint,
  quote: redisKeys.quote,
  shards: redisKeys.shards,
  quoteLast: redisKeys.quoteLast,
  /** Scheme pinned by a verified quote, honoured by the replayer (JSON {bootId, scheme}). */
  scheme: (hostId: string) => `${host(hostId)}:scheme`,
  /** Effects of the last stored batch not yet known to be produced (transactional outbox). */
  outbox: (hostId: string) => `${host(hostId)}:outbox`,
  /** End of the last closed shard per boot (JSON), for the next verdict's start. */
  closed: (hostId: string) => `${host(hostId)}:closed`,
  /** Newest cut the quote-checker saw (JSON {bootId, seq}): only the newest opens a shard. */
  cut: (hostId: string) => `${host(hostId)}:cut`,
  /** Quote ids already verified, so a replayed quote is caught (set, with a TTL). */
  quoteIds: (hostId: string) => `${host(hostId)}:quote-ids`,
  /** Pending challenge nonces of the host (sorted set by issue time). */
  challenges: (hostId: string) => `${host(hostId)}:challenges`,
  /** AK enrolled to the host (JSON), written from ima.enrollments. */
  enrollment: (hostId: string) => `${host(hostId)}:enrollment`,
};

/** Every key pattern of a host, for tests and tooling that clean a host up. */
export function hostKeyPattern(hostId: string): string {
  return `${host(hostId)}:*`;
}

/** How long a checkpoint or a parked quote waits for its other half. */
export const JOIN_TTL_SECONDS = 24 * 3600;
