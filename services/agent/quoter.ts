import { setTimeout as sleep } from 'node:timers/promises';
import type { PcrValues } from '../../lib/pcr.ts';
import type { Attest } from '../../lib/tpm/attest.ts';
import { parseAttest } from '../../lib/tpm/attest.ts';
import { QUOTE_TRAIL_MAX } from '../shared/quote-trail.ts';
import type { PcrValue } from '../shared/records.ts';
import type { SeqMatcher } from './seq-match.ts';
import { type AkAlg, type RawQuote, readPcrs, type TpmTools, takeQuote } from './tpm.ts';

/** The AK signs with SHA-256, so the quote's pcrDigest is SHA-256 too (DOMAIN.md §4.3). */
export const QUOTE_HASH = 'sha256';

/** How many reads that bring nothing, and how long apart, before a quote ahead of the log is given up. */
const CATCH_UP_IDLE_READS = 20;
const CATCH_UP_PAUSE_MS = 50;
/**
 * How long a quote is taken again while the TPM is behind what was sent by more than
 * QUOTE_TRAIL_MAX. A kernel extends right after it appends, so one retake is the usual case; the
 * budget is in time, not tries, because a hardware TPM quotes in hundreds of milliseconds.
 */
export const RETAKE_BUDGET_MS = 2_000;
const RETAKE_PAUSE_MS = 50;

export interface QuoterDeps {
  tpm: TpmTools;
  akHandle: string;
  akAlg: AkAlg;
  matcher: SeqMatcher;
  /** Reads, archives and produces at most `limit` records the log has grown by; returns how many. */
  readMore: (limit: number) => Promise<number>;
}

/** A quote placed in the log: it covers records [0, seq). */
export interface PlacedQuote {
  raw: RawQuote;
  attest: Attest;
  seq: number;
  /** Values of the quoted selection: from the replay when matched, else read from the TPM. */
  pcrs: PcrValues;
  /** False when no prefix of the log reproduces the quote (log and TPM disagree). */
  matched: boolean;
}

/**
 * Takes a quote and works out the seq it covers, keeping to QUOTE_TRAIL_MAX: at most that many
 * records already sent past the seq, so the replayer can still checkpoint the QuoteTaken. The
 * log was read before the quote. If the TPM is ahead (records logged and extended since), more
 * log is read a few records at a time until the quote matches. If the TPM is behind by more than
 * the bound (a kernel that logged a burst and has not extended it all yet), the quote is taken
 * again for up to RETAKE_BUDGET_MS; the last one is kept whatever its trail.
 *
 * If nothing matches, the log and the TPM disagree: the quote is still sent, placed at the records
 * read, with the PCR values the TPM reports, so the verifier raises the mismatch — hiding it here
 * would hide exactly what the pipeline exists to catch.
 */
export async function quoteAndPlace(deps: QuoterDeps, nonce: Uint8Array): Promise<PlacedQuote> {
  const until = Date.now() + RETAKE_BUDGET_MS;
  for (;;) {
    const placed = await quoteOnce(deps, nonce);
    const trail = deps.matcher.count - placed.seq;
    if (!placed.matched || trail <= QUOTE_TRAIL_MAX || Date.now() >= until) return placed;
    await sleep(RETAKE_PAUSE_MS);
  }
}

async function quoteOnce(deps: QuoterDeps, nonce: Uint8Array): Promise<PlacedQuote> {
  const { matcher } = deps;
  const hint = matcher.count;
  const raw = await takeQuote(deps.tpm, {
    akHandle: deps.akHandle,
    akAlg: deps.akAlg,
    selection: matcher.selection,
    nonce,
    hashAlg: QUOTE_HASH,
  });
  const attest = parseAttest(raw.attest);
  const pcrDigest = attest.quote?.pcrDigest ?? new Uint8Array(0);
  for (let idle = 0; ; ) {
    const found = matcher.match(pcrDigest, hint);
    if (found !== undefined) return { raw, attest, seq: found.seq, pcrs: found.pcrs, matched: true };
    if (idle >= CATCH_UP_IDLE_READS) break;
    // A match found after reading at most QUOTE_TRAIL_MAX more trails the records sent by no more.
    if ((await deps.readMore(QUOTE_TRAIL_MAX)) === 0) {
      idle++;
      await sleep(CATCH_UP_PAUSE_MS);
    }
  }
  const pcrs = await readPcrs(deps.tpm, matcher.selection);

  return { raw, attest, seq: matcher.count, pcrs, matched: false };
}

/** The quote's PCR values as Avro PcrValues (scheme "tpm": what the TPM holds, untrusted). */
export function toPcrValues(values: PcrValues): PcrValue[] {
  const out: PcrValue[] = [];
  for (const [bank, pcrs] of values) {
    for (const [pcr, value] of [...pcrs].sort((a, b) => a[0] - b[0])) {
      out.push({ scheme: 'tpm', bank, pcr, value: Buffer.from(value) });
    }
  }

  return out;
}
