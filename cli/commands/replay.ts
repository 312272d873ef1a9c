import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { parseArgs } from 'node:util';
import { toHex } from '../../lib/bytes/hex.ts';
import { ImastreamError } from '../../lib/errors.ts';
import {
  canHash,
  DEFAULT_BANKS,
  digestSize,
  type HashAlg,
  hashAlgFromKernelName,
  isHashAlg,
} from '../../lib/hash.ts';
import { parseBinaryLog } from '../../lib/ima/binary.ts';
import { checkTemplateDigest } from '../../lib/ima/check.ts';
import { type ExpectationResult, ExpectationTracker, parseExpectation } from '../../lib/ima/expect.ts';
import { createLogParser, type LogFormat, type LogParser, sniffFormat } from '../../lib/ima/parse.ts';
import { type ByteOrder, type ImaRecord, isViolation, type ParseProblem } from '../../lib/ima/record.ts';
import { PcrReplay, type ReplayState } from '../../lib/ima/replay.ts';
import { type CliIO, EXIT } from '../io.ts';

const USAGE = `usage: imastream replay LOG [--format auto|binary|ascii] [--digest-alg ALG]
                        [--byte-order le|be|auto] [--banks sha1,sha256,...]
                        [--expect BANK:PCR=HEX ...] [--json]

  LOG              binary_runtime_measurements[_<alg>] or ascii_runtime_measurements[_<alg>]
  --format F       log format (default auto: sniffed from the first bytes)
  --digest-alg A   bank of the template-digest column (default: from a _<alg> file name, else sha1)
  --byte-order B   binary logs only (default auto)
  --banks LIST     banks to replay (default sha1,sha256)
  --expect E       a TPM's PCR value BANK:PCR=HEX; repeatable
  --json           one JSON document instead of text

Replays both extend schemes (perbank: each bank's own hash; padded: SHA-1 zero-padded).
A binary log has no separators: a framing problem (PCR index, a length, the template name) stops
the parse there, and the PCR values are those of the records before it. A bad ASCII line is
skipped. A log of which not one record can be read (or an empty file) is unusable input.
exit: 0 ok (with --expect: every value matched), 1 an expected value never matched, 2 unusable input`;

const OPTIONS = {
  format: { type: 'string', default: 'auto' },
  'digest-alg': { type: 'string' },
  'byte-order': { type: 'string', default: 'auto' },
  banks: { type: 'string' },
  expect: { type: 'string', multiple: true },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** Read size: large enough to keep syscalls rare, small enough that memory stays flat. */
const CHUNK = 1 << 20;
/** Digest mismatches and problems listed in full; the rest are counted. */
const LIST_MAX = 1000;

export interface Options {
  path: string;
  format: LogFormat | 'auto';
  /** From --digest-alg. Undefined: the file name's bank, else sha1, for binary logs; for ASCII logs
   * the column's width (the file name's bank only tells SM3 from SHA-256). */
  digestAlg: HashAlg | undefined;
  /** The bank a `binary_runtime_measurements_<bank>` (or ascii_…) file name names, if any. */
  nameAlg: HashAlg | undefined;
  byteOrder: ByteOrder | 'auto';
  banks: HashAlg[];
  expect: string[];
  json: boolean;
}

export interface Summary {
  file: string;
  format: LogFormat;
  /** Undefined: chosen per record by the digest's size (ASCII logs without a bank suffix). */
  digestAlg: HashAlg | undefined;
  records: number;
  templates: Record<string, number>;
  violations: number;
  digestMismatches: { count: number; listed: ParseProblem[] };
  /** The first problems found (the parser caps the list); problemsTotal counts them all. */
  problems: ParseProblem[];
  problemsTotal: number;
  pcrs: ReplayState['pcrs'];
  expectations: ExpectationResult[];
}

/**
 * `imastream replay`: replays an IMA log offline and prints the PCR values it implies. Values
 * computed from a log prove nothing by themselves; `--expect` compares them with values a TPM
 * reported (a verified quote or a PCR read), at every record count, as the quote may lag the log.
 */
export async function run(argv: string[], io: CliIO): Promise<number> {
  const opts = parseOptions(argv);
  if (opts === undefined) {
    io.out(USAGE);
    return EXIT.ok;
  }
  await statFile(opts.path);
  const summary = await replayChunks(readChunks(opts.path), opts);
  if (opts.json) io.out(JSON.stringify(toJson(summary), null, 2));
  else printText(summary, io);
  if (opts.expect.length === 0) return EXIT.ok;

  return summary.expectations.every((e) => e.matchedAt !== null) ? EXIT.ok : EXIT.failed;
}

function usage(message: string): ImastreamError {
  return new ImastreamError('IMS_CLI_USAGE', message);
}

function parseOptions(argv: string[]): Options | undefined {
  let parsed: ReturnType<
    typeof parseArgs<{ args: string[]; options: typeof OPTIONS; allowPositionals: true }>
  >;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true });
  } catch (err) {
    throw usage(err instanceof Error ? err.message : String(err));
  }
  const { values, positionals } = parsed;
  if (values.help) return undefined;
  if (positionals.length !== 1) throw usage('expected exactly one LOG file');
  const path = positionals[0]!;
  const format = oneOf(values.format, ['auto', 'binary', 'ascii'], '--format');
  const byteOrder = oneOf(values['byte-order'], ['auto', 'le', 'be'], '--byte-order');

  return {
    path,
    format,
    byteOrder,
    digestAlg: values['digest-alg'] === undefined ? undefined : bank(values['digest-alg']),
    nameAlg: bankFromFileName(path),
    banks: values.banks === undefined ? [...DEFAULT_BANKS] : values.banks.split(',').map(bank),
    expect: values.expect ?? [],
    json: values.json === true,
  };
}

function oneOf<T extends string>(value: string, allowed: readonly T[], what: string): T {
  if (!(allowed as readonly string[]).includes(value))
    throw usage(`${what} must be one of ${allowed.join(', ')}`);

  return value as T;
}

function bank(name: string): HashAlg {
  const alg = hashAlgFromKernelName(name) ?? (isHashAlg(name) ? name : undefined);
  if (alg === undefined || !canHash(alg)) {
    throw new ImastreamError('IMS_IMA_UNSUPPORTED_ALG', `hash algorithm '${name}' not supported`);
  }

  return alg;
}

/** Spellings of SM3 seen in file names besides the kernel's own (`sm3`, `sm3-256`). */
const SM3_ALIASES = new Set(['sm3_256', 'sm3256']);

/**
 * `binary_runtime_measurements_sha256` was written for the SHA-256 bank (Linux 6.10+). Only a
 * known bank name counts: other suffixes (`_ima`, `_orig`, `_ima-ng_sha256`) are names people give
 * copies, not banks, and are ignored.
 */
function bankFromFileName(path: string): HashAlg | undefined {
  const m = /^(?:binary|ascii)_runtime_measurements_(.+)$/.exec(basename(path));
  if (m === null) return undefined;
  const suffix = m[1]!.toLowerCase();
  if (SM3_ALIASES.has(suffix)) return 'sm3';

  return hashAlgFromKernelName(suffix) ?? (isHashAlg(suffix) ? suffix : undefined);
}

/**
 * The bank of the template-digest field, which frames binary records: --digest-alg, else the
 * file name's bank, else sha1. Undefined for ASCII logs unless --digest-alg is given: the
 * column's hex has its own length.
 */
function framingAlg(opts: Options, format: LogFormat): HashAlg | undefined {
  if (opts.digestAlg !== undefined || format === 'ascii') return opts.digestAlg;
  if (opts.nameAlg !== undefined && !canHash(opts.nameAlg)) bank(opts.nameAlg);

  return opts.nameAlg ?? 'sha1';
}

const BY_SIZE: Readonly<Record<number, HashAlg>> = { 20: 'sha1', 32: 'sha256', 48: 'sha384', 64: 'sha512' };

/**
 * The bank to check a record's digest in: the file's, else guessed from the digest size, where
 * the file name's bank breaks the tie of equal sizes (SM3 and SHA-256).
 */
function checkAlg(fileAlg: HashAlg | undefined, nameAlg: HashAlg | undefined, rec: ImaRecord): HashAlg {
  if (fileAlg !== undefined) return fileAlg;
  const size = rec.templateDigest.byteLength;
  if (nameAlg !== undefined && digestSize(nameAlg) === size && canHash(nameAlg)) return nameAlg;

  return BY_SIZE[size] ?? 'sha1';
}

/** Replays a log read as `chunks` (the file's, in `run`); reading stops at a framing problem. */
export async function replayChunks(chunks: AsyncIterable<Uint8Array>, opts: Options): Promise<Summary> {
  const expectations = opts.expect.map(parseExpectation);
  const replay = new PcrReplay({ banks: opts.banks });
  const tracker = new ExpectationTracker(replay, expectations);
  const s: Summary = {
    file: opts.path,
    format: 'binary',
    digestAlg: opts.digestAlg,
    records: 0,
    templates: {},
    violations: 0,
    digestMismatches: { count: 0, listed: [] },
    problems: [],
    problemsTotal: 0,
    pcrs: {},
    expectations: [],
  };

  const templates = new TemplateCounter();
  const onRecord = (rec: ImaRecord) => {
    replay.extend(rec);
    tracker.observe(rec.pcr);
    s.records++;
    templates.add(rec.templateName);
    if (isViolation(rec)) {
      s.violations++;
      return;
    }
    const alg = checkAlg(s.digestAlg, opts.nameAlg, rec);
    const mismatch = checkTemplateDigest(rec, alg, replay.lastTemplateDigest(alg));
    if (mismatch !== undefined && s.digestMismatches.count++ < LIST_MAX)
      s.digestMismatches.listed.push(mismatch);
  };
  const { format, problems, problemsTotal, head } = await streamRecords(
    chunks,
    opts,
    (format) => {
      s.format = format;
      s.digestAlg = framingAlg(opts, format);
    },
    onRecord,
  );
  s.format = format;
  s.templates = templates.counts();
  s.problems = problems;
  s.problemsTotal = problemsTotal;
  s.pcrs = replay.state().pcrs;
  s.expectations = tracker.results();
  if (s.records === 0) throw noRecords(s, opts, head);

  return s;
}

/**
 * A log of which not one record could be read is unusable: its PCR values would be the initial
 * ones, which an all-zero expectation would "match". The error names the first problem.
 */
function noRecords(s: Summary, opts: Options, head: Uint8Array): ImastreamError {
  const first = s.problems[0];
  if (first === undefined) {
    const message =
      head.byteLength === 0 ? `${s.file}: the file is empty` : `${s.file}: no record in the log`;
    return new ImastreamError('IMS_IMA_NO_RECORDS', message);
  }
  const hint = digestAlgHint(s, opts, first, head);
  const message = `${s.file}: no record could be read: ${where(first)}: ${first.message}${hint}`;

  return new ImastreamError(first.code, message, { details: { offset: first.offset, line: first.line } });
}

/** Banks whose digest size differs from SHA-1's, tried when a binary log's first record fails. */
const OTHER_BANKS: readonly HashAlg[] = ['sha256', 'sha384', 'sha512'];

/**
 * A hint for a per-bank file read with the wrong digest size, given only when it can help: no
 * --digest-alg was given, the first record failed on its framing (not its PCR index, which
 * comes before the digest), and the suggested bank does read a record from the same bytes.
 */
function digestAlgHint(s: Summary, opts: Options, first: ParseProblem, head: Uint8Array): string {
  if (opts.digestAlg !== undefined || s.format !== 'binary' || first.offset !== 0) return '';
  if (first.code === 'IMS_IMA_BAD_PCR') return '';
  const fits = OTHER_BANKS.find(
    (alg) =>
      alg !== s.digestAlg &&
      parseBinaryLog(head, { digestAlg: alg, byteOrder: opts.byteOrder }).records.length > 0,
  );

  return fits === undefined
    ? ''
    : ` (a per-bank binary_runtime_measurements_<alg> file? try --digest-alg ${fits})`;
}

/** Counts records per template name; a log repeats one name in runs, so a run is counted at once. */
class TemplateCounter {
  private readonly total = new Map<string, number>();
  private name: string | undefined;
  private run = 0;

  add(name: string): void {
    if (name === this.name) {
      this.run++;
      return;
    }
    this.flush();
    this.name = name;
    this.run = 1;
  }

  counts(): Record<string, number> {
    this.flush();
    return Object.fromEntries(this.total);
  }

  private flush(): void {
    if (this.name !== undefined) this.total.set(this.name, (this.total.get(this.name) ?? 0) + this.run);
    this.name = undefined;
    this.run = 0;
  }
}

/**
 * Streams the chunks through the incremental parser; the whole log is never in memory. Reading
 * stops at the first framing problem: nothing after it can be parsed, and the rest of a hostile
 * file may be gigabytes (a sparse file costs nothing to make).
 */
async function streamRecords(
  chunks: AsyncIterable<Uint8Array>,
  opts: Options,
  onFormat: (format: LogFormat) => void,
  onRecord: (rec: ImaRecord) => void,
): Promise<{ format: LogFormat; problems: ParseProblem[]; problemsTotal: number; head: Uint8Array }> {
  let parser: LogParser | undefined;
  let head: Uint8Array = new Uint8Array(0);
  let format: LogFormat = opts.format === 'auto' ? 'binary' : opts.format;
  for await (const bytes of chunks) {
    if (parser === undefined) {
      head = bytes;
      format = pickFormat(opts.format, bytes);
      onFormat(format);
      parser = createLogParser(format, { digestAlg: framingAlg(opts, format), byteOrder: opts.byteOrder });
    }
    for (const rec of parser.push(bytes)) onRecord(rec);
    if (parser.hasStopped) break;
  }
  const problems = parser?.finish() ?? [];

  return { format, problems, problemsTotal: parser?.problemCount ?? 0, head };
}

/** The file's bytes in chunks, each a plain Uint8Array view; read errors become IMS_IO_READ_FAILED. */
async function* readChunks(path: string): AsyncGenerator<Uint8Array> {
  const stream = createReadStream(path, { highWaterMark: CHUNK });
  try {
    for await (const chunk of stream) {
      // A plain Uint8Array view, so every byte array the replay touches has one shape (a mix
      // of Buffer and Uint8Array makes the per-record byte loops polymorphic, hence slower).
      const b = chunk as Buffer;
      yield new Uint8Array(b.buffer, b.byteOffset, b.length);
    }
  } catch (err) {
    throw new ImastreamError('IMS_IO_READ_FAILED', `${path}: ${(err as Error).message}`, { cause: err });
  } finally {
    stream.destroy();
  }
}

async function statFile(path: string): Promise<void> {
  try {
    const st = await stat(path);
    if (!st.isFile()) throw new Error('not a regular file');
  } catch (err) {
    throw new ImastreamError('IMS_IO_READ_FAILED', `${path}: ${(err as Error).message}`, { cause: err });
  }
}

function pickFormat(requested: LogFormat | 'auto', head: Uint8Array): LogFormat {
  if (requested !== 'auto') return requested;
  const sniffed = sniffFormat(head);
  if (sniffed === undefined) {
    throw new ImastreamError('IMS_IMA_UNKNOWN_FORMAT', 'the file is neither a binary nor an ASCII IMA log');
  }

  return sniffed;
}

function toJson(s: Summary): Record<string, unknown> {
  return {
    ...s,
    digestMismatches: { count: s.digestMismatches.count, listed: s.digestMismatches.listed },
    expectations: s.expectations.map((e) => ({
      bank: e.expectation.bank,
      pcr: e.expectation.pcr,
      value: toHex(e.expectation.value),
      matchedAt: e.matchedAt,
      scheme: e.scheme,
    })),
  };
}

function printText(s: Summary, io: CliIO): void {
  io.out(`log: ${s.file} (${s.format}, template digests ${s.digestAlg ?? 'by size'})`);
  const templates = Object.entries(s.templates).map(([name, n]) => `${name} ${n}`);
  io.out(`records: ${s.records}${templates.length > 0 ? ` (${templates.join(', ')})` : ''}`);
  io.out(`violations: ${s.violations}`);
  io.out(`digest mismatches: ${s.digestMismatches.count}`);
  for (const p of s.digestMismatches.listed.slice(0, 20)) io.out(`  at byte ${p.offset}: ${p.message}`);
  const listed = s.problemsTotal > s.problems.length ? ` (first ${s.problems.length} listed)` : '';
  io.out(`parse problems: ${s.problemsTotal}${listed}`);
  for (const p of s.problems.slice(0, 20)) io.out(`  ${where(p)}: ${p.code}: ${p.message}`);
  for (const [scheme, banks] of Object.entries(s.pcrs)) {
    io.out(`PCR values (${scheme}):`);
    for (const [alg, values] of Object.entries(banks ?? {})) {
      for (const [pcr, hex] of Object.entries(values))
        io.out(`  ${alg.padEnd(6)} PCR${pcr.padStart(2, '0')} ${hex}`);
    }
  }
  for (const e of s.expectations) io.out(expectationLine(e));
}

function where(p: ParseProblem): string {
  return p.line === undefined ? `at byte ${p.offset}` : `line ${p.line} (byte ${p.offset})`;
}

function expectationLine(e: ExpectationResult): string {
  const what = `${e.expectation.bank}:${e.expectation.pcr}=${toHex(e.expectation.value)}`;
  if (e.matchedAt === null) return `expect ${what}: NOT matched at any record count`;

  return `expect ${what}: matched after ${e.matchedAt} records (${e.scheme})`;
}
