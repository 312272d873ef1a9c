import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { toHex } from '../../../lib/bytes/hex.ts';
import { hasCode, isImastreamError } from '../../../lib/errors.ts';
import { buildImaBuf, buildImaNg } from '../../../lib/ima/encode.ts';
import { PcrReplay } from '../../../lib/ima/replay.ts';
import {
  checkSnapshotAggregate,
  parseSnapshotAggregate,
  replayFromSnapshot,
  snapshotAggregateData,
} from '../../../lib/ima/snapshot-aggregate.ts';
import { generateLog } from '../../../lib/ima/synthetic.ts';

const enc = (s: string) => new TextEncoder().encode(s);
const hex = (n: number, byte: number) => toHex(new Uint8Array(n).fill(byte));

/** The RFC's shape: attempt count, then every PCR of the banks given. */
function rfcText(count: number, banks: Record<string, Map<number, string>>): string {
  const elements = Object.entries(banks).flatMap(([alg, pcrs]) =>
    [...pcrs].map(([pcr, value]) => `${alg}:PCR${pcr}:0x${value.toUpperCase()}`),
  );
  return `Snapshot_Attempt_Count=${count};${elements.join(',')};`;
}

describe('parseSnapshotAggregate', () => {
  it('parses the RFC example shape', () => {
    const sha256 = new Map(Array.from({ length: 24 }, (_, i) => [i, hex(32, i)] as [number, string]));
    const agg = parseSnapshotAggregate(enc(rfcText(7, { sha256, sha1: new Map([[10, hex(20, 0xab)]]) })));
    assert.equal(agg.attemptCount, 7);
    assert.equal(agg.pcrs.get('sha256')?.size, 24);
    assert.equal(toHex(agg.pcrs.get('sha256')!.get(23)!), hex(32, 23));
    assert.equal(toHex(agg.pcrs.get('sha1')!.get(10)!), hex(20, 0xab));
  });

  it('accepts hex without 0x and one trailing NUL', () => {
    const agg = parseSnapshotAggregate(enc(`Snapshot_Attempt_Count=0;sha1:PCR10:${hex(20, 1)};\0`));
    assert.equal(agg.attemptCount, 0);
  });

  const bad: Record<string, string> = {
    'no prefix': `sha1:PCR10:${hex(20, 1)};`,
    'count not decimal': `Snapshot_Attempt_Count=x;sha1:PCR10:${hex(20, 1)};`,
    'count too long': `Snapshot_Attempt_Count=${'9'.repeat(16)};sha1:PCR10:${hex(20, 1)};`,
    'no elements': 'Snapshot_Attempt_Count=1;',
    'empty list': 'Snapshot_Attempt_Count=1;;',
    'no terminator': `Snapshot_Attempt_Count=1;sha1:PCR10:${hex(20, 1)}`,
    'trailing comma': `Snapshot_Attempt_Count=1;sha1:PCR10:${hex(20, 1)},;`,
    'unknown alg': `Snapshot_Attempt_Count=1;md5:PCR10:${hex(16, 1)};`,
    'pcr 24': `Snapshot_Attempt_Count=1;sha1:PCR24:${hex(20, 1)};`,
    'leading zero pcr': `Snapshot_Attempt_Count=1;sha1:PCR010:${hex(20, 1)};`,
    'short hex': `Snapshot_Attempt_Count=1;sha256:PCR10:${hex(20, 1)};`,
    'long hex': `Snapshot_Attempt_Count=1;sha1:PCR10:${hex(21, 1)};`,
    duplicate: `Snapshot_Attempt_Count=1;sha1:PCR10:${hex(20, 1)},sha1:PCR10:${hex(20, 2)};`,
    'space inside': `Snapshot_Attempt_Count=1;sha1:PCR10: ${hex(20, 1)};`,
    'stray semicolon': `Snapshot_Attempt_Count=1;sha1:PCR9:${hex(20, 1)};sha1:PCR10:${hex(20, 1)};`,
  };
  for (const [name, text] of Object.entries(bad)) {
    it(`rejects: ${name}`, () => {
      assert.throws(
        () => parseSnapshotAggregate(enc(text)),
        (e) => hasCode(e, 'IMS_IMA_BAD_SNAPSHOT_AGGREGATE'),
      );
    });
  }

  it('rejects oversized input before scanning it', () => {
    const huge = new Uint8Array(65 * 1024).fill(0x41);
    assert.throws(() => parseSnapshotAggregate(huge), /exceeds/);
  });

  it('round-trips any valid set of PCR values', () => {
    const bank = (size: number) =>
      fc.uniqueArray(
        fc.tuple(fc.integer({ min: 0, max: 23 }), fc.uint8Array({ minLength: size, maxLength: size })),
        {
          minLength: 1,
          maxLength: 24,
          selector: ([pcr]) => pcr,
        },
      );
    fc.assert(
      fc.property(fc.nat(1e9), bank(20), bank(32), (count, sha1, sha256) => {
        const toMap = (b: [number, Uint8Array][]) =>
          new Map(b.map(([p, v]) => [p, toHex(v)] as [number, string]));
        const agg = parseSnapshotAggregate(enc(rfcText(count, { sha1: toMap(sha1), sha256: toMap(sha256) })));
        assert.equal(agg.attemptCount, count);
        for (const [pcr, v] of sha1) assert.deepEqual(agg.pcrs.get('sha1')!.get(pcr), v);
        for (const [pcr, v] of sha256) assert.deepEqual(agg.pcrs.get('sha256')!.get(pcr), v);
      }),
      { numRuns: 300 },
    );
  });

  it('throws only imastream errors on arbitrary and near-valid input', () => {
    const valid = `Snapshot_Attempt_Count=3;sha1:PCR10:${hex(20, 1)},sha256:PCR10:${hex(32, 2)};`;
    fc.assert(
      fc.property(fc.string({ maxLength: 300 }), fc.nat(valid.length), (junk, at) => {
        for (const text of [junk, valid.slice(0, at) + junk + valid.slice(at)]) {
          try {
            parseSnapshotAggregate(enc(text));
          } catch (err) {
            assert.ok(isImastreamError(err), String(err));
          }
        }
      }),
      { numRuns: 1000 },
    );
  });
});

describe('snapshot_aggregate records and replay', () => {
  const { records } = generateLog({ records: 20, seed: 3 });
  const before = new PcrReplay({ banks: ['sha1', 'sha256'] });
  for (const rec of records) before.extend(rec);
  const perbank = before.values('perbank');
  const text = (pcr10sha256: string) =>
    `Snapshot_Attempt_Count=1;sha1:PCR10:${toHex(perbank.get('sha1')!.get(10)!)},` +
    `sha256:PCR0:${hex(32, 9)},sha256:PCR10:${pcr10sha256};`;

  it('recognises the record by its n-ng name, not by ima-buf alone', () => {
    const buf = enc(text('00'.repeat(32)));
    const data = buildImaBuf({ alg: 'sha256', digest: new Uint8Array(32), name: 'snapshot_aggregate', buf });
    assert.deepEqual(snapshotAggregateData({ templateName: 'ima-buf', templateData: data }), buf);
    const other = buildImaBuf({ alg: 'sha256', digest: new Uint8Array(32), name: 'kernel_version', buf });
    assert.equal(snapshotAggregateData({ templateName: 'ima-buf', templateData: other }), undefined);
    const ng = buildImaNg({ alg: 'sha256', digest: new Uint8Array(32), name: 'snapshot_aggregate' });
    assert.equal(snapshotAggregateData({ templateName: 'ima-ng', templateData: ng }), undefined);
  });

  it('matches a replay of the records before it and names the scheme', () => {
    const agg = parseSnapshotAggregate(enc(text(toHex(perbank.get('sha256')!.get(10)!))));
    const check = checkSnapshotAggregate(before, agg);
    assert.deepEqual(check, { ok: true, scheme: 'perbank', compared: 2, mismatches: [] });
  });

  it('reports each (bank, PCR) that disagrees', () => {
    const agg = parseSnapshotAggregate(enc(text(hex(32, 0x55))));
    const check = checkSnapshotAggregate(before, agg);
    assert.equal(check.ok, false);
    assert.deepEqual(
      check.mismatches.map((m) => [m.scheme, m.bank, m.pcr, m.expected]),
      [
        ['perbank', 'sha256', 10, hex(32, 0x55)],
        ['padded', 'sha256', 10, hex(32, 0x55)],
      ],
    );
  });

  it('is not ok when nothing could be compared', () => {
    const agg = parseSnapshotAggregate(enc(`Snapshot_Attempt_Count=1;sha384:PCR10:${hex(48, 1)};`));
    assert.equal(checkSnapshotAggregate(before, agg).ok, false);
  });

  it('starts a replay from the snapshot that continues like the full replay', () => {
    const cut = 12;
    const head = new PcrReplay({ banks: ['sha1', 'sha256'] });
    for (const rec of records.slice(0, cut)) head.extend(rec);
    const v = head.values('perbank');
    const agg = parseSnapshotAggregate(
      enc(
        `Snapshot_Attempt_Count=2;sha1:PCR10:${toHex(v.get('sha1')!.get(10)!)},` +
          `sha256:PCR10:${toHex(v.get('sha256')!.get(10)!)};`,
      ),
    );
    const tail = replayFromSnapshot(agg);
    for (const rec of records.slice(cut)) tail.extend(rec);
    assert.deepEqual(tail.value('perbank', 'sha256', 10), before.value('perbank', 'sha256', 10));
    assert.deepEqual(tail.value('perbank', 'sha1', 10), before.value('perbank', 'sha1', 10));
  });
});
