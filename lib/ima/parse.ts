import type { HashAlg } from '../hash.ts';
import { type AsciiLimits, AsciiLogParser } from './ascii.ts';
import { type BinaryLimits, BinaryLogParser } from './binary.ts';
import type { ByteOrder, ImaRecord, ParseProblem } from './record.ts';

export type LogFormat = 'binary' | 'ascii';

/** The push/finish shape both incremental parsers share. */
export interface LogParser {
  push(chunk: Uint8Array): ImaRecord[];
  /** Ends the stream; returns the listed problems (capped, so see problemCount for the total). */
  finish(): ParseProblem[];
  /** Every problem found, listed or only counted. */
  readonly problemCount: number;
  /** Whether a framing problem ended the parse: later pushes are ignored. */
  readonly hasStopped: boolean;
}

export interface ParseLogOptions {
  format?: LogFormat | 'auto';
  /** Bank of the template-digest field (binary: sha1 unless an `_<alg>` file). */
  digestAlg?: HashAlg;
  byteOrder?: ByteOrder | 'auto';
  limits?: Partial<BinaryLimits & AsciiLimits>;
}

const ASCII_LINE = /^ ?\d{1,2} [0-9a-fA-F]{40,128} [\x21-\x7e]+(?: |\r?\n|$)/;

/**
 * Which format a log starts with, from its first bytes (≥ 16 for a fair guess). A binary record
 * starts with a u32 PCR index, which holds a zero byte for any sane index in either byte order;
 * an ASCII line starts with the `%2d` PCR and a hex template hash. Undefined: neither.
 */
export function sniffFormat(head: Uint8Array): LogFormat | undefined {
  if (head.byteLength === 0) return 'binary';
  if (head.subarray(0, 4).includes(0)) return 'binary';
  const text = Buffer.from(head.buffer, head.byteOffset, Math.min(head.byteLength, 512)).toString('latin1');

  return ASCII_LINE.test(text) ? 'ascii' : undefined;
}

/** An incremental parser for a known format. */
export function createLogParser(format: LogFormat, opts: ParseLogOptions = {}): LogParser {
  if (format === 'ascii') return new AsciiLogParser({ digestAlg: opts.digestAlg, limits: opts.limits });

  return new BinaryLogParser({ digestAlg: opts.digestAlg, byteOrder: opts.byteOrder, limits: opts.limits });
}

/**
 * Parses a whole log in either format (sniffed when `auto`). Never throws on bad input: an
 * unrecognised format is a problem at offset 0 and no records.
 */
export function parseLog(
  bytes: Uint8Array,
  opts: ParseLogOptions = {},
): {
  format: LogFormat | undefined;
  records: ImaRecord[];
  problems: ParseProblem[];
  /** Every problem found; `problems` lists at most the parser's maxProblems of them. */
  problemsTotal: number;
} {
  const format = opts.format === undefined || opts.format === 'auto' ? sniffFormat(bytes) : opts.format;
  if (format === undefined) {
    const message = 'input is neither a binary nor an ASCII IMA log';
    const problems: ParseProblem[] = [{ code: 'IMS_IMA_UNKNOWN_FORMAT', message, offset: 0 }];
    return { format, records: [], problems, problemsTotal: 1 };
  }
  const parser = createLogParser(format, opts);
  const records = parser.push(bytes);

  const problems = parser.finish();

  return { format, records, problems, problemsTotal: parser.problemCount };
}
