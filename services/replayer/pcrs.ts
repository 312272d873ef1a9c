import { fromHex, toHex } from '../../lib/bytes/hex.ts';
import type { PcrValues } from '../../lib/pcr.ts';
import type { PcrValue } from '../shared/records.ts';

/** A PCR value as JSON (Redis): the value in lowercase hex. */
export interface PcrValueJson {
  scheme: string;
  bank: string;
  pcr: number;
  value: string;
}

/** Flattens one scheme's replayed values into PcrValue records, sorted by bank then PCR index. */
export function flattenPcrs(scheme: string, values: PcrValues): PcrValue[] {
  const out: PcrValue[] = [];
  for (const [bank, pcrs] of values) {
    for (const [pcr, value] of pcrs) out.push({ scheme, bank, pcr, value: Buffer.from(value) });
  }

  return out.sort(comparePcrValues);
}

/** Order used everywhere a list of PCR values is written, so equal lists encode equally. */
export function comparePcrValues(a: PcrValue | PcrValueJson, b: PcrValue | PcrValueJson): number {
  if (a.scheme !== b.scheme) return a.scheme < b.scheme ? -1 : 1;
  if (a.bank !== b.bank) return a.bank < b.bank ? -1 : 1;

  return a.pcr - b.pcr;
}

export function pcrsToJson(pcrs: readonly PcrValue[]): PcrValueJson[] {
  return pcrs.map((p) => ({ scheme: p.scheme, bank: p.bank, pcr: p.pcr, value: toHex(p.value) }));
}

/** Parses stored PCR values; throws IMS_BYTES_LIMIT on a value that is not hex. */
export function pcrsFromJson(pcrs: readonly PcrValueJson[]): PcrValue[] {
  return pcrs.map((p) => ({
    scheme: String(p.scheme),
    bank: String(p.bank),
    pcr: Number(p.pcr),
    value: Buffer.from(fromHex(String(p.value), 'pcr value')),
  }));
}
