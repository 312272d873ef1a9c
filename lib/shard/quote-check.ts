import { bytesEqual } from '../bytes/hex.ts';
import { isImastreamError } from '../errors.ts';
import type { PcrValues } from '../pcr.ts';
import type { Attest } from '../tpm/attest.ts';
import type { PcrSelection } from '../tpm/pcr-selection.ts';
import { parsePublic, type TpmPublic } from '../tpm/public.ts';
import { checkClock, verifyQuote } from '../tpm/quote.ts';
import type { ClosingQuote } from './types.ts';
import type { ShardFailure } from './verdict.ts';

export interface QuoteCheck {
  failures: ShardFailure[];
  /** The parsed attest; trustworthy only when no SHARD_BAD_QUOTE failure was raised. */
  attest?: Attest;
  /** The AK's TPMT_PUBLIC bytes (size prefix removed), for comparing AKs along the chain. */
  akArea?: Uint8Array;
}

/**
 * Verifies a shard's closing quote with the AK it carries: signature, magic, type, a non-empty
 * nonce equal to extraData, and pcrDigest recomputed from the quote's PCR values, which must be
 * the selected ones and no others. Malformed structures become SHARD_BAD_QUOTE failures, never
 * exceptions. Whether the AK itself is trusted is the chain's business ({@link checkAk}).
 */
export async function checkClosingQuote(q: ClosingQuote): Promise<QuoteCheck> {
  let ak: TpmPublic;
  try {
    ak = parsePublic(q.akPublic);
  } catch (err) {
    return { failures: [badQuote(err, 'AK public area')] };
  }
  const failures: ShardFailure[] = [];
  if (q.nonce.byteLength === 0)
    failures.push({ code: 'SHARD_BAD_QUOTE', message: 'the quote carries no nonce' });
  try {
    const verdict = await verifyQuote({
      attest: q.attest,
      signature: q.signature,
      akPublic: ak,
      nonce: q.nonce,
      pcrValues: q.pcrs,
    });
    for (const f of verdict.failures)
      failures.push({ code: 'SHARD_BAD_QUOTE', message: `${f.code}: ${f.message}` });
    const unselected =
      verdict.attest?.quote === undefined ? [] : notSelected(q.pcrs, verdict.attest.quote.pcrSelection);
    if (unselected.length > 0) {
      failures.push({
        code: 'SHARD_BAD_QUOTE',
        message: `PCR values for ${unselected.join(', ')}, which the quote does not select`,
      });
    }
    return { failures, attest: verdict.attest, akArea: ak.bytes };
  } catch (err) {
    return { failures: [...failures, badQuote(err, 'quote')], akArea: ak.bytes };
  }
}

/**
 * The (bank, PCR) pairs of `values` outside the quote's selection. pcrDigest covers only the
 * selected PCRs, so any other value is the shard's own claim, yet replay, the boot_aggregate check
 * and the next shard's start would all take it as quoted: a shard must carry none.
 */
function notSelected(values: PcrValues, selection: PcrSelection): string[] {
  const out: string[] = [];
  for (const [bank, pcrs] of values) {
    for (const pcr of pcrs.keys()) {
      if (!selection.some((s) => s.bank === bank && s.pcrs.includes(pcr))) out.push(`${bank}:${pcr}`);
    }
  }

  return out;
}

function badQuote(err: unknown, what: string): ShardFailure {
  if (!isImastreamError(err)) throw err;
  return { code: 'SHARD_BAD_QUOTE', message: `${what} malformed: ${err.code}: ${err.message}` };
}

/** The AK must be the caller's trusted one, or else the same as the chain's first shard's. */
export function checkAk(akArea: Uint8Array, reference: Uint8Array, trusted: boolean): ShardFailure[] {
  if (bytesEqual(akArea, reference)) return [];
  const message = trusted
    ? 'quote signed by an AK other than the trusted one'
    : 'AK differs from the first shard';

  return [{ code: 'SHARD_UNTRUSTED_AK', message }];
}

/**
 * Counters along one boot (DOMAIN §4.2): resetCount equal (a TPM reset ends the boot), restartCount
 * never decreasing, clock increasing while restartCount holds, and `safe` set.
 */
export function checkCounters(prev: Attest | undefined, cur: Attest, bootId: string): ShardFailure[] {
  const failures: ShardFailure[] = [];
  // bootId is `<hostBootId>:<resetCount>` (docs/contract.md): the signed resetCount must be the
  // one it names, or genuine shards of one boot could be resealed as another boot's.
  const named = /:(0|[1-9][0-9]{0,9})$/.exec(bootId)?.[1];
  if (named === undefined || Number(named) !== cur.clockInfo.resetCount) {
    failures.push({
      code: 'SHARD_COUNTER_REGRESSION',
      message: `the quote's resetCount ${cur.clockInfo.resetCount} is not the one boot ${bootId} names`,
    });
  }
  if (prev !== undefined && prev.clockInfo.resetCount !== cur.clockInfo.resetCount) {
    failures.push({
      code: 'SHARD_COUNTER_REGRESSION',
      message: `resetCount ${cur.clockInfo.resetCount} after ${prev.clockInfo.resetCount}: a TPM reset inside a boot`,
    });
  }
  for (const f of checkClock(prev?.clockInfo, cur.clockInfo)) {
    failures.push({ code: 'SHARD_COUNTER_REGRESSION', message: `${f.code}: ${f.message}` });
  }

  return failures;
}

/** The AK's TPMT_PUBLIC of a caller-given trusted key (TPM2B_PUBLIC or TPMT_PUBLIC bytes). */
export function trustedAkArea(akPublic: Uint8Array): Uint8Array {
  return parsePublic(akPublic).bytes;
}
