import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { toHex } from '../../../lib/bytes/hex.ts';
import type { PcrValues } from '../../../lib/pcr.ts';
import { computePcrDigest } from '../../../lib/tpm/pcr-digest.ts';

const v = (byte: number, size: number) => new Uint8Array(size).fill(byte);

describe('computePcrDigest', () => {
  const values: PcrValues = new Map([
    ['sha1', new Map([[10, v(0xa1, 20)]])],
    [
      'sha256',
      new Map([
        [0, v(0xb0, 32)],
        [10, v(0xba, 32)],
      ]),
    ],
  ]);

  it('hashes with the signing hash, banks in selection order, PCRs ascending (DOMAIN §4.3)', () => {
    const selection = [
      { bank: 'sha1' as const, pcrs: [10] },
      { bank: 'sha256' as const, pcrs: [10, 0] },
    ];
    const expected = createHash('sha256')
      .update(v(0xa1, 20))
      .update(v(0xb0, 32))
      .update(v(0xba, 32))
      .digest('hex');
    const digest = computePcrDigest(selection, values, 'sha256');
    assert.ok(digest instanceof Uint8Array);
    assert.equal(toHex(digest), expected);

    const sha1 = computePcrDigest(selection, values, 'sha1');
    assert.ok(sha1 instanceof Uint8Array && sha1.byteLength === 20);
  });

  it('bank order matters', () => {
    const a = computePcrDigest(
      [
        { bank: 'sha1', pcrs: [10] },
        { bank: 'sha256', pcrs: [0] },
      ],
      values,
      'sha256',
    );
    const b = computePcrDigest(
      [
        { bank: 'sha256', pcrs: [0] },
        { bank: 'sha1', pcrs: [10] },
      ],
      values,
      'sha256',
    );
    assert.notEqual(toHex(a as Uint8Array), toHex(b as Uint8Array));
  });

  it('lists every selected PCR without a value, including unknown banks', () => {
    const result = computePcrDigest(
      [
        { bank: 'sha256', pcrs: [0, 7, 10] },
        { bank: 0x27, pcrs: [10] },
        { bank: 'sha384', pcrs: [10] },
      ],
      values,
      'sha256',
    );
    assert.deepEqual(result, {
      missing: [
        { bank: 'sha256', pcr: 7 },
        { bank: 0x27, pcr: 10 },
        { bank: 'sha384', pcr: 10 },
      ],
    });
  });

  it('an empty selection is the hash of nothing', () => {
    assert.equal(toHex(computePcrDigest([], values, 'sha1') as Uint8Array), createHash('sha1').digest('hex'));
  });
});
