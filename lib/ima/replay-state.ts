import { fromHex } from '../bytes/hex.ts';
import { ImastreamError } from '../errors.ts';
import { canHash, digestSize, type HashAlg, isHashAlg } from '../hash.ts';
import type { ExtendScheme } from './replay.ts';

/** A replay state after validation, values as bytes. */
export interface CheckedReplayState {
  banks: HashAlg[];
  schemes: ExtendScheme[];
  count: number;
  pcrs: Partial<Record<ExtendScheme, Partial<Record<HashAlg, Record<string, Uint8Array>>>>>;
}

const MAX_PCR = 23;
const HEX = /^[0-9a-f]+$/;

function bad(message: string): never {
  throw new ImastreamError('IMS_REPLAY_BAD_STATE', message);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Validates a stored ReplayState (from Redis or a shard: treat as hostile): known banks and
 * schemes without repeats, a safe count, PCR indexes 0–23, lowercase hex of the bank's size,
 * and no keys outside the declared banks and schemes.
 */
export function parseReplayState(state: unknown): CheckedReplayState {
  if (!isObject(state)) bad('replay state is not an object');
  const banks = stringList(state.banks, 'banks', (b) => isHashAlg(b) && canHash(b)) as HashAlg[];
  const schemes = stringList(
    state.schemes,
    'schemes',
    (s) => s === 'perbank' || s === 'padded',
  ) as ExtendScheme[];
  const count = state.count;
  if (typeof count !== 'number' || !Number.isSafeInteger(count) || count < 0) {
    bad('count is not a safe integer ≥ 0');
  }
  if (!isObject(state.pcrs)) bad('pcrs is not an object');

  const pcrs: CheckedReplayState['pcrs'] = {};
  for (const [scheme, byBank] of Object.entries(state.pcrs)) {
    if (!(schemes as string[]).includes(scheme)) bad(`pcrs has undeclared scheme '${scheme}'`);
    if (!isObject(byBank)) bad(`pcrs.${scheme} is not an object`);
    const out: Partial<Record<HashAlg, Record<string, Uint8Array>>> = {};
    for (const [bank, values] of Object.entries(byBank)) {
      if (!(banks as string[]).includes(bank)) bad(`pcrs.${scheme} has undeclared bank '${bank}'`);
      out[bank as HashAlg] = pcrValues(values, bank as HashAlg, `pcrs.${scheme}.${bank}`);
    }
    pcrs[scheme as ExtendScheme] = out;
  }

  return { banks, schemes, count, pcrs };
}

function stringList(v: unknown, what: string, ok: (s: string) => boolean): string[] {
  if (!Array.isArray(v) || v.length === 0 || v.length > 8) bad(`${what} is not a short non-empty list`);
  if (!v.every((x) => typeof x === 'string' && ok(x))) bad(`${what} has an unknown entry`);
  if (new Set(v).size !== v.length) bad(`${what} repeats an entry`);

  return v as string[];
}

function pcrValues(values: unknown, bank: HashAlg, what: string): Record<string, Uint8Array> {
  if (!isObject(values)) bad(`${what} is not an object`);
  const out: Record<string, Uint8Array> = {};
  for (const [index, hex] of Object.entries(values)) {
    if (!/^(?:0|[1-9]\d?)$/.test(index) || Number(index) > MAX_PCR) bad(`${what}: bad PCR index '${index}'`);
    if (typeof hex !== 'string' || hex.length !== 2 * digestSize(bank) || !HEX.test(hex)) {
      bad(`${what}.${index} is not ${digestSize(bank)} bytes of lowercase hex`);
    }
    out[index] = fromHex(hex);
  }

  return out;
}
