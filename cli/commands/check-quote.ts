import { X509Certificate } from 'node:crypto';
import { parseArgs } from 'node:util';
import { fromHex, toHex } from '../../lib/bytes/hex.ts';
import { ImastreamError } from '../../lib/errors.ts';
import { digestSize, type HashAlg, isHashAlg } from '../../lib/hash.ts';
import { parseLog } from '../../lib/ima/parse.ts';
import type { ImaRecord, ParseProblem } from '../../lib/ima/record.ts';
import { EXTEND_SCHEMES, type ExtendScheme, PcrReplay } from '../../lib/ima/replay.ts';
import type { PcrValues } from '../../lib/pcr.ts';
import type { Attest } from '../../lib/tpm/attest.ts';
import { publicFromPem, publicFromSpki } from '../../lib/tpm/key.ts';
import { computePcrDigest, type MissingPcr } from '../../lib/tpm/pcr-digest.ts';
import { type PcrFileFormat, parsePcrFile } from '../../lib/tpm/pcr-file.ts';
import { formatSelectionSpec, type PcrSelection } from '../../lib/tpm/pcr-selection.ts';
import { type AkPublic, parsePublic } from '../../lib/tpm/public.ts';
import { type QuoteFailure, type QuoteVerdict, verifyQuote } from '../../lib/tpm/quote.ts';
import { type CliIO, EXIT } from '../io.ts';
import { INPUT_LIMITS, readInputFile } from '../read-input.ts';

const USAGE = `usage: imastream check-quote --quote MSG --sig SIG --ak AKPUB [--nonce HEX]
                            [--log LOG [--log-alg ALG]] [--pcrs FILE [--pcrs-format F]] [--json]

  --quote MSG        TPMS_ATTEST (tpm2_quote -m)
  --sig SIG          TPMT_SIGNATURE (tpm2_quote -s, tss format)
  --ak AKPUB         AK public: TPM2B_PUBLIC / TPMT_PUBLIC, PEM or DER SPKI, or a PEM/DER certificate
  --nonce HEX        the nonce the quote must carry in extraData
  --log LOG          IMA log (binary or ASCII): the pcrDigest must equal its replay after some record
  --log-alg ALG      template-digest bank of a binary per-bank log (default sha1)
  --pcrs FILE        PCR values (tpm2_quote -o); with --log, only for PCRs the log never extends
  --pcrs-format F    serialized (default), values or text (BANK:PCR=HEX per line)
  --json             one JSON object instead of text

exit: 0 valid, 1 not valid (reason codes printed), 2 unusable input`;

const OPTIONS = {
  quote: { type: 'string' },
  sig: { type: 'string' },
  ak: { type: 'string' },
  nonce: { type: 'string' },
  log: { type: 'string' },
  'log-alg': { type: 'string' },
  pcrs: { type: 'string' },
  'pcrs-format': { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** Where the quote's PCR values were found in the log. */
interface LogMatch {
  /** Records replayed when the quote was taken (0 = before the first). */
  count: number;
  schemes: ExtendScheme[];
  records: number;
}

interface Outcome {
  verdict: QuoteVerdict;
  failures: QuoteFailure[];
  logMatch?: LogMatch;
  /** What the log parser reported; records after a framing problem are not replayed. */
  logProblems?: ParseProblem[];
  /** How many problems the parser found; `logProblems` lists the first of them. */
  logProblemsTotal?: number;
  pcrsChecked: boolean;
  /** Without a nonce, nothing shows the quote is recent: a valid old quote is still valid. */
  nonceChecked?: boolean;
}

/**
 * `imastream check-quote`: verifies one quote offline with our own verifier (signature, nonce,
 * pcrDigest against a PCR file or a log replay). The AK is taken as given: this checks a quote,
 * not that the AK belongs to a TPM.
 */
export async function run(argv: string[], io: CliIO): Promise<number> {
  const args = parseCliArgs(argv);
  if (args.help) {
    io.out(USAGE);
    return EXIT.ok;
  }
  const attest = await readInputFile(required(args.quote, '--quote'), 'quote', INPUT_LIMITS.tpmStructure);
  const signature = await readInputFile(required(args.sig, '--sig'), 'signature', INPUT_LIMITS.tpmStructure);
  const akPublic = parseAkFile(
    await readInputFile(required(args.ak, '--ak'), 'AK', INPUT_LIMITS.tpmStructure),
  );
  const nonce = args.nonce === undefined ? undefined : fromHex(args.nonce, '--nonce');
  const verdict = await verifyQuote({ attest, signature, akPublic, nonce });
  const outcome = { ...(await checkPcrs(verdict, args)), nonceChecked: nonce !== undefined };
  report(outcome, args.json === true, io);

  return outcome.failures.length === 0 ? EXIT.ok : EXIT.failed;
}

type Args = ReturnType<typeof parseCliArgs>;

function parseCliArgs(argv: string[]) {
  try {
    return parseArgs({ args: argv, options: OPTIONS, strict: true, allowPositionals: false }).values;
  } catch (cause) {
    throw new ImastreamError('IMS_CLI_USAGE', `${(cause as Error).message}\n${USAGE}`, { cause });
  }
}

function required(value: string | undefined, flag: string): string {
  if (value === undefined) throw new ImastreamError('IMS_CLI_USAGE', `${flag} is required\n${USAGE}`);

  return value;
}

/** The AK from whichever form the file holds: PEM key or certificate, DER SPKI or certificate, TPM bytes. */
export function parseAkFile(bytes: Uint8Array): AkPublic {
  const text = Buffer.from(bytes).toString('latin1');
  if (text.includes('-----BEGIN CERTIFICATE-----')) return publicOfCertificate(bytes);
  if (text.includes('-----BEGIN')) return publicFromPem(text);
  if (bytes[0] === 0x30) {
    try {
      return publicOfCertificate(bytes);
    } catch {
      return publicFromSpki(bytes);
    }
  }

  return parsePublic(bytes);
}

function publicOfCertificate(bytes: Uint8Array): AkPublic {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(Buffer.from(bytes));
  } catch (cause) {
    throw new ImastreamError('IMS_TPM_BAD_PUBLIC', 'AK certificate cannot be parsed', { cause });
  }

  return publicFromSpki(new Uint8Array(cert.publicKey.export({ type: 'spki', format: 'der' })));
}

/** Adds the pcrDigest check (PCR file, log replay, or both) to the verdict's failures. */
async function checkPcrs(verdict: QuoteVerdict, args: Args): Promise<Outcome> {
  const failures = [...verdict.failures];
  const { attest, signature } = verdict;
  if (
    attest?.quote === undefined ||
    signature === undefined ||
    (args.log === undefined && args.pcrs === undefined)
  ) {
    return { verdict, failures, pcrsChecked: false };
  }
  const fileValues =
    args.pcrs === undefined ? undefined : await readPcrFile(args.pcrs, args, attest.quote.pcrSelection);
  if (args.log === undefined) {
    failures.push(...digestFailures(attest, fileValues!, signature.hashAlg));
    return { verdict, failures, pcrsChecked: true };
  }
  const { records, problems, problemsTotal } = await readLog(args.log, args['log-alg']);
  const logMatch = matchLog(attest, records, fileValues, signature.hashAlg);
  if (logMatch === undefined) {
    failures.push({
      code: 'QUOTE_PCR_DIGEST_MISMATCH',
      message: `no prefix of the ${records.length}-record log gives pcrDigest`,
    });
  }

  const logProblems = { logProblems: problems, logProblemsTotal: problemsTotal };

  return { verdict, failures, pcrsChecked: true, ...logProblems, ...(logMatch && { logMatch }) };
}

async function readPcrFile(path: string, args: Args, selection: PcrSelection): Promise<PcrValues> {
  const format = args['pcrs-format'] ?? 'serialized';
  if (format !== 'serialized' && format !== 'values' && format !== 'text') {
    throw new ImastreamError('IMS_CLI_USAGE', `--pcrs-format ${format}: serialized, values or text`);
  }

  return parsePcrFile(
    await readInputFile(path, 'PCR file', INPUT_LIMITS.tpmStructure),
    format satisfies PcrFileFormat,
    selection,
  );
}

function digestFailures(attest: Attest, values: PcrValues, hashAlg: HashAlg): QuoteFailure[] {
  const digest = computePcrDigest(attest.quote!.pcrSelection, values, hashAlg);
  if (!(digest instanceof Uint8Array)) throw missingPcrs(digest.missing, 'the PCR file');
  if (Buffer.compare(digest, attest.quote!.pcrDigest) !== 0) {
    return [{ code: 'QUOTE_PCR_DIGEST_MISMATCH', message: `PCR values give ${toHex(digest)}` }];
  }

  return [];
}

async function readLog(
  path: string,
  alg: string | undefined,
): Promise<{ records: ImaRecord[]; problems: ParseProblem[]; problemsTotal: number }> {
  const bytes = await readInputFile(path, 'log', INPUT_LIMITS.log);
  if (alg !== undefined && !isHashAlg(alg)) throw new ImastreamError('IMS_CLI_USAGE', `--log-alg ${alg}`);
  const parsed = parseLog(bytes, { format: 'auto', ...(alg !== undefined && { digestAlg: alg }) });
  if (parsed.records.length === 0) {
    // Nothing to replay is unusable input, as in `imastream replay`: never a match at count 0.
    const first = parsed.problems[0];
    throw new ImastreamError(
      first?.code ?? 'IMS_IMA_NO_RECORDS',
      `log ${path}: no record could be read${first ? `: at byte ${first.offset}: ${first.message}` : ''}`,
      { details: { offset: first?.offset ?? 0 } },
    );
  }

  return { records: parsed.records, problems: parsed.problems, problemsTotal: parsed.problemsTotal };
}

/**
 * The first record count at which the log's replay reproduces pcrDigest, under either extend
 * scheme. PCRs the log extends come from the replay (zeros before their first record); the
 * rest must come from the PCR file.
 */
function matchLog(
  attest: Attest,
  records: ImaRecord[],
  fileValues: PcrValues | undefined,
  hashAlg: HashAlg,
): LogMatch | undefined {
  const { pcrSelection, pcrDigest } = attest.quote!;
  const banks = pcrSelection.flatMap(({ bank }) => (typeof bank === 'number' ? [] : [bank]));
  const logPcrs = new Set(records.map((r) => r.pcr));
  const replay = new PcrReplay({ banks: [...new Set(banks)], schemes: EXTEND_SCHEMES });
  for (let count = 0; ; count++) {
    const schemes = EXTEND_SCHEMES.filter((scheme) => {
      const values = mergeValues(replay.values(scheme), logPcrs, fileValues, pcrSelection);
      const digest = computePcrDigest(pcrSelection, values, hashAlg);
      if (!(digest instanceof Uint8Array)) throw missingPcrs(digest.missing, 'the log');
      return Buffer.compare(digest, pcrDigest) === 0;
    });
    if (schemes.length > 0) return { count, schemes, records: records.length };
    const record = records[count];
    if (record === undefined) return undefined;
    replay.extend(record);
  }
}

/** Selected values: the replay's for PCRs the log extends (zeros until extended), else the file's. */
function mergeValues(
  replayed: PcrValues,
  logPcrs: Set<number>,
  fileValues: PcrValues | undefined,
  selection: PcrSelection,
): PcrValues {
  const out: PcrValues = new Map();
  for (const { bank, pcrs } of selection) {
    if (typeof bank === 'number') continue;
    const values = out.get(bank) ?? new Map<number, Uint8Array>();
    for (const pcr of pcrs) {
      const value = logPcrs.has(pcr)
        ? (replayed.get(bank)?.get(pcr) ?? new Uint8Array(digestSize(bank)))
        : fileValues?.get(bank)?.get(pcr);
      if (value !== undefined) values.set(pcr, value);
    }
    out.set(bank, values);
  }

  return out;
}

function missingPcrs(missing: MissingPcr[], source: string): ImastreamError {
  const list = missing.map(
    ({ bank, pcr }) => `${typeof bank === 'number' ? `0x${bank.toString(16)}` : bank}:${pcr}`,
  );

  return new ImastreamError(
    'IMS_CLI_USAGE',
    `no value for PCR ${list.join(', ')} in ${source}; give them with --pcrs`,
    {
      details: { missing: list },
    },
  );
}

function report(outcome: Outcome, json: boolean, io: CliIO): void {
  const { verdict, failures, logMatch, logProblems } = outcome;
  const attest = verdict.attest;
  const summary = {
    ok: failures.length === 0,
    failures,
    signature: verdict.signature && { sigAlg: verdict.signature.sigAlg, hashAlg: verdict.signature.hashAlg },
    quote: attest && {
      qualifiedSigner: toHex(attest.qualifiedSigner),
      extraData: toHex(attest.extraData),
      clock: attest.clockInfo.clock.toString(),
      resetCount: attest.clockInfo.resetCount,
      restartCount: attest.clockInfo.restartCount,
      safe: attest.clockInfo.safe,
      firmwareVersion: `0x${attest.firmwareVersion.toString(16)}`,
      selection: attest.quote?.pcrSelection,
      pcrDigest: attest.quote && toHex(attest.quote.pcrDigest),
    },
    pcrsChecked: outcome.pcrsChecked,
    nonceChecked: outcome.nonceChecked === true,
    logMatch,
    logProblems,
  };
  if (json) {
    io.out(JSON.stringify(summary));
    return;
  }
  if (attest?.quote !== undefined && verdict.signature !== undefined) {
    const { sigAlg, hashAlg } = verdict.signature;
    const selection = formatSelectionSpec(attest.quote.pcrSelection);
    io.out(`quote: ${sigAlg}/${hashAlg}, selection ${selection}, resetCount ${attest.clockInfo.resetCount}`);
  }
  const problems = logProblems ?? [];
  for (const p of problems.slice(0, 5)) io.err(`log problem at offset ${p.offset}: ${p.code}: ${p.message}`);
  const total = outcome.logProblemsTotal ?? problems.length;
  if (total > 5) io.err(`log: ${total - 5} more problems`);
  for (const line of textLines(summary, logMatch)) io.out(line);
}

function textLines(
  summary: { ok: boolean; failures: QuoteFailure[]; pcrsChecked: boolean; nonceChecked: boolean },
  m?: LogMatch,
): string[] {
  const lines = summary.failures.map((f) => `${f.code}: ${f.message}`);
  if (m !== undefined) {
    const schemes = m.schemes.join(', ');
    lines.push(`log: pcrDigest matches after ${m.count} of ${m.records} records (extend scheme ${schemes})`);
  }
  if (!summary.pcrsChecked) lines.push('pcrDigest not checked (no --log or --pcrs)');
  if (!summary.nonceChecked) lines.push('nonce not checked (no --nonce): nothing shows the quote is recent');
  lines.push(summary.ok ? 'quote: valid' : 'quote: NOT valid');

  return lines;
}
