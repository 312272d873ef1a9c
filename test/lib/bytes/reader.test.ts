import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Reader } from '../../../lib/bytes/reader.ts';
import { hasCode } from '../../../lib/errors.ts';

describe('Reader', () => {
  it('reads integers in both byte orders and tracks its position', () => {
    const r = new Reader(Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    assert.equal(r.u8(), 1);
    assert.equal(r.u16(true), 0x0302);
    assert.equal(r.u16be(), 0x0405);
    assert.equal(r.u32be(), 0x06070809);
    assert.equal(r.position, 9);
    assert.equal(r.remaining, 6);
    assert.equal(r.u32(true), 0x0d0c0b0a);
    assert.throws(
      () => r.u32be(),
      (e) => hasCode(e, 'IMS_BYTES_TRUNCATED'),
    );
    assert.equal(r.position, 13, 'a failed read does not move the cursor');
  });

  it('bytes() returns views and refuses to pass the end, even for huge counts', () => {
    const buf = Uint8Array.of(1, 2, 3, 4);
    const r = new Reader(buf, { start: 1, end: 3 });
    const v = r.bytes(2);
    assert.deepEqual([...v], [2, 3]);
    assert.equal(v.buffer, buf.buffer);
    assert.throws(
      () => new Reader(buf).bytes(2 ** 32),
      (e) => hasCode(e, 'IMS_BYTES_TRUNCATED'),
    );
    assert.throws(
      () => new Reader(buf).skip(5),
      (e) => hasCode(e, 'IMS_BYTES_TRUNCATED'),
    );
  });

  it('tpm2b() checks the size against its cap before the bytes', () => {
    assert.deepEqual([...new Reader(Uint8Array.of(0, 2, 9, 8, 7)).tpm2b(4)], [9, 8]);
    assert.throws(
      () => new Reader(Uint8Array.of(0xff, 0xff)).tpm2b(64),
      (e) => hasCode(e, 'IMS_BYTES_LIMIT') && e.details.offset === 0,
    );
    assert.throws(
      () => new Reader(Uint8Array.of(0, 3, 1)).tpm2b(64),
      (e) => hasCode(e, 'IMS_BYTES_TRUNCATED'),
    );
  });

  it('uses the truncation code a parser asks for', () => {
    const r = new Reader(new Uint8Array(1), { truncatedCode: 'IMS_TPM_TRUNCATED' });
    assert.throws(
      () => r.u16be(),
      (e) => hasCode(e, 'IMS_TPM_TRUNCATED'),
    );
  });

  it('u64 reads as bigint', () => {
    const r = new Reader(Uint8Array.of(0, 0, 0, 0, 0, 0, 1, 0));
    assert.equal(r.u64be(), 256n);
  });
});
