/**
 * How far a QuoteTaken may trail its records: the agent produces at most this many LogRecords
 * past a quote's seq before the QuoteTaken for it (docs/contract.md). The agent keeps to it when
 * it places a quote (services/agent/quoter.ts); the replayer relies on it across a batch
 * boundary, where it can only look back through the values it kept for the last few seqs
 * (RECENT_PCRS_KEPT in services/replayer/apply.ts). Within one batch the replayer needs no bound.
 *
 * Why the agent can trail at all: it reads the log before it quotes, and the kernel appends a
 * record before extending it, so the TPM may be behind what was read (the quote then covers
 * fewer records than were sent) or ahead of it (more log is read and sent to find the match).
 */
export const QUOTE_TRAIL_MAX = 7;
