import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { sha1Into, sha256Extend64, sha256Into } from '../../../lib/ima/fast-hash.ts';

const node = (alg: string, b: Uint8Array) => createHash(alg).update(b).digest('hex');
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

describe('TypeScript SHA-1 / SHA-256 equal node:crypto', () => {
  it('on every length from 0 to 300 bytes (all padding cases)', () => {
    const out = new Uint8Array(32);
    for (let n = 0; n <= 300; n++) {
      const b = Uint8Array.from({ length: n }, (_, i) => (i * 31 + n) & 0xff);
      sha256Into(b, out);
      assert.equal(hex(out), node('sha256', b), `sha256 of ${n} bytes`);
      sha1Into(b, out);
      assert.equal(hex(out.subarray(0, 20)), node('sha1', b), `sha1 of ${n} bytes`);
    }
  });

  it('on random inputs, written at an offset and in place', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 1000 }), fc.integer({ min: 0, max: 8 }), (b, at) => {
        const out = new Uint8Array(at + 32);
        sha256Into(b, out, at);
        assert.equal(hex(out.subarray(at)), node('sha256', b));
        sha1Into(b, out, at);
        assert.equal(hex(out.subarray(at, at + 20)), node('sha1', b));
      }),
      { numRuns: 200 },
    );
  });

  it('sha256Extend64 hashes exactly 64 bytes in place, like a PCR extend', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 64, maxLength: 64 }), (b) => {
        const expected = node('sha256', b);
        const buf = Uint8Array.from(b);
        sha256Extend64(buf);
        assert.equal(hex(buf.subarray(0, 32)), expected);
        assert.deepEqual(buf.subarray(32), b.subarray(32));
      }),
      { numRuns: 200 },
    );
  });
});
