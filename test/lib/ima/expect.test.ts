import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { toHex } from '../../../lib/bytes/hex.ts';
import { hasCode } from '../../../lib/errors.ts';
import { ExpectationTracker, matchExpectations, parseExpectation } from '../../../lib/ima/expect.ts';
import { PcrReplay } from '../../../lib/ima/replay.ts';
import { generateLog } from '../../../lib/ima/synthetic.ts';

const { records } = generateLog({ records: 20, seed: 41, violations: [4] });

/** PCR 10 after the first `n` records, in one scheme and bank. */
function after(n: number, scheme: 'perbank' | 'padded', bank: 'sha1' | 'sha256'): string {
  const r = new PcrReplay();
  for (const rec of records.slice(0, n)) r.extend(rec);
  return toHex(r.value(scheme, bank, 10));
}

describe('expectations', () => {
  it('parses BANK:PCR=HEX and rejects malformed values', () => {
    const e = parseExpectation(`sha256:10=${'ab'.repeat(32)}`);
    assert.equal(e.bank, 'sha256');
    assert.equal(e.pcr, 10);
    assert.equal(toHex(e.value), 'ab'.repeat(32));
    for (const bad of [
      'sha256:10=abcd',
      'md5:10=00',
      `sha1:24=${'00'.repeat(20)}`,
      'sha1=00',
      `sha1:x=${'00'.repeat(20)}`,
    ]) {
      assert.throws(
        () => parseExpectation(bad),
        (err) => hasCode(err, 'IMS_REPLAY_BAD_EXPECTATION'),
        bad,
      );
    }
  });

  it('finds the earliest record count and the scheme for each value', () => {
    const expectations = [
      parseExpectation(`sha256:10=${after(20, 'perbank', 'sha256')}`),
      parseExpectation(`sha256:10=${after(7, 'padded', 'sha256')}`),
      parseExpectation(`sha1:10=${after(12, 'perbank', 'sha1')}`),
      parseExpectation(`sha1:10=${'00'.repeat(20)}`),
      parseExpectation(`sha256:10=${'77'.repeat(32)}`),
    ];
    const { results } = matchExpectations(records, expectations);
    assert.deepEqual(
      results.map((r) => [r.matchedAt, r.scheme]),
      [
        [20, 'perbank'],
        [7, 'padded'],
        [12, 'perbank'],
        [0, 'perbank'],
        [null, null],
      ],
    );
  });

  it('a tracker on a restored replay starts counting where the state left off', () => {
    const first = new PcrReplay();
    for (const rec of records.slice(0, 10)) first.extend(rec);
    const replay = PcrReplay.fromState(first.state());
    const tracker = new ExpectationTracker(replay, [
      parseExpectation(`sha1:10=${after(15, 'perbank', 'sha1')}`),
    ]);
    for (const rec of records.slice(10)) {
      replay.extend(rec);
      tracker.observe();
    }
    assert.equal(tracker.allMatched, true);
    assert.equal(tracker.results()[0]!.matchedAt, 15);
  });

  it('refuses an expectation for a bank that is not replayed', () => {
    const replay = new PcrReplay({ banks: ['sha1'] });
    assert.throws(
      () => new ExpectationTracker(replay, [parseExpectation(`sha256:10=${'00'.repeat(32)}`)]),
      (err) => hasCode(err, 'IMS_REPLAY_BAD_EXPECTATION'),
    );
  });
});
