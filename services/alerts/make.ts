import { createHash } from 'node:crypto';

import type { Alert, Severity } from '../shared/records.ts';

/** The alert kinds of docs/contract.md; a consumer may rely on this list being closed. */
export type AlertKind =
  | 'PCR_MISMATCH'
  | 'SEQUENCE_GAP'
  | 'BAD_SIGNATURE'
  | 'NONCE_MISMATCH'
  | 'STALE_QUOTE'
  | 'UNKNOWN_AK'
  | 'TEMPLATE_DIGEST_MISMATCH'
  | 'SNAPSHOT_MISMATCH'
  | 'SHARD_DEADLINE'
  | 'SCHEME_CHANGED'
  | 'REPLAY_STATE_LOST'
  | 'MALFORMED_QUOTE'
  | 'SHARD_INVALID'
  | 'SHARD_GAP'
  | 'ENROLMENT_REJECTED';

const SEVERITY: Readonly<Record<AlertKind, Severity>> = {
  PCR_MISMATCH: 'CRITICAL',
  SEQUENCE_GAP: 'WARNING',
  BAD_SIGNATURE: 'CRITICAL',
  NONCE_MISMATCH: 'CRITICAL',
  STALE_QUOTE: 'CRITICAL',
  UNKNOWN_AK: 'CRITICAL',
  TEMPLATE_DIGEST_MISMATCH: 'CRITICAL',
  SNAPSHOT_MISMATCH: 'CRITICAL',
  SHARD_DEADLINE: 'WARNING',
  SCHEME_CHANGED: 'WARNING',
  REPLAY_STATE_LOST: 'WARNING',
  MALFORMED_QUOTE: 'WARNING',
  SHARD_INVALID: 'CRITICAL',
  SHARD_GAP: 'WARNING',
  ENROLMENT_REJECTED: 'WARNING',
};

/** What a component knows when it raises an alert; `key` separates findings of one kind at one place. */
export interface AlertFacts {
  kind: AlertKind;
  hostId: string;
  bootId?: string | null;
  seq?: number | null;
  bank?: string | null;
  pcr?: number | null;
  message: string;
  details?: Record<string, unknown>;
  /** Extra identity (a quoteId, a range) when one (kind, host, boot, seq) can hold several findings. */
  key?: string;
  at: number;
}

/**
 * The id of a finding: a hash of what it is about, never of when it was seen, so a finding raised
 * again after a redelivery or by a second instance carries the same id and sinks can drop the copy.
 */
export function alertId(f: Pick<AlertFacts, 'kind' | 'hostId' | 'bootId' | 'seq' | 'key'>): string {
  const parts = [
    f.kind,
    f.hostId,
    f.bootId ?? '',
    f.seq === undefined || f.seq === null ? '' : String(f.seq),
  ];
  parts.push(f.key ?? '');

  return createHash('sha256').update(parts.join('\u0000')).digest('hex').slice(0, 32);
}

/** Builds an Alert record with its kind's severity and a deterministic id. */
export function makeAlert(f: AlertFacts): Alert {
  return {
    alertId: alertId(f),
    kind: f.kind,
    severity: SEVERITY[f.kind],
    hostId: f.hostId,
    bootId: f.bootId ?? null,
    seq: f.seq ?? null,
    bank: f.bank ?? null,
    pcr: f.pcr ?? null,
    message: f.message,
    details: JSON.stringify(f.details ?? {}),
    at: f.at,
  };
}
