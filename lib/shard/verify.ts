import { bytesEqual, isAllZero, toHex } from '../bytes/hex.ts';
import { isImastreamError } from '../errors.ts';
import type { ExtendScheme } from '../ima/replay.ts';
import type { PcrValues } from '../pcr.ts';
import type { Attest } from '../tpm/attest.ts';
import { checkBootAggregate } from './boot-aggregate.ts';
import { decodeShard } from './decode.ts';
import { computeShardDigest, storedShardDigest } from './format.ts';
import { checkAk, checkClosingQuote, checkCounters, trustedAkArea } from './quote-check.ts';
import { eventName, parseShardRecords } from './records.ts';
import { allZero, replayAgainstQuote, samePcrValues } from './replay-check.ts';
import type { SealedShard } from './types.ts';
import type { ShardChainVerdict, ShardFailure, ShardResult } from './verdict.ts';

export interface VerifyShardOptions {
  /** The enrolled AK (TPM2B_PUBLIC or TPMT_PUBLIC bytes). Without it the chain's own AK is used. */
  trustedAk?: Uint8Array;
}

/** What the next shard is checked against. */
interface Previous {
  shard?: SealedShard;
  /** Digest the file carries in its last 32 bytes. */
  digest: Uint8Array;
  attest?: Attest;
  scheme: ExtendScheme | null;
}

/**
 * Verifies a chain of sealed shard files of one boot, in order, offline (DOMAIN §3.5):
 * integrity; continuity with the previous shard (host, boot, seq, digest link); start PCRs equal
 * to the previous quoted end (zeros and a boot_aggregate first at seq 0); replay of the records to
 * the closing quote's PCRs, finding the extend scheme; the quote's signature, nonce and pcrDigest;
 * one AK along the chain (or the trusted one); counters that never go back.
 *
 * Never throws for a failed verification: every problem is a failure in the shard's result.
 * Throws IMS_SHARD_BAD_FORMAT only for a `trustedAk` that does not parse (caller's input).
 */
export async function verifyShardChain(
  files: readonly Uint8Array[],
  opts: VerifyShardOptions = {},
): Promise<ShardChainVerdict> {
  const trusted = opts.trustedAk === undefined ? undefined : trustedAkArea(opts.trustedAk);
  let akReference = trusted;
  let prev: Previous | undefined;
  const shards: ShardResult[] = [];
  for (const [index, file] of files.entries()) {
    const { result, next, akArea } = await verifyOne(index, file, prev, akReference, trusted !== undefined);
    akReference ??= akArea;
    shards.push(result);
    prev = next;
  }
  const first = shards[0];

  return {
    ok: shards.length > 0 && shards.every((s) => s.ok),
    akTrusted: trusted !== undefined,
    anchored: first?.startSeq === 0,
    shards,
  };
}

async function verifyOne(
  index: number,
  file: Uint8Array,
  prev: Previous | undefined,
  akReference: Uint8Array | undefined,
  akTrusted: boolean,
): Promise<{ result: ShardResult; next: Previous; akArea?: Uint8Array }> {
  const result: ShardResult = {
    index,
    digest: toHex(digestOf(file)),
    ok: false,
    failures: [],
    replayMismatches: [],
  };
  const next: Previous = {
    digest: file.byteLength >= 32 ? storedShardDigest(file) : new Uint8Array(0),
    scheme: null,
  };
  const shard = decodeOrFail(file, result.failures);
  if (shard === undefined) {
    if (prev !== undefined) next.scheme = prev.scheme;
    return { result, next };
  }
  Object.assign(result, {
    shardId: `${shard.bootId}:${shard.startSeq}-${shard.endSeq}`,
    hostId: shard.hostId,
    bootId: shard.bootId,
    startSeq: shard.startSeq,
    endSeq: shard.endSeq,
  });
  next.shard = shard;

  result.failures.push(...checkLink(shard, prev), ...checkStart(shard, prev));
  const quote = await checkClosingQuote(shard.closingQuote);
  result.failures.push(...quote.failures);
  if (quote.akArea !== undefined && akReference !== undefined) {
    result.failures.push(...checkAk(quote.akArea, akReference, akTrusted));
  }
  if (quote.attest !== undefined) {
    result.failures.push(...checkCounters(prev?.attest, quote.attest, shard.bootId));
    next.attest = quote.attest;
  }
  const scheme = checkReplay(shard, prev?.scheme ?? null, result);
  next.scheme = scheme ?? prev?.scheme ?? null;
  result.scheme = scheme;
  result.ok = result.failures.length === 0;

  return { result, next, akArea: quote.akArea };
}

function digestOf(file: Uint8Array): Uint8Array {
  return file.byteLength >= 32 ? computeShardDigest(file) : new Uint8Array(0);
}

function decodeOrFail(file: Uint8Array, failures: ShardFailure[]): SealedShard | undefined {
  try {
    return decodeShard(file);
  } catch (err) {
    if (!isImastreamError(err)) throw err;
    const code = err.code === 'IMS_SHARD_CORRUPT' ? 'SHARD_INTEGRITY' : 'SHARD_MALFORMED';
    failures.push({ code, message: `${err.code}: ${err.message}` });
    return undefined;
  }
}

/** Continuity: same host and boot, seq carrying on, and the digest link to the previous file. */
function checkLink(shard: SealedShard, prev: Previous | undefined): ShardFailure[] {
  const fail = (message: string): ShardFailure[] => [{ code: 'SHARD_CHAIN_BREAK', message }];
  if (prev === undefined) {
    const first = shard.startSeq === 0 && !isAllZero(shard.prevShardDigest);
    return first ? fail('the first shard of a boot links to a previous shard') : [];
  }
  if (!bytesEqual(shard.prevShardDigest, prev.digest))
    return fail('prevShardDigest is not the previous shard');
  if (prev.shard === undefined) return fail('the previous shard is unreadable');
  if (shard.hostId !== prev.shard.hostId || shard.bootId !== prev.shard.bootId) {
    return fail(`host/boot ${shard.hostId}/${shard.bootId} after ${prev.shard.hostId}/${prev.shard.bootId}`);
  }
  if (shard.startSeq !== prev.shard.endSeq)
    return fail(`starts at seq ${shard.startSeq}, previous ended at ${prev.shard.endSeq}`);

  return [];
}

/** Start PCRs: the previous shard's quoted end, or zeros and a boot_aggregate at seq 0. */
function checkStart(shard: SealedShard, prev: Previous | undefined): ShardFailure[] {
  const fail = (message: string): ShardFailure[] => [{ code: 'SHARD_START_MISMATCH', message }];
  if (shard.startSeq === 0) {
    if (!allZero(shard.startPcrs)) return fail('a boot starts from all-zero PCRs');
    const problem = checkBootAggregateFirst(shard);
    return problem === undefined ? [] : fail(problem);
  }
  if (prev?.shard !== undefined && !samePcrValues(shard.startPcrs, prev.shard.closingQuote.pcrs)) {
    return fail("start PCRs differ from the previous shard's quoted PCRs");
  }

  return [];
}

/**
 * The first record of a boot must be boot_aggregate; when the closing quote covers PCRs 0–7 (0–9)
 * of its bank, its digest must match them too. Quoted values are trusted only if the quote
 * verified, which the quote check reports separately.
 */
function checkBootAggregateFirst(shard: SealedShard): string | undefined {
  if (shard.records.length === 0) return undefined;
  const littleEndian = shard.recordFormat.byteOrder === 'le';
  const { records } = parseShardRecords(shard.records.slice(0, 1), shard.recordFormat, 0);
  const first = records[0];
  if (first === undefined || eventName(first, littleEndian) !== 'boot_aggregate') {
    return 'the first record of a boot is not boot_aggregate';
  }
  if (checkBootAggregate(first, shard.closingQuote.pcrs, littleEndian) === 'mismatch') {
    return 'boot_aggregate does not match the quoted PCRs 0-9';
  }

  return undefined;
}

/** Replays the records and records failures; returns the scheme found (null when undecidable). */
function checkReplay(
  shard: SealedShard,
  pinned: ExtendScheme | null,
  result: ShardResult,
): ExtendScheme | null {
  const { records, problems } = parseShardRecords(shard.records, shard.recordFormat, shard.startSeq);
  for (const p of problems)
    result.failures.push({ code: 'SHARD_BAD_RECORD', message: `seq ${p.seq}: ${p.message}` });
  if (problems.length > 0) return null;

  const outcome = replayAgainstQuote(shard.startPcrs, records, shard.closingQuote.pcrs);
  const fail = (code: ShardFailure['code'], message: string) => result.failures.push({ code, message });
  if (outcome.unquoted.length > 0)
    fail('SHARD_REPLAY_MISMATCH', `PCRs ${outcome.unquoted.join(', ')} not quoted`);
  if (records.length > 0 && outcome.compared === 0) fail('SHARD_REPLAY_MISMATCH', 'no quoted PCR to compare');
  const dropped = notQuoted(shard.startPcrs, shard.closingQuote.pcrs);
  if (dropped.length > 0) {
    fail('SHARD_REPLAY_MISMATCH', `start PCRs ${dropped.join(', ')} not quoted: the chain's state is lost`);
  }
  if (outcome.matching.length === 0) {
    result.replayMismatches = outcome.mismatches;
    const which = outcome.mismatches.map((m) => `${m.scheme} ${m.bank}:${m.pcr}`).join(', ');
    if (outcome.mismatches.length > 0)
      fail('SHARD_REPLAY_MISMATCH', `replay differs from the quote at ${which}`);
    return null;
  }
  const scheme = outcome.matching.length === 1 ? (outcome.matching[0] as ExtendScheme) : null;
  // Both pins hold: the shard's own byte is a claim of the host and cannot override what the
  // chain's earlier replays found (a switch to padded would lower sha256 banks to SHA-1 strength).
  for (const [expected, by] of [
    [shard.scheme, 'the shard'],
    [pinned, 'the chain'],
  ] as const) {
    if (expected !== null && !outcome.matching.includes(expected)) {
      fail('SHARD_SCHEME_CHANGED', `replay matches ${outcome.matching.join('/')}, ${by} pinned ${expected}`);
    }
  }

  return scheme;
}

/**
 * The (bank, PCR) pairs of the start state that the closing quote leaves out. The next shard must
 * start from this quote's values, so a quote that drops a start PCR would let the chain carry on
 * from a state no quote vouches for (a PCR back to "never extended", a bank gone).
 */
function notQuoted(start: PcrValues, quoted: PcrValues): string[] {
  return [...start].flatMap(([bank, pcrs]) =>
    [...pcrs.keys()].filter((pcr) => quoted.get(bank)?.has(pcr) !== true).map((pcr) => `${bank}:${pcr}`),
  );
}
