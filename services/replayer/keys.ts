/**
 * Redis keys of one host (PIPELINE.md). The `{hostId}` hash tag puts all of a host's keys in one
 * Redis Cluster slot, so one Lua script may touch several of them.
 */
export const hostKeys = {
  replay: (hostId: string) => `h:{${hostId}}:replay`,
  ckpt: (hostId: string, bootId: string, seq: number) => `h:{${hostId}}:ckpt:${bootId}:${seq}`,
  quote: (hostId: string, bootId: string, seq: number) => `h:{${hostId}}:quote:${bootId}:${seq}`,
  shards: (hostId: string) => `h:{${hostId}}:shards`,
  quoteLast: (hostId: string) => `h:{${hostId}}:quote-last`,
  /** Scheme pinned by a verified quote, honoured by the replayer (JSON {bootId, scheme}). */
  scheme: (hostId: string) => `h:{${hostId}}:scheme`,
  /** Effects of the last stored batch not yet known to be produced (transactional outbox). */
  outbox: (hostId: string) => `h:{${hostId}}:outbox`,
  /** End of the last closed shard per boot (JSON), for the next verdict's start. */
  closed: (hostId: string) => `h:{${hostId}}:closed`,
  /** Quote ids already verified, so a replayed quote is caught (set, with a TTL). */
  quoteIds: (hostId: string) => `h:{${hostId}}:quote-ids`,
  /** AK enrolled to the host (JSON), written from ima.enrollments. */
  enrollment: (hostId: string) => `h:{${hostId}}:enrollment`,
};

/** Every key pattern of a host, for tests and tooling that clean a host up. */
export function hostKeyPattern(hostId: string): string {
  return `h:{${hostId}}:*`;
}

/** How long a checkpoint or a parked quote waits for its other half. */
export const JOIN_TTL_SECONDS = 24 * 3600;
