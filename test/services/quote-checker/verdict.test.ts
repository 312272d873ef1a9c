import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { compareWithCheckpoint } from '../../../services/quote-checker/compare.ts';
import { acceptedNonces, findNonce } from '../../../services/quote-checker/nonce-window.ts';
import {
  buildVerdict,
  type ClosedShard,
  shardRange,
  startingPoint,
} from '../../../services/quote-checker/verdict.ts';
import type { Checkpoint, PcrValue } from '../../../services/shared/records.ts';

const v = (scheme: string, bank: string, pcr: number, byte: number): PcrValue => ({
  scheme,
  bank,
  pcr,
  value: Buffer.alloc(bank === 'sha1' ? 20 : 32, byte),
});

const QUOTED = [v('tpm', 'sha1', 10, 1), v('tpm', 'sha256', 0, 9), v('tpm', 'sha256', 10, 2)];

function checkpoint(pcrs: PcrValue[], schemes = ['perbank', 'padded']): Checkpoint {
  return { hostId: 'h', bootId: 'b:1', seq: 40, pcrs, schemes, at: 0 };
}

describe('compareWithCheckpoint', () => {
  it('matches the scheme whose replayed PCRs all equal the quoted ones, ignoring PCRs not replayed', () => {
    const replayed = [v('padded', 'sha1', 10, 1), v('padded', 'sha256', 10, 2), v('perbank', 'sha1', 10, 1)];
    replayed.push(v('perbank', 'sha256', 10, 3));
    const c = compareWithCheckpoint(QUOTED, replayed, ['perbank', 'padded']);

    assert.deepEqual(c, { match: true, scheme: 'padded', compared: 2, ambiguous: false });
  });

  it('calls a match both schemes share ambiguous, and pins nothing on it', () => {
    const replayed = [v('perbank', 'sha1', 10, 1), v('padded', 'sha1', 10, 1)];
    const c = compareWithCheckpoint([v('tpm', 'sha1', 10, 1)], replayed, ['perbank', 'padded']);
    assert.deepEqual(c, { match: true, scheme: 'perbank', compared: 1, ambiguous: true });

    const out = buildVerdict({
      checkpoint: checkpoint(replayed),
      quoteId: 'q',
      comparison: c,
      closed: null,
      now: 1,
    });
    assert.equal(out.verdict.status, 'CLOSED');
    assert.equal(out.pin, null);
  });

  it('names the first bank and PCR that differs, in quote order', () => {
    const replayed = [v('perbank', 'sha1', 10, 1), v('perbank', 'sha256', 10, 4)];
    const c = compareWithCheckpoint(QUOTED, replayed, ['perbank']);

    assert.equal(c.match, false);
    assert.ok(!c.match);
    assert.deepEqual(
      [c.divergence?.bank, c.divergence?.pcr, c.divergence?.scheme],
      ['sha256', 10, 'perbank'],
    );
    assert.match(c.reason, /sha256 PCR 10/);
  });

  it('does not call a quote that covers none of the replayed PCRs a match', () => {
    const c = compareWithCheckpoint([v('tpm', 'sha256', 0, 9)], [v('perbank', 'sha256', 10, 2)], ['perbank']);

    assert.equal(c.match, false);
  });
});

describe('shard ranges and verdicts', () => {
  const closed: ClosedShard = { bootId: 'b:1', endSeq: 25, scheme: 'perbank', endPcrs: [] };

  it('starts a shard at the last closed end of the same boot, else at zero', () => {
    assert.deepEqual(shardRange(null, 'b:1', 40), { startSeq: 0, endSeq: 40 });
    assert.deepEqual(shardRange(closed, 'b:1', 40), { startSeq: 25, endSeq: 40 });
    assert.deepEqual(shardRange(closed, 'b:2', 40), { startSeq: 0, endSeq: 40 });
    assert.deepEqual(shardRange(closed, 'b:1', 20), { startSeq: 0, endSeq: 20 });
  });

  it('starts at the snapshot a replay started from until a shard of the boot closed past it', () => {
    const anchor: ClosedShard = { bootId: 'b:1', endSeq: 6, scheme: 'snapshot', endPcrs: [] };

    assert.equal(startingPoint(null, anchor, 'b:1', 10), anchor);
    assert.equal(startingPoint(null, anchor, 'b:2', 10), null);
    assert.equal(startingPoint(null, anchor, 'b:1', 6), null);
    assert.equal(startingPoint(closed, anchor, 'b:1', 40), closed);
    const otherBoot = { ...closed, bootId: 'b:0' };
    assert.equal(startingPoint(otherBoot, anchor, 'b:1', 10), anchor);
    assert.deepEqual(shardRange(startingPoint(null, anchor, 'b:1', 10), 'b:1', 10), {
      startSeq: 6,
      endSeq: 10,
    });
  });

  it('closes a matching shard with its scheme, start and end PCRs, and pins the scheme', () => {
    const ckpt = checkpoint([v('perbank', 'sha256', 10, 2), v('padded', 'sha256', 10, 3)]);
    const prev = {
      ...closed,
      endPcrs: [{ scheme: 'perbank', bank: 'sha256', pcr: 10, value: '11'.repeat(32) }],
    };
    const out = buildVerdict({
      checkpoint: ckpt,
      quoteId: 'q',
      comparison: { match: true, scheme: 'perbank', compared: 1, ambiguous: false },
      closed: prev,
      now: 5,
    });

    assert.equal(out.verdict.status, 'CLOSED');
    assert.equal(out.verdict.shardId, 'b:1:25-40');
    assert.deepEqual(out.verdict.endPcrs, [v('perbank', 'sha256', 10, 2)]);
    assert.deepEqual(out.verdict.startPcrs, [v('perbank', 'sha256', 10, 0x11)]);
    assert.deepEqual(out.pin, { bootId: 'b:1', scheme: 'perbank' });
    assert.equal(out.closed?.endSeq, 40);
    assert.deepEqual(out.alerts, []);
  });

  it('raises SCHEME_CHANGED when a boot matches another scheme than an earlier quote did', () => {
    const ckpt = checkpoint([v('padded', 'sha256', 10, 3)], ['padded']);
    const comparison = { match: true as const, scheme: 'padded', compared: 1, ambiguous: false };
    const pinned = { bootId: 'b:1', scheme: 'perbank' as const };
    const out = buildVerdict({ checkpoint: ckpt, quoteId: 'q', comparison, closed: null, pinned, now: 5 });
    const otherBoot = buildVerdict({
      checkpoint: ckpt,
      quoteId: 'q',
      comparison,
      closed: null,
      pinned: { ...pinned, bootId: 'b:0' },
      now: 5,
    });

    assert.equal(out.verdict.status, 'CLOSED');
    assert.deepEqual(
      out.alerts.map((a) => [a.kind, a.seq]),
      [['SCHEME_CHANGED', 40]],
    );
    assert.deepEqual(otherBoot.alerts, []);
  });

  it('fails a mismatching shard with a PCR_MISMATCH alert naming host, boot, seq, bank and PCR', () => {
    const ckpt = checkpoint([v('perbank', 'sha256', 10, 4)], ['perbank']);
    const comparison = compareWithCheckpoint(QUOTED, ckpt.pcrs, ckpt.schemes);
    const out = buildVerdict({ checkpoint: ckpt, quoteId: 'q', comparison, closed: null, now: 5 });

    assert.equal(out.verdict.status, 'FAILED');
    assert.equal(out.verdict.shardId, 'b:1:0-40');
    assert.deepEqual(out.verdict.startPcrs, [v('perbank', 'sha256', 10, 0)]);
    const a = out.alerts[0];
    assert.deepEqual(
      [a?.kind, a?.hostId, a?.bootId, a?.seq, a?.bank, a?.pcr],
      ['PCR_MISMATCH', 'h', 'b:1', 40, 'sha256', 10],
    );
    assert.equal(out.closed, null);
  });
});

describe('nonce window', () => {
  const n = (epoch: number) => ({ nonce: Buffer.alloc(32, epoch), epoch });

  it('accepts only the last few epochs, whatever order they arrived in', () => {
    const accepted = acceptedNonces([n(5), n(1), n(3), n(2), n(4)], [], 0, 4);

    assert.equal(findNonce(accepted, n(5).nonce)?.epoch, 5);
    assert.equal(findNonce(accepted, n(2).nonce)?.epoch, 2);
    assert.equal(findNonce(accepted, n(1).nonce), undefined);
  });

  it('keeps an older epoch while its announced validity lasts', () => {
    const old = { ...n(1), validUntil: 500 };
    const epochs = [old, n(2), n(3), n(4), n(5)];

    assert.equal(findNonce(acceptedNonces(epochs, [], 400, 4), old.nonce)?.epoch, 1);
    assert.equal(findNonce(acceptedNonces(epochs, [], 600, 4), old.nonce), undefined);
  });

  it('accepts a pending challenge nonce', () => {
    const challenge = { nonce: Buffer.alloc(32, 0xcc), epoch: null, requestId: 'r1' };
    const accepted = acceptedNonces([n(1)], [challenge], 0);

    assert.equal(findNonce(accepted, challenge.nonce)?.requestId, 'r1');
  });
});
