import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { hasCode, isImastreamError } from '../../../lib/errors.ts';
import { hash } from '../../../lib/hash.ts';
import { decodeShard, sniffShard } from '../../../lib/shard/decode.ts';
import { computeShardDigest, encodeShard, SHARD_DIGEST_SIZE } from '../../../lib/shard/format.ts';
import { buildChain } from './fixtures.ts';

/** Recomputes the trailing digest, so a test reaches the structural checks behind it. */
function reseal(file: Uint8Array): Uint8Array {
  const out = file.slice();
  out.set(computeShardDigest(out), out.byteLength - SHARD_DIGEST_SIZE);
  return out;
}

describe('sealed shard format', () => {
  const { shards, files } = buildChain({ records: 6, cut: 3 });
  const shard = shards[1]!;
  const file = files[1]!;

  it('round-trips every field', () => {
    const back = decodeShard(file);
    assert.deepEqual(back, shard);
    assert.deepEqual(encodeShard(back), file);
  });

  it('ends with the SHA-256 of every preceding byte', () => {
    const body = file.subarray(0, file.byteLength - 32);
    assert.deepEqual(file.subarray(file.byteLength - 32), hash('sha256', body));
  });

  it('detects a change to any single byte', () => {
    for (let at = 0; at < file.byteLength; at++) {
      const bad = file.slice();
      bad[at] = (bad[at] as number) ^ 0x01;
      assert.throws(
        () => decodeShard(bad),
        (err) => hasCode(err, 'IMS_SHARD_CORRUPT', 'IMS_SHARD_BAD_FORMAT'),
        `byte ${at} changed but the shard decoded`,
      );
    }
  });

  it('detects every other value of a byte, on a sample of positions', () => {
    for (let at = 0; at < file.byteLength; at += 37) {
      for (let v = 0; v < 256; v++) {
        if (v === file[at]) continue;
        const bad = file.slice();
        bad[at] = v;
        assert.throws(() => decodeShard(bad), isImastreamError, `byte ${at} = ${v}`);
      }
    }
  });

  it('rejects truncation and trailing bytes', () => {
    for (const n of [0, 5, 16, file.byteLength - 1]) {
      assert.throws(
        () => decodeShard(file.subarray(0, n)),
        (e) => hasCode(e, 'IMS_SHARD_BAD_FORMAT'),
      );
    }
    const longer = new Uint8Array(file.byteLength + 1);
    longer.set(file);
    assert.throws(
      () => decodeShard(longer),
      (e) => hasCode(e, 'IMS_SHARD_BAD_FORMAT'),
    );
  });

  it('tells a file that is not a shard from a corrupt one', () => {
    assert.throws(() => sniffShard(new TextEncoder().encode('hello world, not a shard')), /bad magic/);
    assert.equal(sniffShard(file).version, 1);
  });

  it('checks structure even when the digest is valid (hostile encoder)', () => {
    // Record count (u32) in the RECORDS section claims far more records than the bytes hold.
    const body = file.slice();
    const countAt = findRecordsCount(body);
    new DataView(body.buffer).setUint32(countAt, 0x00ffffff);
    assert.throws(
      () => decodeShard(reseal(body)),
      (e) => hasCode(e, 'IMS_SHARD_BAD_FORMAT'),
    );
  });

  it('refuses a record count that disagrees with the seq range', () => {
    const wrong = { ...shard, endSeq: shard.endSeq + 1, records: [...shard.records, shard.records[0]!] };
    const sealed = encodeShard(wrong);
    const view = new DataView(sealed.buffer);
    // endSeq sits right after the two ids in the header; rewrite it back and reseal.
    const endSeqAt = 16 + 6 + 1 + shard.hostId.length + 1 + shard.bootId.length + 8;
    view.setBigUint64(endSeqAt, BigInt(shard.endSeq));
    assert.throws(() => decodeShard(reseal(sealed)), /records for seq/);
  });

  it('never throws anything but an imastream error on random input', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), fc.boolean(), (bytes, withMagic) => {
        const input = withMagic ? reseal(withPreamble(bytes)) : bytes;
        try {
          decodeShard(input);
        } catch (err) {
          assert.ok(isImastreamError(err), String(err));
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('never throws anything but an imastream error when resealed after a random mutation', () => {
    fc.assert(
      fc.property(fc.nat(file.byteLength - 33), fc.integer({ min: 0, max: 255 }), (at, v) => {
        const bad = file.slice();
        bad[at] = v;
        try {
          decodeShard(reseal(bad));
        } catch (err) {
          assert.ok(isImastreamError(err), String(err));
        }
      }),
      { numRuns: 3000 },
    );
  });

  it('refuses to encode a shard that would not decode', () => {
    assert.throws(() => encodeShard({ ...shard, endSeq: shard.endSeq + 5 }), RangeError);
    assert.throws(() => encodeShard({ ...shard, hostId: '' }), RangeError);
  });
});

/** `IMSSHARD` v1, flags 0, the right length, then `bytes`, then room for the digest. */
function withPreamble(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(16 + bytes.byteLength + 32);
  out.set(new TextEncoder().encode('IMSSHARD'));
  const view = new DataView(out.buffer);
  view.setUint16(8, 1);
  view.setUint32(12, out.byteLength);
  out.set(bytes, 16);
  return out;
}

/** Offset of the RECORDS section's count: walk the section headers (tag u16, length u32). */
function findRecordsCount(file: Uint8Array): number {
  const view = new DataView(file.buffer, file.byteOffset);
  let at = 16;
  for (;;) {
    const tag = view.getUint16(at);
    const length = view.getUint32(at + 2);
    if (tag === 3) return at + 6 + 2 + 1;
    at += 6 + length;
  }
}
