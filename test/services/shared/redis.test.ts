import assert from 'node:assert/strict';
import { it } from 'node:test';

import { hasCode } from '../../../lib/errors.ts';
import { checkKeyPart, hashTagOf, redisKeys } from '../../../services/shared/redis.ts';

it('builds the docs/contract.md keys, all tagged with the host', () => {
  const keys = [
    redisKeys.replay('web-1'),
    redisKeys.checkpoint('web-1', 'abc:2', 17),
    redisKeys.quote('web-1', 'abc:2', 17),
    redisKeys.shards('web-1'),
    redisKeys.quoteLast('web-1'),
  ];

  assert.deepEqual(keys, [
    'h:{web-1}:replay',
    'h:{web-1}:ckpt:abc:2:17',
    'h:{web-1}:quote:abc:2:17',
    'h:{web-1}:shards',
    'h:{web-1}:quote-last',
  ]);
  for (const key of keys) assert.equal(hashTagOf(key), 'web-1');
});

it('refuses host and boot ids that would break the hash tag or the key', () => {
  for (const bad of ['', 'a}b', '{x', 'a b', 'tab\there', 'nul\u0000', 'x'.repeat(257)]) {
    assert.throws(
      () => redisKeys.replay(bad),
      (err: unknown) => hasCode(err, 'IMS_REDIS_BAD_KEY'),
      JSON.stringify(bad),
    );
  }
  assert.throws(
    () => redisKeys.checkpoint('h', 'b}', 1),
    (err: unknown) => hasCode(err, 'IMS_REDIS_BAD_KEY'),
  );
});

it('refuses a seq that is not a non-negative safe integer', () => {
  for (const seq of [-1, 1.5, Number.NaN, 2 ** 53]) {
    assert.throws(
      () => redisKeys.quote('h', 'b', seq),
      (err: unknown) => hasCode(err, 'IMS_REDIS_BAD_KEY'),
    );
  }
});

it('accepts the characters real host ids use', () => {
  assert.equal(
    checkKeyPart('hostId', 'node-01.eu-west.example.com:4f3c'),
    'node-01.eu-west.example.com:4f3c',
  );
  assert.equal(hashTagOf('plain-key'), 'plain-key');
});
