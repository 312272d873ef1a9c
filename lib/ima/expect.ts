import { fromHex } from '../bytes/hex.ts';
import { ImastreamError } from '../errors.ts';
import { digestSize, type HashAlg, isHashAlg } from '../hash.ts';
import { MAX_PCR_INDEX } from '../pcr.ts';
import { type ExtendScheme, PcrReplay, type ReplayInput } from './replay.ts';

/** A PCR value a TPM reported (quote, pcrs file), to be found in the replay. */
export interface PcrExpectation {
  bank: HashAlg;
  pcr: number;
  value: Uint8Array;
}

export interface ExpectationResult {
  expectation: PcrExpectation;
  /** Smallest record count (0 = before the first record) at which the replay held the value. */
  matchedAt: number | null;
  /** The scheme that matched first (perbank preferred when both match at the same count). */
  scheme: ExtendScheme | null;
}

/** `BANK:PCR=HEX`, e.g. `sha256:10=8c4f…`. Throws IMS_REPLAY_BAD_EXPECTATION. */
export function parseExpectation(text: string): PcrExpectation {
  const m = /^([a-z0-9-]+):(\d{1,2})=(?:0x)?([0-9a-fA-F]+)$/.exec(text.trim());
  const bad = (why: string) => new ImastreamError('IMS_REPLAY_BAD_EXPECTATION', `'${text}': ${why}`);
  if (m === null) throw bad('expected BANK:PCR=HEX');
  const [, bank, pcr, hex] = m as unknown as [string, string, string, string];
  if (!isHashAlg(bank)) throw bad(`unknown bank ${bank}`);
  if (Number(pcr) > MAX_PCR_INDEX) throw bad(`PCR index ${pcr} > ${MAX_PCR_INDEX}`);
  if (hex.length !== 2 * digestSize(bank)) throw bad(`${bank} needs ${digestSize(bank)} bytes`);

  return { bank, pcr: Number(pcr), value: fromHex(hex) };
}

/**
 * Follows a replay record by record and notes, per expected PCR value, the first record count at
 * which the running value equals it. A quote can lag the log, so a match before the last record
 * (even before the first, at count 0) counts (DOMAIN.md §6 pitfall 1).
 *
 * A match only says the log can explain the value; the value itself is trusted only if it came
 * from a verified quote.
 */
export class ExpectationTracker {
  private readonly found: ExpectationResult[];
  private open: number;

  constructor(
    private readonly replay: PcrReplay,
    expectations: readonly PcrExpectation[],
  ) {
    for (const e of expectations) {
      if (!replay.banks.includes(e.bank)) {
        throw new ImastreamError('IMS_REPLAY_BAD_EXPECTATION', `bank ${e.bank} is not being replayed`);
      }
    }
    this.found = expectations.map((expectation) => ({ expectation, matchedAt: null, scheme: null }));
    this.open = this.found.length;
    this.observe();
  }

  /**
   * Checks the replay's current values; call after every extend. `touched`, the PCR the last
   * record extended, limits the check to expectations on that PCR: no other value changed.
   */
  observe(touched?: number): void {
    if (this.open === 0) return;
    const schemes = this.replay.schemes;
    for (let i = 0; i < this.found.length; i++) {
      const r = this.found[i]!;
      if (r.matchedAt !== null) continue;
      const { bank, pcr, value } = r.expectation;
      if (touched !== undefined && pcr !== touched) continue;
      for (let j = 0; j < schemes.length; j++) {
        const scheme = schemes[j]!;
        if (!this.replay.equals(scheme, bank, pcr, value)) continue;
        r.matchedAt = this.replay.count;
        r.scheme = scheme;
        this.open--;
        break;
      }
    }
  }

  get allMatched(): boolean {
    return this.open === 0;
  }

  results(): ExpectationResult[] {
    return this.found.map((r) => ({ ...r }));
  }
}

/** Replays `records` from zero and matches the expectations; both schemes unless told. */
export function matchExpectations(
  records: Iterable<ReplayInput>,
  expectations: readonly PcrExpectation[],
  opts: { banks?: readonly HashAlg[]; schemes?: readonly ExtendScheme[] } = {},
): { results: ExpectationResult[]; replay: PcrReplay } {
  const banks = opts.banks ?? [...new Set(expectations.map((e) => e.bank))];
  const replay = new PcrReplay({ banks, schemes: opts.schemes });
  const tracker = new ExpectationTracker(replay, expectations);
  for (const rec of records) {
    replay.extend(rec);
    tracker.observe(rec.pcr);
  }

  return { results: tracker.results(), replay };
}
