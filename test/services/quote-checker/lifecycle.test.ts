import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { compareWithCheckpoint } from '../../../services/quote-checker/compare.ts';
import {
  type CutInfo,
  cutVerdict,
  deadlineVerdict,
  openVerdict,
  parseCut,
  verdictKey,
} from '../../../services/quote-checker/lifecycle.ts';
import { buildVerdict } from '../../../services/quote-checker/verdict.ts';
import { pcrsToJson } from '../../../services/replayer/pcrs.ts';
import { decode, encode } from '../../../services/shared/codec.ts';
import type { Checkpoint, PcrValue } from '../../../services/shared/records.ts';

const v = (scheme: string, bank: string, pcr: number, byte: number): PcrValue => ({
  scheme,
  bank,
  pcr,
  value: Buffer.alloc(bank === 'sha1' ? 20 : 32, byte),
});

const END = [v('padded', 'sha256', 10, 5), v('perbank', 'sha256', 10, 6)];
const START = [v('padded', 'sha256', 10, 7), v('perbank', 'sha256', 10, 8)];
const checkpoint: Checkpoint = {
  hostId: 'h',
  bootId: 'b:1',
  seq: 40,
  pcrs: END,
  schemes: ['perbank', 'padded'],
  at: 0,
};
const cut: CutInfo = { startSeq: 25, startPcrs: pcrsToJson(START), kind: 'STAGING' };
const quote = {
  attest: Buffer.from('ff54', 'hex'),
  signature: Buffer.alloc(3, 1),
  akName: Buffer.alloc(2, 2),
  nonce: Buffer.alloc(4, 3),
};

/** Decoded records are avsc class instances: compare their data. */
const plain = (x: unknown) => JSON.parse(JSON.stringify(x)) as unknown;

describe('shard lifecycle verdicts', () => {
  it('closes the range the replayer cut, whatever the last closed end says, with the quote and labels', () => {
    const comparison = compareWithCheckpoint([v('tpm', 'sha256', 10, 6)], END, checkpoint.schemes);
    const closed = { bootId: 'b:1', endSeq: 10, scheme: 'perbank', endPcrs: [] };
    const out = buildVerdict({
      checkpoint,
      quoteId: 'q',
      quote,
      cut,
      akPolicy: 'tofu',
      comparison,
      closed,
      now: 1,
    });

    assert.deepEqual(
      [out.verdict.status, out.verdict.shardId, out.verdict.startSeq, out.verdict.endSeq],
      ['CLOSED', 'b:1:25-40', 25, 40],
    );
    assert.deepEqual(out.verdict.startPcrs, [START[1]]);
    assert.deepEqual(out.verdict.endPcrs, [END[1]]);
    assert.deepEqual(
      [out.verdict.cutKind, out.verdict.akPolicy, out.verdict.quote],
      ['STAGING', 'tofu', quote],
    );
    assert.deepEqual(plain(decode(encode('Verdict', out.verdict)).value), plain(out.verdict));
  });

  it('starts a boot-start shard from zeros and keeps every scheme in a failure', () => {
    const comparison = compareWithCheckpoint([v('tpm', 'sha256', 10, 9)], END, checkpoint.schemes);
    const out = buildVerdict({
      checkpoint,
      quoteId: 'q',
      cut: { startSeq: 0, startPcrs: null, kind: null },
      comparison,
      closed: null,
      now: 1,
    });

    assert.equal(out.verdict.status, 'FAILED');
    assert.equal(out.verdict.shardId, 'b:1:0-40');
    assert.deepEqual(
      out.verdict.startPcrs.map((p) => [p.scheme, p.value.equals(Buffer.alloc(32))]),
      [
        ['padded', true],
        ['perbank', true],
      ],
    );
    assert.deepEqual([out.verdict.quote, out.verdict.akPolicy, out.verdict.cutKind], [null, null, null]);
  });

  it('publishes CUT, OPEN and deadline FAILED states under keys that keep one history per shard', () => {
    const c = cutVerdict({ checkpoint, cut, akPolicy: null, now: 2 });
    const f = deadlineVerdict({ checkpoint, cut, akPolicy: null, now: 3, deadlineMs: 50 });
    const o = openVerdict({ checkpoint, akPolicy: 'ek-certificate', now: 2 });

    assert.deepEqual([c.status, c.shardId, c.quoteId, c.cutKind], ['CUT', 'b:1:25-40', null, 'STAGING']);
    assert.deepEqual(c.startPcrs, START);
    assert.deepEqual([f.status, f.shardId, verdictKey(f)], ['FAILED', 'b:1:25-40', verdictKey(c)]);
    assert.match(f.reasons[0]!, /^SHARD_DEADLINE/);
    assert.deepEqual(
      [o.status, o.shardId, o.startSeq, o.endSeq, o.endPcrs],
      ['OPEN', 'b:1:40-', 40, null, []],
    );
    assert.deepEqual(o.startPcrs, END);
    assert.notEqual(verdictKey(o), verdictKey(c));
    assert.equal(verdictKey(c), 'h/b:1:25-40');
    for (const x of [c, f, o]) assert.deepEqual(plain(decode(encode('Verdict', x)).value), plain(x));
  });

  it('reads only a well-formed stored cut that ends after it starts', () => {
    assert.deepEqual(parseCut({ startSeq: 3, startPcrs: null, kind: 'VIRTUAL' }, 9), {
      startSeq: 3,
      startPcrs: null,
      kind: 'VIRTUAL',
    });
    assert.equal(parseCut({ startSeq: 9, startPcrs: null, kind: null }, 9), null);
    assert.equal(parseCut({ startSeq: -1 }, 9), null);
    assert.equal(parseCut(null, 9), null);
    assert.equal(parseCut({ startSeq: 1, kind: 'BOGUS' }, 9)?.kind, null);
  });
});
