import { setTimeout as sleep } from 'node:timers/promises';
import type { PcrValues } from '../../lib/pcr.ts';
import type { Attest } from '../../lib/tpm/attest.ts';
import { parseAttest } from '../../lib/tpm/attest.ts';
import type { PcrValue } from '../shared/records.ts';
import type { SeqMatcher } from './seq-match.ts';
import { type AkAlg, type RawQuote, readPcrs, type TpmTools, takeQuote } from './tpm.ts';

/** The AK signs with SHA-256, so the quote's pcrDigest is SHA-256 too (DOMAIN.md §4.3). */
export const QUOTE_HASH = 'sha256';

/** How often, and how long apart, the agent reads more log when a quote is ahead of it. */
const CATCH_UP_TRIES = 20;
const CATCH_UP_PAUSE_MS = 50;

export interface QuoterDeps {
  tpm: TpmTools;
  akHandle: string;
  akAlg: AkAlg;
  matcher: SeqMatcher;
  /** Reads, archives and produces whatever the log has grown by. */
  readMore: () => Promise<void>;
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
 * Takes a quote and works out the seq it covers. The log was read before the quote; if the TPM
 * is ahead (records logged and extended since), more log is read and the match retried, a
 * bounded number of times. If nothing matches, the log and the TPM disagree: the quote is still
 * sent, placed at the records read, with the PCR values the TPM reports, so the verifier raises
 * the mismatch — hiding it here would hide exactly what the pipeline exists to catch.
 */
export async function quoteAndPlace(deps: QuoterDeps, nonce: Uint8Array): Promise<PlacedQuote> {
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
  for (let i = 0; i < CATCH_UP_TRIES; i++) {
    const found = matcher.match(pcrDigest, hint);
    if (found !== undefined) return { raw, attest, seq: found.seq, pcrs: found.pcrs, matched: true };
    await deps.readMore();
    await sleep(CATCH_UP_PAUSE_MS);
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
