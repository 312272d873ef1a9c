import { bytesEqual, isAllZero, toHex } from '../bytes/hex.ts';
import { canHash, type HashAlg } from '../hash.ts';
import type { ImaRecord } from '../ima/record.ts';
import { EXTEND_SCHEMES, type ExtendScheme, PcrReplay, type ReplayState } from '../ima/replay.ts';
import type { PcrValues } from '../pcr.ts';

/** One quoted PCR that the replay does not reproduce. */
export interface ReplayMismatch {
  scheme: ExtendScheme;
  bank: HashAlg;
  pcr: number;
  /** The quoted value (hex). */
  expected: string;
  /** The replayed value (hex). */
  got: string;
}

export interface ReplayOutcome {
  /** Schemes whose replay reproduces every compared PCR; both when they cannot be told apart. */
  matching: ExtendScheme[];
  /** (bank, PCR) pairs compared. */
  compared: number;
  /** PCRs some record extends but no quoted bank covers: those records are unverifiable. */
  unquoted: number[];
  mismatches: ReplayMismatch[];
}

/**
 * Replays `records` from `start` and compares the result with the quoted values. Compared: every
 * quoted (bank, PCR) that a record extends or that `start` lists (firmware PCRs a shard never
 * touches and does not carry are left to the boot checks). `quoted` must already be known to
 * equal the verified quote's pcrDigest for the outcome to mean anything.
 */
export function replayAgainstQuote(
  start: PcrValues,
  records: readonly ImaRecord[],
  quoted: PcrValues,
  schemes: readonly ExtendScheme[] = EXTEND_SCHEMES,
): ReplayOutcome {
  const banks = [...quoted.keys()].filter(canHash);
  const extended = new Set(records.map((r) => r.pcr));
  const unquoted = [...extended]
    .filter((pcr) => !banks.some((b) => quoted.get(b)?.has(pcr)))
    .sort((a, b) => a - b);
  if (banks.length === 0) return { matching: [], compared: 0, unquoted, mismatches: [] };

  const replay = PcrReplay.fromState(startState(start, banks, schemes));
  for (const rec of records) replay.extend(rec);

  const outcome: ReplayOutcome = { matching: [], compared: 0, unquoted, mismatches: [] };
  for (const scheme of schemes) {
    const before = outcome.mismatches.length;
    outcome.compared = compareScheme(
      replay,
      scheme,
      quoted,
      (pcr, bank) => {
        return extended.has(pcr) || start.get(bank)?.has(pcr) === true;
      },
      outcome.mismatches,
    );
    if (outcome.mismatches.length === before) outcome.matching.push(scheme);
  }

  return outcome;
}

function compareScheme(
  replay: PcrReplay,
  scheme: ExtendScheme,
  quoted: PcrValues,
  relevant: (pcr: number, bank: HashAlg) => boolean,
  out: ReplayMismatch[],
): number {
  let compared = 0;
  for (const bank of replay.banks) {
    for (const [pcr, expected] of quoted.get(bank) ?? []) {
      if (!relevant(pcr, bank)) continue;
      compared++;
      if (replay.equals(scheme, bank, pcr, expected)) continue;
      out.push({ scheme, bank, pcr, expected: toHex(expected), got: toHex(replay.value(scheme, bank, pcr)) });
    }
  }

  return compared;
}

/** A replay state holding `start` in every scheme, for the quoted banks. */
function startState(start: PcrValues, banks: HashAlg[], schemes: readonly ExtendScheme[]): ReplayState {
  const pcrs: ReplayState['pcrs'] = {};
  for (const scheme of schemes) {
    const byBank: Partial<Record<HashAlg, Record<string, string>>> = {};
    for (const bank of banks) {
      const values: Record<string, string> = {};
      for (const [pcr, value] of start.get(bank) ?? []) values[String(pcr)] = toHex(value);
      byBank[bank] = values;
    }
    pcrs[scheme] = byBank;
  }

  return { banks, schemes: [...schemes], count: 0, pcrs };
}

/** Every value zero: the state of PCRs after a TPM reset, where the first shard of a boot starts. */
export function allZero(values: PcrValues): boolean {
  return [...values.values()].every((bank) => [...bank.values()].every(isAllZero));
}

/** Same banks, same PCRs, same values. */
export function samePcrValues(a: PcrValues, b: PcrValues): boolean {
  if (a.size !== b.size) return false;
  for (const [alg, bankA] of a) {
    const bankB = b.get(alg);
    if (bankB === undefined || bankB.size !== bankA.size) return false;
    for (const [pcr, value] of bankA) {
      const other = bankB.get(pcr);
      if (other === undefined || !bytesEqual(other, value)) return false;
    }
  }

  return true;
}
