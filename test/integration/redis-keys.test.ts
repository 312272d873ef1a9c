/**
 * The Redis connection factory and key helpers against the real Redis of deploy/stack.sh.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { it } from 'node:test';

import { COMMON_SETTINGS, loadConfig } from '../../services/shared/config.ts';
import { connectRedis, createRedis, redisKeys } from '../../services/shared/redis.ts';
import { memoryLogger } from './kafka-helpers.ts';

const { redisUrl } = loadConfig({ redisUrl: COMMON_SETTINGS.redisUrl }, []);

it('connects lazily, speaks RESP2 and names itself', async (t) => {
  const { logger } = memoryLogger();
  const name = `imastream-test-${randomUUID().slice(0, 8)}`;
  const redis = createRedis({ url: redisUrl, logger, connectionName: name });
  t.after(() => redis.quit());

  assert.equal(redis.status, 'wait');
  await redis.connect();
  const info = (await redis.call('CLIENT', 'INFO')) as string;
  assert.match(info, /\bresp=2\b/);
  assert.match(info, new RegExp(`\\bname=${name}\\b`));
});

it('lets one script update several keys of one host atomically', async (t) => {
  const { logger } = memoryLogger();
  const redis = await connectRedis({ url: redisUrl, logger });
  const hostId = `test-${randomUUID().slice(0, 8)}`;
  const keys = [
    redisKeys.replay(hostId),
    redisKeys.checkpoint(hostId, 'boot:1', 10),
    redisKeys.shards(hostId),
  ];
  t.after(async () => {
    await redis.del(...keys);
    await redis.quit();
  });

  // Every key is declared to the script, as Redis Cluster requires; the shared {hostId} tag puts
  // them in one slot.
  const script = `
    redis.call('SET', KEYS[1], ARGV[1])
    redis.call('SET', KEYS[2], ARGV[2], 'EX', 86400)
    redis.call('LPUSH', KEYS[3], ARGV[3])
    redis.call('LTRIM', KEYS[3], 0, 99)
    return 1`;
  await redis.eval(script, 3, ...keys, '{"nextSeq":10}', '{"seq":10}', 'shard-0-10');

  assert.equal(await redis.get(keys[0]!), '{"nextSeq":10}');
  const ttl = await redis.ttl(keys[1]!);
  assert.ok(ttl > 86_000 && ttl <= 86_400, `ttl ${ttl}`);
  assert.deepEqual(await redis.lrange(keys[2]!, 0, -1), ['shard-0-10']);
});

it('fails a command within seconds while Redis is unreachable, instead of hanging', async (t) => {
  const { logger, lines } = memoryLogger();
  const redis = createRedis({ url: 'redis://127.0.0.1:1', logger });
  t.after(() => redis.disconnect());

  await assert.rejects(redis.get('k'), (err: Error) => err.name === 'MaxRetriesPerRequestError');
  assert.equal(
    lines.filter((l) => l.msg === 'redis connection error').length,
    1,
    'errors are logged once per 30 s',
  );
});
