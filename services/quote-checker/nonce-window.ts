import { bytesEqual } from '../../lib/bytes/hex.ts';

/** How many of the most recent nonce epochs a quote may carry (DESIGN.md §5: "one of the last few"). */
export const NONCE_EPOCHS_ACCEPTED = 4;

/** A nonce the fleet issued: an epoch's, or a challenge's for one host. */
export interface IssuedNonce {
  nonce: Uint8Array;
  /** Epoch number, or null for a challenge. */
  epoch: number | null;
  /** Challenge request id, when it is a challenge's. */
  requestId?: string;
  /** End of the epoch's announced validity, ms since the epoch, when known. */
  validUntil?: number;
}

/**
 * The nonces a quote may carry at `now`: the last {@link NONCE_EPOCHS_ACCEPTED} epochs (by epoch
 * number, whatever order they arrived in), older epochs still within their announced validity (so
 * a second nonce publisher cannot push a fresh nonce out early), and the host's pending challenges.
 */
export function acceptedNonces(
  epochs: readonly IssuedNonce[],
  challenges: readonly IssuedNonce[],
  now: number,
  keep = NONCE_EPOCHS_ACCEPTED,
): IssuedNonce[] {
  const sorted = [...epochs].sort((a, b) => (b.epoch ?? 0) - (a.epoch ?? 0));
  const valid = sorted.filter((e, i) => i < keep || (e.validUntil !== undefined && e.validUntil >= now));

  return [...valid, ...challenges];
}

/** The issued nonce equal to `nonce`, if any (nonces are public: no constant-time compare needed). */
export function findNonce(accepted: readonly IssuedNonce[], nonce: Uint8Array): IssuedNonce | undefined {
  return accepted.find((n) => bytesEqual(n.nonce, nonce));
}
