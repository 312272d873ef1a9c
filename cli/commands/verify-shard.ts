import { parseArgs } from 'node:util';
import { ImastreamError, isImastreamError } from '../../lib/errors.ts';
import { decodeShard, sniffShard } from '../../lib/shard/decode.ts';
import type { ShardChainVerdict, ShardResult } from '../../lib/shard/verdict.ts';
import { verifyShardChain } from '../../lib/shard/verify.ts';
import { parsePublic } from '../../lib/tpm/public.ts';
import { type CliIO, EXIT } from '../io.ts';
import { INPUT_LIMITS, readInputFile } from '../read-input.ts';

const USAGE = `usage: imastream verify-shard FILE... [--ak AKPUB] [--json]

  FILE...     sealed shard files of one boot, in any order: they are chained by their startSeq
              (a file that does not decode keeps its place and fails)
  --ak AKPUB  the host's enrolled AK (TPM2B_PUBLIC, as tpm2_createak -u writes it); without it the
              chain is checked against its own AK and vouches only for itself
  --json      one JSON document instead of text

Offline: needs no Kafka and no Redis.
exit: 0 every shard verified, 1 a shard failed verification, 2 unusable input`;

const OPTIONS = {
  ak: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** Verifies a chain of sealed shards offline and prints which shard failed and why. */
export async function run(argv: string[], io: CliIO): Promise<number> {
  const { values, positionals } = parseCli(argv);
  if (values.help === true) {
    io.out(USAGE);
    return EXIT.ok;
  }
  if (positionals.length === 0) throw usageError('no shard file given');

  const read = await Promise.all(positionals.map(readShardFile));
  const order = seqOrder(read);
  const files = order.map((i) => read[i] as Uint8Array);
  const paths = order.map((i) => positionals[i] as string);
  const trustedAk = values.ak === undefined ? undefined : await readAk(values.ak);
  const verdict = await verifyShardChain(files, { trustedAk });
  if (values.json === true) io.out(JSON.stringify({ files: paths, ...verdict }, null, 2));
  else printText(io, paths, verdict);

  return verdict.ok ? EXIT.ok : EXIT.failed;
}

/**
 * Indexes of `files` in chain order: the decodable ones sorted by their claimed startSeq (a shell
 * glob lists 1000-1200 before 200-400), in the slots they occupy; a file that does not decode stays
 * where it was given, so it breaks the chain where the user put it. The order is only a claim:
 * the digest links and start PCRs are still checked shard by shard.
 */
function seqOrder(files: Uint8Array[]): number[] {
  const seq = files.map((f) => {
    try {
      return decodeShard(f).startSeq;
    } catch {
      return undefined;
    }
  });
  const slots = files.map((_, i) => i).filter((i) => seq[i] !== undefined);
  const sorted = [...slots].sort((a, b) => (seq[a] as number) - (seq[b] as number) || a - b);
  const order = files.map((_, i) => i);
  slots.forEach((slot, k) => {
    order[slot] = sorted[k] as number;
  });

  return order;
}

function parseCli(argv: string[]) {
  try {
    return parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (err) {
    throw usageError(err instanceof Error ? err.message : String(err));
  }
}

function usageError(message: string): ImastreamError {
  return new ImastreamError('IMS_CLI_USAGE', `${message}\n${USAGE}`);
}

/** Reads a file and checks it is a shard at all: anything else is unusable input, not a verdict. */
async function readShardFile(path: string): Promise<Uint8Array> {
  const bytes = await readInputFile(path, 'shard', INPUT_LIMITS.shard);
  try {
    sniffShard(bytes);
  } catch (err) {
    if (!isImastreamError(err)) throw err;
    throw new ImastreamError('IMS_SHARD_BAD_FORMAT', `${path}: ${err.message}`, { cause: err });
  }

  return bytes;
}

async function readAk(path: string): Promise<Uint8Array> {
  const bytes = await readInputFile(path, 'AK', INPUT_LIMITS.tpmStructure);
  parsePublic(bytes); // a malformed AK is unusable input (IMS_TPM_BAD_PUBLIC), exit 2

  return bytes;
}

function printText(io: CliIO, paths: string[], verdict: ShardChainVerdict): void {
  for (const shard of verdict.shards) printShard(io, paths[shard.index] ?? '?', shard);
  const ok = verdict.shards.filter((s) => s.ok).length;
  io.out(`${verdict.ok ? 'OK' : 'FAILED'}: ${ok}/${verdict.shards.length} shards verified`);
  if (!verdict.akTrusted) io.out('note: no --ak given; the chain was checked against its own AK only');
  if (!verdict.anchored)
    io.out('note: the chain does not start at seq 0; its first start state is taken as given');
}

function printShard(io: CliIO, path: string, shard: ShardResult): void {
  const id = printable(shard.shardId ?? '(unreadable)');
  const scheme = shard.scheme === undefined ? '' : ` scheme=${shard.scheme ?? 'undecided'}`;
  io.out(`${shard.ok ? 'ok  ' : 'FAIL'} ${path} ${id}${shard.ok ? scheme : ''}`);
  for (const f of shard.failures) io.out(`     ${f.code}: ${printable(f.message)}`);
  for (const m of shard.replayMismatches.slice(0, 8)) {
    io.out(`     ${m.scheme} ${m.bank} PCR ${m.pcr}: quoted ${m.expected}, replayed ${m.got}`);
  }
}

/**
 * Host and boot ids come from the file, which anyone can write: shown escaped (\u{1b} …) outside
 * printable ASCII, so a crafted shard cannot send escape sequences to the operator's terminal.
 */
function printable(text: string): string {
  return text.replace(/[^\x20-\x7e]/gu, (c) => `\\u{${(c.codePointAt(0) as number).toString(16)}}`);
}
