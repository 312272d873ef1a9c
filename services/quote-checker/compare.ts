import { bytesEqual } from '../../lib/bytes/hex.ts';
import type { PcrValue } from '../shared/records.ts';

/** The first (bank, PCR) where the TPM and the replay disagree, in the quote's bank order. */
export interface Divergence {
  scheme: string;
  bank: string;
  pcr: number;
  quoted: Buffer;
  replayed: Buffer;
}

export type Comparison =
  /** `ambiguous`: another live scheme matched too (a SHA-1-only quote cannot tell them apart). */
  | { match: true; scheme: string; compared: number; ambiguous: boolean }
  | { match: false; divergence: Divergence | null; reason: string };

/**
 * Compares the PCR values of a verified quote (`quoted`, trusted once their digest matched the
 * quote's pcrDigest) with a replay checkpoint. A scheme matches when every (bank, PCR) present in
 * both agrees and there is at least one; quoted PCRs the log never extends (0–9) are not compared.
 * Schemes are tried in the checkpoint's order, the first match is reported, and a match that
 * another scheme shares is ambiguous (it must not pin a scheme). On no match the divergence
 * reported is the first scheme's first differing value.
 */
export function compareWithCheckpoint(
  quoted: readonly PcrValue[],
  replayed: readonly PcrValue[],
  schemes: readonly string[],
): Comparison {
  let first: Divergence | null = null;
  const matched: { scheme: string; compared: number }[] = [];
  for (const scheme of schemes) {
    const result = compareScheme(quoted, replayed, scheme);
    if (result.compared > 0 && result.divergence === null)
      matched.push({ scheme, compared: result.compared });
    first ??= result.divergence;
  }
  if (matched.length > 0) return { match: true, ...matched[0]!, ambiguous: matched.length > 1 };
  const reason = first === null ? 'the quote covers none of the replayed PCRs' : describe(first);

  return { match: false, divergence: first, reason };
}

function compareScheme(quoted: readonly PcrValue[], replayed: readonly PcrValue[], scheme: string) {
  let compared = 0;
  for (const q of quoted) {
    const r = replayed.find((x) => x.scheme === scheme && x.bank === q.bank && x.pcr === q.pcr);
    if (r === undefined) continue;
    compared++;
    if (!bytesEqual(q.value, r.value)) {
      const divergence: Divergence = { scheme, bank: q.bank, pcr: q.pcr, quoted: q.value, replayed: r.value };
      return { compared, divergence };
    }
  }

  return { compared, divergence: null };
}

export function describe(d: Divergence): string {
  return `${d.bank} PCR ${d.pcr}: TPM ${d.quoted.toString('hex')}, replay (${d.scheme}) ${d.replayed.toString('hex')}`;
}

/**
 * The fallback when a quote shipped no PCR values: a scheme matches when the checkpoint's values
 * reproduce the signed pcrDigest. Works only when the quote selects nothing but replayed PCRs, and
 * cannot name the diverging bank.
 */
export function compareByDigest(
  matches: (scheme: string) => boolean,
  schemes: readonly string[],
): Comparison {
  const matched = schemes.filter(matches);
  if (matched.length > 0)
    return { match: true, scheme: matched[0]!, compared: 1, ambiguous: matched.length > 1 };

  return { match: false, divergence: null, reason: 'no live scheme reproduces the signed pcrDigest' };
}
