import { toHex } from '../bytes/hex.ts';
import { digestSize, type HashAlg } from '../hash.ts';
import { MAX_PCR_INDEX } from '../pcr.ts';
import { buildLegacyIma, buildTemplateData } from './encode.ts';
import { type FieldId, fieldFromAscii, fieldToAscii, hexToken } from './fields.ts';
import { type ByteOrder, type ImaRecord, isViolation, LEGACY_NAME_MAX, type ParseProblem } from './record.ts';
import { splitFields, splitLegacy, templateDataProblem, templateDescriptor } from './templates.ts';

export interface AsciiParserOptions {
  /** Bank of the template-hash column; by default any SHA size (20/32/48/64 bytes) is accepted. */
  digestAlg?: HashAlg;
  limits?: Partial<AsciiLimits>;
}

export interface AsciiLimits {
  /** Longest line; longer lines are reported and skipped. */
  maxLine: number;
  maxPcr: number;
  maxProblems: number;
}

const DEFAULT_ASCII_LIMITS: AsciiLimits = { maxLine: 256 * 1024, maxPcr: MAX_PCR_INDEX, maxProblems: 1000 };

const NL = 0x0a;
const SP = 0x20;
const DIGEST_SIZES = new Set([20, 32, 48, 64]);

/**
 * Incremental parser of `ascii_runtime_measurements[_<alg>]`, rebuilding each record's template
 * data from its columns (DOMAIN.md §1.4). A bad line is reported with its line number and byte
 * offset, and parsing goes on with the next line.
 *
 * Line: `%2d <template hash hex> <template name> <field> <field> …\n`.
 * The rebuild is exact for the kernel's own renderings when integers are little-endian; it cannot
 * be for names with spaces turned into one token by a later edit, or for unknown templates. The
 * binary list is the one to verify (§1.4); this parser serves existing ASCII captures.
 */
export class AsciiLogParser {
  private readonly limits: AsciiLimits;
  private readonly digestBytes: number | undefined;
  private partial: Uint8Array[] = [];
  private partialBytes = 0;
  /** Stream offset and number of the current line (its first byte, even while skipping it). */
  private base = 0;
  private lineNo = 1;
  private skipping = false;
  /** Bytes of the current line dropped while skipping it. */
  private skipped = 0;
  private readonly found: ParseProblem[] = [];
  private suppressed = 0;

  constructor(opts: AsciiParserOptions = {}) {
    this.limits = { ...DEFAULT_ASCII_LIMITS, ...opts.limits };
    this.digestBytes = opts.digestAlg === undefined ? undefined : digestSize(opts.digestAlg);
  }

  push(chunk: Uint8Array): ImaRecord[] {
    const records: ImaRecord[] = [];
    let from = 0;
    for (let nl = chunk.indexOf(NL); nl >= 0; nl = chunk.indexOf(NL, from)) {
      const line = this.takeLine(chunk.subarray(from, nl));
      this.endLine(line, records, nl - from + 1);
      from = nl + 1;
    }
    this.keep(chunk.subarray(from));

    return records;
  }

  finish(): ParseProblem[] {
    if (this.partialBytes > 0 || this.skipping) {
      const records: ImaRecord[] = [];
      this.endLine(this.takeLine(new Uint8Array(0)), records, 0);
    }

    return [...this.found];
  }

  /** Problems listed so far (a copy; at most `maxProblems`, see problemCount for the total). */
  get problems(): ParseProblem[] {
    return [...this.found];
  }

  /** Every problem found so far, listed or only counted. */
  get problemCount(): number {
    return this.found.length + this.suppressed;
  }

  /** Always false: a bad ASCII line ends at its newline, so the parse goes on with the next. */
  get hasStopped(): boolean {
    return false;
  }

  /** The whole current line: kept partial chunks plus `tail`, or undefined while skipping. */
  private takeLine(tail: Uint8Array): Uint8Array | undefined {
    if (this.skipping || this.partialBytes + tail.byteLength > this.limits.maxLine) return undefined;
    if (this.partialBytes === 0) return tail;
    const line = new Uint8Array(this.partialBytes + tail.byteLength);
    let at = 0;
    for (const p of [...this.partial, tail]) {
      line.set(p, at);
      at += p.byteLength;
    }

    return line;
  }

  private endLine(line: Uint8Array | undefined, records: ImaRecord[], tailBytes: number): void {
    const offset = this.base;
    const lineNo = this.lineNo;
    if (line === undefined) {
      this.note('IMS_IMA_BAD_ASCII_LINE', `line longer than ${this.limits.maxLine} bytes`, offset, lineNo);
    } else if (!isBlank(line)) {
      const rec = this.parseLine(line, offset);
      if (typeof rec === 'string') this.note('IMS_IMA_BAD_ASCII_LINE', rec, offset, lineNo);
      else records.push(rec);
    }
    this.base += this.skipped + this.partialBytes + tailBytes;
    this.lineNo++;
    this.partial = [];
    this.partialBytes = 0;
    this.skipping = false;
    this.skipped = 0;
  }

  /** Keeps the start of an unfinished line; a line over the cap is dropped up to its newline. */
  private keep(rest: Uint8Array): void {
    if (rest.byteLength === 0) return;
    if (this.skipping || this.partialBytes + rest.byteLength > this.limits.maxLine) {
      this.skipping = true;
      this.skipped += this.partialBytes + rest.byteLength;
      this.partial = [];
      this.partialBytes = 0;
      return;
    }
    this.partial.push(rest.slice());
    this.partialBytes += rest.byteLength;
  }

  private note(code: ParseProblem['code'], message: string, offset: number, line: number): void {
    if (this.found.length < this.limits.maxProblems) this.found.push({ code, message, offset, line });
    else this.suppressed++;
  }

  /** One line to a record, or the reason it is not one. */
  private parseLine(line: Uint8Array, offset: number): ImaRecord | string {
    const tokens = splitTokens(line);
    if (tokens.length < 3) return 'fewer than three columns';
    const [pcrText, digestText, nameText] = tokens as [Uint8Array, Uint8Array, Uint8Array];
    const pcr = Number(latin1(pcrText));
    if (!/^\d{1,2}$/.test(latin1(pcrText)) || pcr > this.limits.maxPcr) {
      return `bad PCR column '${latin1(pcrText)}'`;
    }
    const templateDigest = hexToken(digestText, 'template hash');
    if (typeof templateDigest === 'string') return templateDigest;
    if (!this.digestSizeOk(templateDigest.byteLength)) {
      return `template hash of ${templateDigest.byteLength} bytes`;
    }
    const templateName = latin1(nameText);
    if (!/^[\x21-\x7e]{1,255}$/.test(templateName)) return 'bad template name';

    const templateData = rebuildTemplateData(templateName, tokens.slice(3));
    if (typeof templateData === 'string') return templateData;

    const rec = { pcr, templateDigest, templateName, templateData, offset };
    const odd = templateDataProblem(templateName, templateData, true, isViolation(rec));
    if (odd !== undefined) this.note(odd.code, odd.message, offset, this.lineNo);

    return rec;
  }

  private digestSizeOk(size: number): boolean {
    return this.digestBytes === undefined ? DIGEST_SIZES.has(size) : size === this.digestBytes;
  }
}

/**
 * Template data from the field columns of one line. A single name field takes any extra columns
 * joined with spaces: legacy `n` names keep spaces (such as `/tmp/#123 (deleted)`).
 */
export function rebuildTemplateData(templateName: string, columns: Uint8Array[]): Uint8Array | string {
  const d = templateDescriptor(templateName);
  if (d.kind === 'unknown') return `unknown template '${templateName}': its data cannot be rebuilt from text`;
  const fields = fitColumns(d.fields, columns);
  if (typeof fields === 'string') return `${templateName}: ${fields}`;
  if (d.kind === 'legacy') {
    const fileDigest = hexToken(fields[0]!, 'file digest');
    if (typeof fileDigest === 'string') return fileDigest;
    if (fileDigest.byteLength !== 20 || fields[1]!.byteLength > LEGACY_NAME_MAX) {
      return 'legacy ima digest or name size';
    }
    return buildLegacyIma({ fileDigest, name: fields[1]! });
  }
  const data: Uint8Array[] = [];
  for (let i = 0; i < d.fields.length; i++) {
    const bytes = fieldFromAscii(d.fields[i]!, fields[i]!);
    if (typeof bytes === 'string') return `${d.fields[i]}: ${bytes}`;
    data.push(bytes);
  }

  return buildTemplateData(data, 'le');
}

function fitColumns(ids: readonly FieldId[], columns: Uint8Array[]): Uint8Array[] | string {
  if (columns.length === ids.length) return columns;
  const names = ids.flatMap((id, i) => (id === 'n' || id === 'n-ng' ? [i] : []));
  if (columns.length < ids.length || names.length !== 1) {
    return `${columns.length} field columns for ${ids.length} fields`;
  }
  const at = names[0]!;
  const extra = columns.length - ids.length;

  return [
    ...columns.slice(0, at),
    joinSpaced(columns.slice(at, at + extra + 1)),
    ...columns.slice(at + extra + 1),
  ];
}

function joinSpaced(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, parts.length - 1));
  let at = 0;
  for (const p of parts) {
    if (at > 0) out[at++] = SP;
    out.set(p, at);
    at += p.byteLength;
  }

  return out;
}

/** Columns split on single spaces; leading spaces (the `%2d` PCR padding) and a CR are dropped. */
function splitTokens(line: Uint8Array): Uint8Array[] {
  let start = 0;
  while (start < line.byteLength && line[start] === SP) start++;
  let end = line.byteLength;
  if (end > start && line[end - 1] === 0x0d) end--;
  const tokens: Uint8Array[] = [];
  let from = start;
  for (let sp = line.indexOf(SP, from); sp >= 0 && sp < end; sp = line.indexOf(SP, from)) {
    tokens.push(line.subarray(from, sp));
    from = sp + 1;
  }
  tokens.push(line.subarray(from, end));

  return tokens;
}

function isBlank(line: Uint8Array): boolean {
  return line.every((b) => b === SP || b === 0x0d || b === 0x09);
}

function latin1(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('latin1');
}

/**
 * The kernel's ASCII line for a record (ima_ascii_measurements_show): `%2d`, hex digest, name,
 * then each field as rendered by fields.ts, space-separated, with a newline. Unknown templates
 * get their data as one hex column (the kernel cannot print those; this is for display).
 */
export function formatAsciiLine(rec: ImaRecord, byteOrder: ByteOrder = 'le'): string {
  const le = byteOrder === 'le';
  const head = `${String(rec.pcr).padStart(2, ' ')} ${toHex(rec.templateDigest)} ${rec.templateName}`;
  const d = templateDescriptor(rec.templateName);
  if (d.kind === 'legacy') {
    const legacy = splitLegacy(rec.templateData, le);
    if (typeof legacy !== 'string') {
      return `${head} ${toHex(legacy.fileDigest)} ${Buffer.from(legacy.name).toString('utf8')}\n`;
    }
  } else if (d.kind !== 'unknown') {
    const fields = splitFields(rec.templateData, d.fields.length, le);
    if (typeof fields !== 'string') {
      return `${head} ${fields.map((f, i) => fieldToAscii(d.fields[i]!, f, le)).join(' ')}\n`;
    }
  }

  return `${head} ${toHex(rec.templateData)}\n`;
}

/** Parses a whole ASCII log; never throws on bad input. */
export function parseAsciiLog(
  bytes: Uint8Array,
  opts: AsciiParserOptions = {},
): { records: ImaRecord[]; problems: ParseProblem[]; problemsTotal: number } {
  const parser = new AsciiLogParser(opts);
  const records = parser.push(bytes);

  return { records, problems: parser.finish(), problemsTotal: parser.problemCount };
}

export { parseLog } from './parse.ts';
