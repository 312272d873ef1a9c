import { bytesEqual } from '../bytes/hex.ts';
import { parseBinaryLog } from '../ima/binary.ts';
import { templateDigestOf } from '../ima/digest.ts';
import { nameBytes } from '../ima/fields.ts';
import { type ImaRecord, isViolation } from '../ima/record.ts';
import { splitFields, splitLegacy, templateDescriptor } from '../ima/templates.ts';
import type { RecordFormat } from './types.ts';

/** A raw record of a shard that does not parse as exactly one clean binary record. */
export interface RecordProblem {
  /** Absolute seq of the record. */
  seq: number;
  message: string;
}

/**
 * Parses a shard's raw records one by one with the binary log parser. Each element must hold
 * exactly one record and raise no problem (framing, fields, template digest); a record that does
 * is reported with its absolute seq rather than replayed, since what it claims cannot be trusted.
 */
export function parseShardRecords(
  raw: readonly Uint8Array[],
  format: RecordFormat,
  startSeq: number,
): { records: ImaRecord[]; problems: RecordProblem[] } {
  const records: ImaRecord[] = [];
  const problems: RecordProblem[] = [];
  raw.forEach((bytes, i) => {
    const problem = checkOne(bytes, format, records);
    if (problem !== undefined) problems.push({ seq: startSeq + i, message: problem });
  });

  return { records, problems };
}

/** Parses one raw record into `out`, or says what is wrong with it. */
function checkOne(bytes: Uint8Array, format: RecordFormat, out: ImaRecord[]): string | undefined {
  const parsed = parseBinaryLog(bytes, { digestAlg: format.digestAlg, byteOrder: format.byteOrder });
  const first = parsed.problems[0];
  if (first !== undefined) return `${first.code}: ${first.message}`;
  const rec = parsed.records[0];
  if (rec === undefined || parsed.records.length !== 1) return `${parsed.records.length} records, not 1`;
  if (!digestHolds(rec, format)) return `template digest is not the ${format.digestAlg} of the template data`;
  out.push(rec);

  return undefined;
}

/**
 * The logged template digest must be the hash of the template data (DOMAIN §1.7): replay hashes
 * the data itself, so a record whose digest lies would otherwise pass unnoticed. Violations
 * (all-zero digest) carry no hash by design.
 */
function digestHolds(rec: ImaRecord, format: RecordFormat): boolean {
  return isViolation(rec) || bytesEqual(templateDigestOf(rec, format.digestAlg), rec.templateDigest);
}

/** The event name of a record (`n-ng` or legacy `n`, without NUL), or undefined if it has none. */
export function eventName(rec: ImaRecord, littleEndian: boolean): string | undefined {
  const { kind, fields } = templateDescriptor(rec.templateName);
  if (kind === 'legacy') {
    const legacy = splitLegacy(rec.templateData, littleEndian);
    return typeof legacy === 'string' ? undefined : Buffer.from(legacy.name).toString('latin1');
  }
  const at = fields.findIndex((f) => f === 'n-ng' || f === 'n');
  if (kind === 'unknown' || at < 0) return undefined;
  const values = splitFields(rec.templateData, fields.length, littleEndian);
  if (typeof values === 'string') return undefined;

  return Buffer.from(nameBytes(values[at] as Uint8Array)).toString('latin1');
}
