import { toHex } from '../bytes/hex.ts';
import { ImastreamError } from '../errors.ts';
import { canHash, digestSize, type HashAlg, hashAlgFromKernelName } from '../hash.ts';
import { MAX_PCR_INDEX, type PcrValues } from '../pcr.ts';
import { nameBytes } from './fields.ts';
import type { ImaRecord } from './record.ts';
import { EXTEND_SCHEMES, type ExtendScheme, PcrReplay, type ReplayState } from './replay.ts';
import { splitFields, templateDescriptor } from './templates.ts';

/**
 * The `snapshot_aggregate` record of the 2023 IMA log snapshotting RFC (v1 1 Aug 2023, v2 19 Oct
 * 2023; DOMAIN §3.1). It was never merged: no released kernel logs it, but a patched kernel may,
 * and DESIGN §4 cut kind 2 accepts it. Its buffer claims the PCR values at the cut; the claim is
 * worth something only when it equals our own replay, or when a later quote confirms a replay
 * that started from it.
 */
export interface SnapshotAggregate {
  /** Snapshot_Attempt_Count: how many snapshots the kernel tried so far. */
  attemptCount: number;
  /** The PCR values the kernel read at the cut, by bank and index. Untrusted. */
  pcrs: PcrValues;
}

/** Event name (n-ng) of the record, as in the RFC's example. */
export const SNAPSHOT_AGGREGATE_NAME = 'snapshot_aggregate';

/** Caps from the TPM: at most 16 banks in a PCR selection, 24 PCRs per bank. */
const MAX_BANKS = 16;
const MAX_PCRS_PER_BANK = MAX_PCR_INDEX + 1;
/** 16 × 24 elements of `sha512:PCR23:0x` + 128 hex + `,`, with room to spare. */
const MAX_DATA_BYTES = 64 * 1024;
/** Up to 2^53-1: Snapshot_Attempt_Count is a kernel counter, 16 digits is plenty. */
const MAX_COUNT_DIGITS = 15;

const PREFIX = 'Snapshot_Attempt_Count=';
const ELEMENT = /^([a-z0-9-]{1,16}):PCR(0|[1-9][0-9]?):(?:0[xX])?([0-9a-fA-F]+)$/;

function bad(message: string, offset: number): ImastreamError {
  return new ImastreamError('IMS_IMA_BAD_SNAPSHOT_AGGREGATE', message, { details: { offset } });
}

/**
 * The buffer of a `snapshot_aggregate` record, or undefined for any other record. Recognised by
 * its fields, not its template name alone: an `ima-buf` record (or a custom template with `n-ng`
 * and `buf`) whose event name is `snapshot_aggregate`. Anyone who can write to the log's
 * transport can forge such a record; recognising it says nothing about its truth.
 */
export function snapshotAggregateData(
  rec: Pick<ImaRecord, 'templateName' | 'templateData'>,
  littleEndian = true,
): Uint8Array | undefined {
  const { kind, fields } = templateDescriptor(rec.templateName);
  const nameAt = fields.indexOf('n-ng');
  const bufAt = fields.indexOf('buf');
  if (kind === 'legacy' || kind === 'unknown' || nameAt < 0 || bufAt < 0) return undefined;
  const values = splitFields(rec.templateData, fields.length, littleEndian);
  if (typeof values === 'string') return undefined;
  const name = nameBytes(values[nameAt] as Uint8Array);

  return Buffer.from(name).toString('latin1') === SNAPSHOT_AGGREGATE_NAME ? values[bufAt] : undefined;
}

/*
 * Grammar (RFC v2, "snapshot_aggregate" template data):
 *   data     = "Snapshot_Attempt_Count=" count ";" element *("," element) ";" [NUL]
 *   count    = 1*15DIGIT
 *   element  = alg ":PCR" index ":" ["0x" / "0X"] hex
 *   alg      = a kernel hash name (sha1, sha256, sha384, sha512, sm3, sm3-256)
 *   index    = 0..23 without leading zeros;  hex = 2 × digest size of alg
 * The RFC never settled whether the buffer ends with a NUL; one trailing NUL is accepted.
 * Hostile input: size capped before scanning, ≤ 16 banks × 24 PCRs, a (bank, PCR) twice is an
 * error, every problem names its byte offset.
 */
export function parseSnapshotAggregate(data: Uint8Array): SnapshotAggregate {
  if (data.byteLength > MAX_DATA_BYTES) throw bad(`${data.byteLength} bytes exceeds ${MAX_DATA_BYTES}`, 0);
  const end = data.byteLength > 0 && data[data.byteLength - 1] === 0 ? data.byteLength - 1 : data.byteLength;
  for (let i = 0; i < end; i++) {
    const c = data[i] as number;
    if (c < 0x21 || c > 0x7e) throw bad(`byte 0x${c.toString(16)} is not printable ASCII`, i);
  }
  const text = Buffer.from(data.subarray(0, end)).toString('latin1');
  if (!text.startsWith(PREFIX)) throw bad(`does not start with ${PREFIX}`, 0);
  const countEnd = text.indexOf(';', PREFIX.length);
  if (countEnd < 0) throw bad('Snapshot_Attempt_Count has no terminating ";"', PREFIX.length);
  const attemptCount = parseCount(text.slice(PREFIX.length, countEnd), PREFIX.length);
  if (!text.endsWith(';') || text.length === countEnd + 1)
    throw bad('PCR list missing or not ended by ";"', end);

  return { attemptCount, pcrs: parseElements(text, countEnd + 1, text.length - 1) };
}

function parseCount(digits: string, offset: number): number {
  if (!/^[0-9]{1,15}$/.test(digits) || digits.length > MAX_COUNT_DIGITS) {
    throw bad(`Snapshot_Attempt_Count "${digits.slice(0, 20)}" is not a decimal count`, offset);
  }

  return Number(digits);
}

/** Elements between `from` and `to` (exclusive, the final ";"), separated by ",". */
function parseElements(text: string, from: number, to: number): PcrValues {
  const pcrs: PcrValues = new Map();
  let at = from;
  while (at <= to) {
    const comma = text.indexOf(',', at);
    const stop = comma < 0 || comma > to ? to : comma;
    addElement(pcrs, text.slice(at, stop), at);
    at = stop + 1;
  }

  return pcrs;
}

function addElement(pcrs: PcrValues, element: string, offset: number): void {
  const m = ELEMENT.exec(element);
  if (m === null) throw bad(`element "${element.slice(0, 40)}" is not <alg>:PCR<N>:<hex>`, offset);
  const [, algName, indexText, hex] = m as unknown as [string, string, string, string];
  const alg = hashAlgFromKernelName(algName);
  if (alg === undefined) throw bad(`unknown algorithm "${algName}"`, offset);
  const pcr = Number(indexText);
  if (pcr > MAX_PCR_INDEX) throw bad(`PCR index ${pcr} out of range`, offset);
  if (hex.length !== 2 * digestSize(alg)) {
    throw bad(`${alg} PCR${pcr}: ${hex.length} hex digits, expected ${2 * digestSize(alg)}`, offset);
  }

  let bank = pcrs.get(alg);
  if (bank === undefined) {
    if (pcrs.size >= MAX_BANKS) throw bad(`more than ${MAX_BANKS} banks`, offset);
    bank = new Map();
    pcrs.set(alg, bank);
  }
  if (bank.has(pcr)) throw bad(`${alg} PCR${pcr} appears twice`, offset);
  if (bank.size >= MAX_PCRS_PER_BANK) throw bad(`more than ${MAX_PCRS_PER_BANK} PCRs in ${alg}`, offset);
  bank.set(pcr, Uint8Array.from(Buffer.from(hex, 'hex')));
}

/** One (bank, PCR) where the snapshot's claim and our replay disagree. */
export interface SnapshotMismatch {
  scheme: ExtendScheme;
  bank: HashAlg;
  pcr: number;
  /** The snapshot's value (what the kernel says it read from the TPM), hex. */
  expected: string;
  /** Our replay's value, hex. */
  got: string;
}

export interface SnapshotCheck {
  /** True when some scheme's replay equals the snapshot on every (bank, PCR) compared. */
  ok: boolean;
  /** The scheme that matched (perbank preferred when several do). */
  scheme?: ExtendScheme;
  /** How many (bank, PCR) pairs were compared per scheme; 0 means nothing could be checked. */
  compared: number;
  /** Every disagreement, for each scheme tried, when none matched. */
  mismatches: SnapshotMismatch[];
}

/**
 * Compares a snapshot's PCR values with the replay of every record before the snapshot record
 * (the kernel reads the PCRs before it extends the snapshot record itself). Only PCRs the log
 * extended in banks both sides have are compared: PCRs 0–9 come from firmware, not the IMA log.
 * A match shows the snapshot agrees with the log; neither is trusted until a quote covers them.
 */
export function checkSnapshotAggregate(replayBefore: PcrReplay, agg: SnapshotAggregate): SnapshotCheck {
  const perScheme = replayBefore.schemes.map((scheme) => compareScheme(replayBefore, scheme, agg));
  const compared = perScheme[0]?.compared ?? 0;
  const match = perScheme.find((r) => r.mismatches.length === 0);
  if (compared > 0 && match !== undefined)
    return { ok: true, scheme: match.scheme, compared, mismatches: [] };

  return { ok: false, compared, mismatches: perScheme.flatMap((r) => r.mismatches) };
}

function compareScheme(replay: PcrReplay, scheme: ExtendScheme, agg: SnapshotAggregate) {
  const mismatches: SnapshotMismatch[] = [];
  let compared = 0;
  for (const [bank, values] of replay.values(scheme)) {
    const claimed = agg.pcrs.get(bank);
    if (claimed === undefined) continue;
    for (const [pcr, got] of values) {
      const expected = claimed.get(pcr);
      if (expected === undefined) continue;
      compared++;
      if (!replay.equals(scheme, bank, pcr, expected)) {
        mismatches.push({ scheme, bank, pcr, expected: toHex(expected), got: toHex(got) });
      }
    }
  }

  return { scheme, compared, mismatches };
}

/**
 * A replay that starts from the snapshot's values, for a replayer with no prior state for the
 * boot: the next record it extends is the snapshot record itself. Every bank this Node can hash
 * is kept, in both schemes (the snapshot cannot tell them apart). The result is UNVERIFIED: the
 * caller must mark it so until a quote matches a replay continued from it.
 */
export function replayFromSnapshot(agg: SnapshotAggregate): PcrReplay {
  const banks = [...agg.pcrs.keys()].filter(canHash);
  if (banks.length === 0) {
    throw new ImastreamError('IMS_IMA_UNSUPPORTED_ALG', 'snapshot_aggregate has no bank this build can hash');
  }
  const pcrs: ReplayState['pcrs'] = {};
  for (const scheme of EXTEND_SCHEMES) {
    const byBank: Partial<Record<HashAlg, Record<string, string>>> = {};
    for (const bank of banks) {
      const values: Record<string, string> = {};
      for (const [pcr, value] of agg.pcrs.get(bank) ?? []) values[String(pcr)] = toHex(value);
      byBank[bank] = values;
    }
    pcrs[scheme] = byBank;
  }
  const state: ReplayState = { banks, schemes: [...EXTEND_SCHEMES], count: 0, pcrs };

  return PcrReplay.fromState(state);
}
