import { createHash } from 'node:crypto';

import type { ResendRequest } from '../shared/records.ts';
import type { ReplayDoc } from './doc.ts';

/**
 * Holds the host at a gap: something at `end - 1` arrived while records from nextSeq are missing.
 * True when a new gap opened (raise SEQUENCE_GAP and ask for it); a later arrival only widens it.
 */
export function holdAt(doc: ReplayDoc, end: number): boolean {
  if (doc.gap !== null) {
    doc.gap.heldTo = Math.max(doc.gap.heldTo, end);
    return false;
  }
  doc.gap = { fromSeq: doc.nextSeq, toSeq: end, heldTo: end };
  doc.status = 'gap';

  return true;
}

/**
 * The request for the gap's range (ResendRequest on ima.challenges, where the host's agent
 * listens). The id is a hash of what is asked, so a batch applied again after a crash asks with
 * the same id.
 */
export function resendRequest(hostId: string, doc: ReplayDoc, now: number): ResendRequest {
  const { fromSeq, toSeq } = doc.gap!;
  const requestId = createHash('sha256')
    .update(`${hostId}\u0000${doc.bootId}\u0000${fromSeq}\u0000${toSeq}`)
    .digest('hex')
    .slice(0, 32);

  return { hostId, bootId: doc.bootId, fromSeq, toSeq, requestId, reason: 'SEQUENCE_GAP', at: now };
}
