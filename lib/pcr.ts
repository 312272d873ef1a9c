import type { HashAlg } from './hash.ts';

/**
 * PCR values by bank and index. Shared by the replay (values computed from a log) and the quote
 * verifier (values a TPM signed). Values computed from a log prove nothing until a verified quote
 * covers them.
 */
export type PcrBank = Map<number, Uint8Array>;
export type PcrValues = Map<HashAlg, PcrBank>;

/** Highest PCR index of a TPM 2.0 PC-client TPM (24 PCRs). */
export const MAX_PCR_INDEX = 23;

/** The PCR IMA extends unless a policy rule says `pcr=`. */
export const IMA_PCR = 10;
