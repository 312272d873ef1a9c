import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { bytesEqual, fromHex, isAllZero, toHex } from '../../../lib/bytes/hex.ts';
import { hasCode } from '../../../lib/errors.ts';

describe('hex', () => {
  it('round-trips and accepts a 0x prefix and uppercase', () => {
    assert.equal(toHex(Uint8Array.of(0, 0xab, 0xff)), '00abff');
    assert.deepEqual([...fromHex('00ABff')], [0, 0xab, 0xff]);
    assert.deepEqual([...fromHex('0x0102')], [1, 2]);
    assert.deepEqual([...fromHex('')], []);
    assert.equal(toHex(Uint8Array.of(1, 2, 3).subarray(1)), '0203');
  });

  it('rejects odd lengths and bad characters instead of shortening', () => {
    for (const bad of ['abc', '0g', 'zz', '00 11']) {
      assert.throws(
        () => fromHex(bad),
        (e) => hasCode(e, 'IMS_BYTES_LIMIT'),
        bad,
      );
    }
  });

  it('compares bytes and detects all-zero arrays', () => {
    assert.equal(bytesEqual(Uint8Array.of(1, 2), Uint8Array.of(1, 2)), true);
    assert.equal(bytesEqual(Uint8Array.of(1, 2), Uint8Array.of(1, 3)), false);
    assert.equal(bytesEqual(Uint8Array.of(1), Uint8Array.of(1, 0)), false);
    assert.equal(isAllZero(new Uint8Array(20)), true);
    assert.equal(isAllZero(Uint8Array.of(0, 0, 1)), false);
    assert.equal(isAllZero(new Uint8Array(0)), true);
  });
});
