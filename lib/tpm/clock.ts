import type { ClockInfo } from './attest.ts';

/** What the verifier keeps of a host's last verified quote. */
export type ClockState = Pick<ClockInfo, 'resetCount' | 'restartCount' | 'clock'>;

/** Stable codes of the timing rules, alongside QuoteFailureCode. */
export type ClockFailureCode =
  | 'QUOTE_CLOCK_UNSAFE'
  | 'QUOTE_RESET_COUNT_DECREASED'
  | 'QUOTE_RESTART_COUNT_DECREASED'
  | 'QUOTE_CLOCK_NOT_INCREASING';

/** One broken timing rule. */
export interface ClockFailure {
  code: ClockFailureCode;
  message: string;
}

/**
 * Keylime's timing rules between two verified quotes of one AK (DOMAIN §4.2): `safe` must be set;
 * resetCount never decreases; within one reset epoch restartCount never decreases; and when
 * neither counter moved, clock strictly increases. restartCount legitimately drops to 0 on a TPM
 * Reset, so it is compared only within one epoch. `prev` undefined means a first quote.
 * Only meaningful for AKs in the endorsement or platform hierarchy (otherwise the counters are
 * obfuscated per key, which still keeps them monotonic).
 */
export function checkClock(prev: ClockState | undefined, cur: ClockInfo): ClockFailure[] {
  const failures: ClockFailure[] = [];
  if (!cur.safe) failures.push({ code: 'QUOTE_CLOCK_UNSAFE', message: 'clockInfo.safe is NO' });
  if (prev === undefined) return failures;
  if (cur.resetCount < prev.resetCount) {
    failures.push({
      code: 'QUOTE_RESET_COUNT_DECREASED',
      message: `resetCount ${cur.resetCount} after ${prev.resetCount}`,
    });
  } else if (cur.resetCount === prev.resetCount) {
    failures.push(...checkWithinEpoch(prev, cur));
  }

  return failures;
}

function checkWithinEpoch(prev: ClockState, cur: ClockInfo): ClockFailure[] {
  if (cur.restartCount < prev.restartCount) {
    return [
      {
        code: 'QUOTE_RESTART_COUNT_DECREASED',
        message: `restartCount ${cur.restartCount} after ${prev.restartCount}`,
      },
    ];
  }
  if (cur.restartCount === prev.restartCount && cur.clock <= prev.clock) {
    return [{ code: 'QUOTE_CLOCK_NOT_INCREASING', message: `clock ${cur.clock} after ${prev.clock}` }];
  }

  return [];
}
