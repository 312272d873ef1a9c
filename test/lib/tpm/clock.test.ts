import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkClock } from '../../../lib/tpm/clock.ts';

const at = (resetCount: number, restartCount: number, clock: bigint, safe = true) => ({
  resetCount,
  restartCount,
  clock,
  safe,
});
const codes = (prev: ReturnType<typeof at> | undefined, cur: ReturnType<typeof at>) =>
  checkClock(prev, cur).map((f) => f.code);

describe('checkClock (keylime timing rules)', () => {
  it('accepts a first quote and a later quote in the same epoch', () => {
    assert.deepEqual(codes(undefined, at(1, 0, 100n)), []);
    assert.deepEqual(codes(at(1, 0, 100n), at(1, 0, 101n)), []);
  });

  it('accepts a reset (restartCount back to 0, clock anywhere) and a resume', () => {
    assert.deepEqual(codes(at(1, 3, 5000n), at(2, 0, 10n)), []);
    assert.deepEqual(codes(at(1, 0, 5000n), at(1, 1, 10n)), []);
  });

  it('rejects counters going back, a clock that does not move, and unsafe clocks', () => {
    assert.deepEqual(codes(at(2, 0, 100n), at(1, 0, 200n)), ['QUOTE_RESET_COUNT_DECREASED']);
    assert.deepEqual(codes(at(2, 2, 100n), at(2, 1, 200n)), ['QUOTE_RESTART_COUNT_DECREASED']);
    assert.deepEqual(codes(at(2, 1, 100n), at(2, 1, 100n)), ['QUOTE_CLOCK_NOT_INCREASING']);
    assert.deepEqual(codes(undefined, at(1, 0, 1n, false)), ['QUOTE_CLOCK_UNSAFE']);
  });
});
