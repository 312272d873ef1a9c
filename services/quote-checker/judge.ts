import { createHash } from 'node:crypto';

import { bytesEqual } from '../../lib/bytes/hex.ts';
import { isImastreamError } from '../../lib/errors.ts';
import { type HashAlg, isHashAlg } from '../../lib/hash.ts';
import type { PcrValues } from '../../lib/pcr.ts';
import type { Attest } from '../../lib/tpm/attest.ts';
import { parsePublic } from '../../lib/tpm/public.ts';
import {
  type ClockFailure,
  checkClock,
  matchPcrDigest,
  type QuoteFailure,
  verifyQuote,
} from '../../lib/tpm/quote.ts';
import { type AlertKind, makeAlert } from '../alerts/make.ts';
import type { Alert, PcrValue, Quote } from '../shared/records.ts';
import { findNonce, type IssuedNonce } from './nonce-window.ts';

/** An AK enrolled to a host (from ima.enrollments). */
export interface EnrolledAk {
  akPublic: Uint8Array;
  akName: Uint8Array;
  status: string;
  /** Policy the AK was enrolled under (ek-cert, ek-allow-list, tofu); null when not recorded. */
  policy?: string | null;
  /**
   * The AK this enrolment replaced, still accepted until `until` (ms since the epoch): an overlap
   * window, so quotes in flight when a host re-enrols are not UNKNOWN_AK.
   */
  previous?: ReplacedAk | null;
}

export interface ReplacedAk {
  akPublic: Uint8Array;
  akName: Uint8Array;
  policy: string | null;
  until: number;
}

/**
 * The policies the enroller writes (docs/enrolment.md). Only an `active` enrolment under one of
 * them vouches for an AK: the agent's old self-published `unverified-tofu` records, or anything
 * else on ima.enrollments, do not.
 */
const ENROLLER_POLICIES: ReadonlySet<string> = new Set(['ek-cert', 'ek-allow-list', 'tofu']);

/**
 * The enrolled AK that may have signed a quote claiming `akName`, or why none may: the host's
 * active AK, or the one it replaced while the overlap lasts. Which key is trusted comes from
 * ima.enrollments alone; the quote only says which one it claims.
 */
export function enrolledSigner(
  enrollment: EnrolledAk | null,
  akName: Uint8Array,
  now: number,
): { ok: true; ak: EnrolledAk } | { ok: false; reason: string } {
  if (enrollment === null) return { ok: false, reason: 'no AK enrolled for the host' };
  if (enrollment.status !== 'active') {
    return { ok: false, reason: `AK not enrolled to the host (enrolment is ${enrollment.status})` };
  }
  if (!ENROLLER_POLICIES.has(enrollment.policy ?? '')) {
    return { ok: false, reason: `AK not enrolled to the host (unknown policy ${enrollment.policy})` };
  }
  if (bytesEqual(enrollment.akName, akName)) return { ok: true, ak: enrollment };
  const previous = enrollment.previous;
  if (previous !== undefined && previous !== null && bytesEqual(previous.akName, akName)) {
    if (now <= previous.until) {
      return { ok: true, ak: { ...previous, status: 'active', previous: null } };
    }
    return { ok: false, reason: `AK was replaced; its overlap ended at ${previous.until}` };
  }

  return { ok: false, reason: 'AK not enrolled to the host' };
}

/** The last verified quote of a host, for the counter rules. `clock` is a decimal string (u64). */
export interface LastQuote {
  bootId: string;
  quoteId: string;
  attestHash: string;
  resetCount: number;
  restartCount: number;
  clock: string;
}

/** What the quote-checker knows about the host when a quote arrives. */
export interface QuoteContext {
  enrollment: EnrolledAk | null;
  /** Nonces the quote may carry: recent epochs and the host's pending challenges. */
  accepted: readonly IssuedNonce[];
  last: LastQuote | null;
  /**
   * Where (topic:partition:offset) this exact TPMS_ATTEST was first accepted, if it was. The same
   * position again is Kafka redelivering the message; any other position is the quote replayed.
   */
  seenAt: string | null;
  /** Position of the message being judged. */
  position: string;
  now: number;
}

/** A quote that passed every check: its clock and, when shipped, its PCR values are trusted. */
export interface AcceptedQuote {
  attestHash: string;
  hashAlg: HashAlg;
  clock: LastQuote;
  /** TPM PCR values whose digest equals the signed pcrDigest, in selection order; null if none shipped. */
  quoted: PcrValue[] | null;
  /** The same quote delivered again: already past the freshness checks once. */
  redelivery: boolean;
  attest: Attest;
}

export type Judgement =
  | { ok: true; quote: AcceptedQuote }
  | { ok: false; alerts: Alert[]; reasons: string[] };

/** Identity of a quote's signed bytes: a replayed quote has the same hash under any quoteId. */
export function attestHashOf(attest: Uint8Array): string {
  return createHash('sha256').update(attest).digest('hex');
}

const SIGNATURE_FAILURES = new Set(['QUOTE_BAD_SIGNATURE', 'QUOTE_SCHEME_MISMATCH', 'QUOTE_HASH_MISMATCH']);
const MALFORMED_FAILURES = new Set(['QUOTE_BAD_MAGIC', 'QUOTE_NOT_A_QUOTE']);

/**
 * Verifies one quote against what the fleet knows (DESIGN.md §5, DOMAIN.md §4): the AK is the one
 * enrolled to the host (UNKNOWN_AK), the signature verifies (BAD_SIGNATURE), extraData is a nonce
 * the fleet issued recently (NONCE_MISMATCH), the counters never go back and the signed bytes were
 * not seen under another quoteId (STALE_QUOTE), and the shipped PCR values hash to the signed
 * pcrDigest (MALFORMED_QUOTE). Every failed check raises its alert; nothing here is trusted unless
 * the result is ok.
 */
export async function judgeQuote(quote: Quote, ctx: QuoteContext): Promise<Judgement> {
  const found = new Findings(quote, ctx.now);
  const signer = enrolledSigner(ctx.enrollment, quote.akName, ctx.now);
  if (!signer.ok) {
    found.add('UNKNOWN_AK', signer.reason);
    return found.judgement();
  }
  const checked = await verify(quote, signer.ak, found);
  if (checked === undefined) return found.judgement();
  const { attest, hashAlg } = checked;

  const attestHash = attestHashOf(quote.attest);
  // A redelivered message passed the freshness checks the first time; its nonce may have aged since.
  const redelivery = ctx.seenAt === ctx.position;
  if (ctx.seenAt !== null && !redelivery) found.add('STALE_QUOTE', `quote already accepted at ${ctx.seenAt}`);
  if (!redelivery) checkFreshness(quote, attest, ctx, found);
  const quoted = trustedPcrs(quote, attest, hashAlg, found);
  if (found.any()) return found.judgement();

  const { resetCount, restartCount, clock } = attest.clockInfo;
  const last: LastQuote = {
    bootId: quote.bootId,
    quoteId: quote.quoteId,
    attestHash,
    resetCount,
    restartCount,
    clock: clock.toString(),
  };

  return { ok: true, quote: { attestHash, hashAlg, clock: last, quoted, redelivery, attest } };
}

/** Signature and structure checks; undefined when the quote cannot be used at all. */
async function verify(quote: Quote, ak: EnrolledAk, found: Findings) {
  try {
    const verdict = await verifyQuote({
      attest: quote.attest,
      signature: quote.signature,
      akPublic: parsePublic(ak.akPublic),
      nonce: quote.nonce,
    });
    for (const f of verdict.failures) found.add(kindOf(f), f.message);
    if (!verdict.ok || verdict.attest === undefined || verdict.signature === undefined) return undefined;

    return { attest: verdict.attest, hashAlg: verdict.signature.hashAlg };
  } catch (err) {
    if (!isImastreamError(err)) throw err;
    found.add('MALFORMED_QUOTE', `${err.code}: ${err.message}`);
    return undefined;
  }
}

function checkFreshness(quote: Quote, attest: Attest, ctx: QuoteContext, found: Findings): void {
  if (findNonce(ctx.accepted, quote.nonce) === undefined)
    found.add('NONCE_MISMATCH', 'nonce is not a recent one');
  for (const f of clockFailures(ctx.last, attest)) found.add('STALE_QUOTE', f.message);
}

function kindOf(f: QuoteFailure): AlertKind {
  if (SIGNATURE_FAILURES.has(f.code)) return 'BAD_SIGNATURE';
  if (MALFORMED_FAILURES.has(f.code)) return 'MALFORMED_QUOTE';
  if (f.code === 'QUOTE_NONCE_MISMATCH') return 'NONCE_MISMATCH';

  return 'MALFORMED_QUOTE';
}

/**
 * Counter rules against the host's last verified quote. `safe = NO` alone is not fatal: swtpm and
 * real TPMs report it after any unorderly shutdown; the counters still must not go back.
 */
function clockFailures(last: LastQuote | null, attest: Attest): ClockFailure[] {
  const prev = last === null ? undefined : { ...last, clock: BigInt(last.clock) };

  return checkClock(prev, attest.clockInfo).filter((f) => f.code !== 'QUOTE_CLOCK_UNSAFE');
}

/**
 * The shipped PCR values, trusted only when they hash to the verified pcrDigest, ordered as the
 * quote selected them. Null when none were shipped.
 */
function trustedPcrs(quote: Quote, attest: Attest, hashAlg: HashAlg, found: Findings): PcrValue[] | null {
  const shipped = quote.pcrs.filter((p) => p.scheme === 'tpm' && isHashAlg(p.bank));
  if (shipped.length === 0 || attest.quote === undefined) return null;
  const values: PcrValues = new Map();
  for (const p of shipped) {
    const bank = p.bank as HashAlg;
    if (!values.has(bank)) values.set(bank, new Map());
    values.get(bank)!.set(p.pcr, p.value);
  }
  if (!matchPcrDigest(attest, values, hashAlg)) {
    found.add('MALFORMED_QUOTE', 'shipped PCR values do not hash to the signed pcrDigest');
    return null;
  }
  const ordered: PcrValue[] = [];
  for (const { bank, pcrs } of attest.quote.pcrSelection) {
    if (typeof bank === 'number') continue;
    for (const pcr of [...pcrs].sort((a, b) => a - b)) {
      ordered.push({ scheme: 'tpm', bank, pcr, value: Buffer.from(values.get(bank)!.get(pcr)!) });
    }
  }

  return ordered;
}

/** Alerts of one quote, one per kind, each id bound to the quote. */
class Findings {
  private readonly byKind = new Map<AlertKind, string[]>();

  constructor(
    private readonly quote: Quote,
    private readonly now: number,
  ) {}

  add(kind: AlertKind, reason: string): void {
    this.byKind.set(kind, [...(this.byKind.get(kind) ?? []), reason]);
  }

  any(): boolean {
    return this.byKind.size > 0;
  }

  judgement(): Judgement {
    const q = this.quote;
    const alerts = [...this.byKind].map(([kind, reasons]) =>
      makeAlert({
        kind,
        hostId: q.hostId,
        bootId: q.bootId,
        seq: q.seq,
        key: q.quoteId,
        message: `${q.hostId} boot ${q.bootId} quote ${q.quoteId} at seq ${q.seq}: ${reasons.join('; ')}`,
        details: { quoteId: q.quoteId, reasons },
        at: this.now,
      }),
    );

    return { ok: false, alerts, reasons: [...this.byKind].flatMap(([k, r]) => r.map((x) => `${k}: ${x}`)) };
  }
}
