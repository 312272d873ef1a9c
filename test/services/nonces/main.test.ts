import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { NONCE_BYTES, newChallenge, newEpoch } from '../../../services/nonces/main.ts';
import { decodeAs, encode } from '../../../services/shared/codec.ts';

describe('nonce service records', () => {
  it('issues a fresh random nonce per epoch, numbered by issue time', () => {
    const a = newEpoch(1_000, 120_000);
    const b = newEpoch(2_000, 120_000);

    assert.equal(a.nonce.length, NONCE_BYTES);
    assert.notDeepEqual(a.nonce, b.nonce);
    assert.ok(b.epoch > a.epoch);
    assert.deepEqual([a.issuedAt, a.validUntil], [1_000, 121_000]);
    assert.deepEqual({ ...decodeAs('NonceEpoch', encode('NonceEpoch', a)) }, a);
  });

  it('issues a challenge with its own nonce and request id for one host', () => {
    const c = newChallenge('host-1', 5);
    const d = newChallenge('host-1', 5);

    assert.equal(c.hostId, 'host-1');
    assert.notEqual(c.requestId, d.requestId);
    assert.notDeepEqual(c.nonce, d.nonce);
    assert.deepEqual({ ...decodeAs('Challenge', encode('Challenge', c)) }, c);
  });
});
