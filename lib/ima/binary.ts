import type { ErrorCode } from '../errors.ts';
import { digestSize, type HashAlg } from '../hash.ts';
import { MAX_PCR_INDEX } from '../pcr.ts';
import {
  type ByteOrder,
  type ImaRecord,
  isViolation,
  LEGACY_DIGEST_SIZE,
  LEGACY_IMA,
  LEGACY_NAME_MAX,
  type ParseProblem,
} from './record.ts';
import { templateDataProblem, templateDescriptor } from './templates.ts';

export { buildImaBuf, buildImaNg, buildImaSig, buildLegacyIma, encodeBinaryRecord } from './encode.ts';
export type { ByteOrder, ImaRecord, ParseProblem } from './record.ts';

/** Caps on every declared length (DOMAIN.md §1.10); each is checked before any slice. */
export interface BinaryLimits {
  /** Longest template name (the kernel restores ≤ 68; we accept 255). */
  maxTemplateName: number;
  /** Largest template data (sanity cap; an `ima-buf` key certificate is a few KiB). */
  maxTemplateData: number;
  /** Highest PCR index (23 on a PC-client TPM). */
  maxPcr: number;
  /** Non-fatal problems listed; the rest are only counted (see problemCount). */
  maxProblems: number;
}

export const DEFAULT_LIMITS: Readonly<BinaryLimits> = {
  maxTemplateName: 255,
  maxTemplateData: 64 * 1024,
  maxPcr: MAX_PCR_INDEX,
  maxProblems: 1000,
};

export interface BinaryParserOptions {
  /** Bank of the template-digest field: sha1 (default) or the `_<alg>` file's bank. */
  digestAlg?: HashAlg;
  /** `auto` sniffs the first record (DOMAIN.md §1.3). Default `auto`. */
  byteOrder?: ByteOrder | 'auto';
  limits?: Partial<BinaryLimits>;
}

/** Result of trying to read one record at a position. */
type Step = { record: ImaRecord; next: number } | { need: number } | { stop: ParseProblem };

/** Distinct template names remembered per parser. */
const NAME_CACHE_MAX = 16;

/**
 * Incremental parser of `binary_runtime_measurements[_<alg>]`. Feed chunks of any size with
 * push(); each call returns the records completed so far and keeps the rest. Call finish() at the
 * end of the stream for the problems, including bytes left inside an unfinished record.
 *
 * Record layout (kernel ima_fs.c ima_measurements_show, DOMAIN.md §1.2):
 *   u32 pcr | template_digest[D] | u32 name_len | name | u32 data_len | data[data_len]
 * Legacy `ima` has no data_len: filedigest[20] | u32 fname_len | fname.
 * There is no header and no separator, so a framing problem ends the parse at its offset:
 * guessing where the next record starts would let an attacker choose what gets replayed.
 *
 * Records hold views into the pushed chunks (no copies): do not modify a chunk after pushing it.
 * Nothing in a record is trusted; the parser only guarantees that it is well framed.
 */
export class BinaryLogParser {
  private readonly digestBytes: number;
  private readonly limits: BinaryLimits;
  private littleEndian: boolean | undefined;
  private chunks: Uint8Array[] = [];
  private pendingBytes = 0;
  /** Bytes needed from the first pending byte before parsing can progress. */
  private need = 1;
  /** Stream offset of the first pending byte. */
  private base = 0;
  private stopped = false;
  private readonly found: ParseProblem[] = [];
  private suppressed = 0;
  private readonly unknownNames = new Set<string>();
  /** Template names met so far with their bytes (at most NAME_CACHE_MAX). */
  private readonly names: { bytes: Uint8Array; name: string }[] = [];

  constructor(opts: BinaryParserOptions = {}) {
    this.digestBytes = digestSize(opts.digestAlg ?? 'sha1');
    this.limits = { ...DEFAULT_LIMITS, ...opts.limits };
    const order = opts.byteOrder ?? 'auto';
    this.littleEndian = order === 'auto' ? undefined : order === 'le';
  }

  /** The byte order in use, once known. */
  get byteOrder(): ByteOrder | undefined {
    return this.littleEndian === undefined ? undefined : this.littleEndian ? 'le' : 'be';
  }

  /** Problems so far (a copy). */
  get problems(): ParseProblem[] {
    return [...this.found];
  }

  /** Whether a framing problem ended the parse. */
  get hasStopped(): boolean {
    return this.stopped;
  }

  push(chunk: Uint8Array): ImaRecord[] {
    if (this.stopped || chunk.byteLength === 0) return [];
    this.chunks.push(chunk);
    this.pendingBytes += chunk.byteLength;
    if (this.pendingBytes < this.need) return [];

    const buf = this.chunks.length === 1 ? chunk : concat(this.chunks, this.pendingBytes);
    const records: ImaRecord[] = [];
    const pos = this.parseAll(buf, records);
    this.base += pos;
    const rest = buf.subarray(pos);
    this.chunks = rest.byteLength === 0 ? [] : [rest];
    this.pendingBytes = rest.byteLength;

    return records;
  }

  /** Ends the stream: reports bytes left over, returns every problem found. */
  finish(): ParseProblem[] {
    if (!this.stopped && this.pendingBytes > 0) {
      const message =
        `${this.pendingBytes} bytes after the last whole record` +
        (this.need > this.pendingBytes ? ` (the record needs ${this.need})` : '');
      this.stop({ code: 'IMS_IMA_TRUNCATED', message, offset: this.base });
    }

    return this.problems;
  }

  /** Every problem found so far, listed or only counted (problems lists at most maxProblems + 1). */
  get problemCount(): number {
    return this.found.length + this.suppressed;
  }

  private parseAll(buf: Uint8Array, records: ImaRecord[]): number {
    const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    let pos = 0;
    const end = buf.length;
    while (pos < end) {
      if (this.littleEndian === undefined && !this.sniff(view, pos)) break;
      const step = this.parseOne(buf, view, pos);
      if ('need' in step) {
        this.need = step.need;
        return pos;
      }
      if ('stop' in step) {
        this.stop(step.stop);
        return buf.byteLength;
      }
      records.push(step.record);
      this.checkRecord(step.record);
      pos = step.next;
    }
    this.need = 1;

    return pos;
  }

  /**
   * Picks the byte order from the first record: a plausible PCR index and name length in LE wins,
   * then BE; if neither is plausible LE is kept and the record's own check reports the problem.
   */
  private sniff(view: DataView, pos: number): boolean {
    const nameAt = pos + 4 + this.digestBytes;
    if (view.byteLength < nameAt + 4) {
      this.need = nameAt + 4 - pos;
      return false;
    }
    const plausible = (le: boolean) => {
      const nameLen = view.getUint32(nameAt, le);
      return (
        view.getUint32(pos, le) <= this.limits.maxPcr && nameLen > 0 && nameLen <= this.limits.maxTemplateName
      );
    };
    this.littleEndian = plausible(true) || !plausible(false);

    return true;
  }

  /** Reads one record at `pos`, checking each length before it is used. */
  private parseOne(buf: Uint8Array, view: DataView, pos: number): Step {
    const le = this.littleEndian!;
    const offset = this.base + pos;
    const avail = buf.length - pos;
    const nameAt = 4 + this.digestBytes + 4;
    if (avail < nameAt) return { need: nameAt };

    const pcr = view.getUint32(pos, le);
    if (pcr > this.limits.maxPcr) {
      return this.fatal('IMS_IMA_BAD_PCR', `PCR index ${pcr} > ${this.limits.maxPcr}`, offset);
    }
    const nameLen = view.getUint32(pos + nameAt - 4, le);
    if (nameLen === 0 || nameLen > this.limits.maxTemplateName) {
      return this.fatal('IMS_IMA_BAD_TEMPLATE_NAME', `template name length ${nameLen}`, offset);
    }
    const dataAt = nameAt + nameLen;
    if (avail < dataAt) return { need: dataAt };
    const name = this.templateName(buf, pos + nameAt, nameLen);
    if (name === undefined) {
      return this.fatal('IMS_IMA_BAD_TEMPLATE_NAME', 'template name is not printable', offset);
    }

    const data =
      name === LEGACY_IMA
        ? this.legacyData(view, pos + dataAt, avail - dataAt, le)
        : this.data(view, pos + dataAt, avail - dataAt, le);
    if ('need' in data) return { need: dataAt + data.need };
    if ('problem' in data) return this.fatal(data.problem[0], data.problem[1], offset);

    const record: ImaRecord = {
      pcr,
      templateDigest: buf.subarray(pos + 4, pos + 4 + this.digestBytes),
      templateName: name,
      templateData: buf.subarray(data.start, data.end),
      offset,
    };

    return { record, next: data.end };
  }

  /** u32 data_len | data: returns the data's position, or how many more bytes it needs. */
  private data(view: DataView, at: number, avail: number, le: boolean): DataSpan {
    if (avail < 4) return { need: 4 };
    const len = view.getUint32(at, le);
    if (len > this.limits.maxTemplateData) {
      return {
        problem: [
          'IMS_IMA_BAD_TEMPLATE_DATA',
          `template data length ${len} > ${this.limits.maxTemplateData}`,
        ],
      };
    }
    if (avail < 4 + len) return { need: 4 + len };

    return { start: at + 4, end: at + 4 + len };
  }

  /** Legacy `ima`: filedigest[20] | u32 fname_len | fname; the data is all three, as logged. */
  private legacyData(view: DataView, at: number, avail: number, le: boolean): DataSpan {
    const head = LEGACY_DIGEST_SIZE + 4;
    if (avail < head) return { need: head };
    const len = view.getUint32(at + LEGACY_DIGEST_SIZE, le);
    if (len > LEGACY_NAME_MAX) {
      return { problem: ['IMS_IMA_BAD_FIELD', `legacy ima name length ${len} > ${LEGACY_NAME_MAX}`] };
    }
    if (avail < head + len) return { need: head + len };

    return { start: at, end: at + head + len };
  }

  /**
   * Template names are printable ASCII. A log mixes a handful of names (ima-ng, ima-sig, …), so
   * the names met so far are kept with their bytes and found by comparing bytes, not decoded
   * again for every record. The list is capped: hostile logs can invent names without end.
   */
  private templateName(buf: Uint8Array, at: number, len: number): string | undefined {
    for (let i = 0; i < this.names.length; i++) {
      const known = this.names[i]!;
      if (sameBytes(buf, at, len, known.bytes)) return known.name;
    }
    const bytes = buf.subarray(at, at + len);
    for (const b of bytes) if (b < 0x21 || b > 0x7e) return undefined;
    const name = String.fromCharCode(...bytes);
    if (this.names.length < NAME_CACHE_MAX) this.names.push({ bytes: bytes.slice(), name });

    return name;
  }

  /** Non-fatal checks: fields fill the data, digest fields well formed, template known. */
  private checkRecord(r: ImaRecord): void {
    const problem = templateDataProblem(r.templateName, r.templateData, this.littleEndian!, isViolation(r));
    if (problem !== undefined) this.note({ ...problem, offset: r.offset });
    if (templateDescriptor(r.templateName).kind === 'unknown' && !this.unknownNames.has(r.templateName)) {
      if (this.unknownNames.size < 64) this.unknownNames.add(r.templateName);
      const message = `unknown template '${r.templateName}' (replayed over its raw data; first seen here)`;
      this.note({ code: 'IMS_IMA_UNKNOWN_TEMPLATE', message, offset: r.offset });
    }
  }

  private note(p: ParseProblem): void {
    if (this.found.length < this.limits.maxProblems) this.found.push(p);
    else this.suppressed++;
  }

  private stop(p: ParseProblem): void {
    this.stopped = true;
    this.found.push(p);
    this.chunks = [];
    this.pendingBytes = 0;
  }

  private fatal(code: ErrorCode, message: string, offset: number): Step {
    return { stop: { code, message, offset } };
  }
}

type DataSpan = { start: number; end: number } | { need: number } | { problem: [ErrorCode, string] };

/**
 * Parses a whole binary log. Never throws on bad input: problems come back with their offsets and
 * the records before the first framing problem are returned.
 */
export function parseBinaryLog(
  bytes: Uint8Array,
  opts: BinaryParserOptions = {},
): { records: ImaRecord[]; problems: ParseProblem[]; byteOrder: ByteOrder | undefined } {
  const parser = new BinaryLogParser(opts);
  const records = parser.push(bytes);
  const problems = parser.finish();

  return { records, problems, byteOrder: parser.byteOrder };
}

function concat(chunks: Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }

  return out;
}

/** Whether buf[at .. at+len) equals `b`, without making a view. */
function sameBytes(buf: Uint8Array, at: number, len: number, b: Uint8Array): boolean {
  if (len !== b.length) return false;
  for (let i = 0; i < len; i++) if (buf[at + i] !== b[i]) return false;

  return true;
}
