import { createHash } from 'node:crypto';

import type { Cluster, Redis } from 'ioredis';

/** A Redis server or a Redis Cluster: every script here touches one host's keys, one slot. */
export type RedisClient = Redis | Cluster;

/**
 * A Lua script run by its SHA1, loaded on first use and again after a server restart
 * (NOSCRIPT), so the script text crosses the network once per server.
 */
export class LuaScript {
  readonly sha: string;

  constructor(readonly source: string) {
    this.sha = createHash('sha1').update(source).digest('hex');
  }

  async run(
    redis: RedisClient,
    keys: readonly string[],
    args: readonly (string | number)[],
  ): Promise<unknown> {
    try {
      return await redis.evalsha(this.sha, keys.length, ...keys, ...args);
    } catch (err) {
      if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err;
      return redis.eval(this.source, keys.length, ...keys, ...args);
    }
  }
}
