import { ImastreamError } from '../../lib/errors.ts';
import { decode } from '../shared/codec.ts';
import type { InMessage } from '../shared/kafka.ts';
import type { Logger } from '../shared/logger.ts';
import { checkKeyPart } from '../shared/redis.ts';
import type { QuoteStore } from './store.ts';

/**
 * Keeps in Redis what quote checks refer to: each host's enrolled AK (ima.enrollments), the
 * fleet's nonce epochs (ima.nonces) and per-host challenge nonces (ima.challenges). Runs in its
 * own consumer group, so any number of quote-checker instances share one copy. Resend requests on
 * ima.challenges are for agents and are skipped.
 */
export interface RefsOptions {
  /** How long a host's replaced AK is still accepted after a new enrolment (ms); default 10 min. */
  akOverlapMs?: number;
}

export const DEFAULT_AK_OVERLAP_MS = 10 * 60_000;

export function refsHandler(
  store: QuoteStore,
  logger: Logger,
  options: RefsOptions = {},
): (m: InMessage) => Promise<void> {
  const overlapMs = options.akOverlapMs ?? DEFAULT_AK_OVERLAP_MS;
  return async (m) => {
    if (m.value === null) throw new ImastreamError('IMS_WIRE_BAD_FRAME', 'message has no value');
    const decoded = decode(m.value);
    switch (decoded.schema) {
      case 'Enrollment':
        checkKeyPart('hostId', decoded.value.hostId);
        await store.saveEnrollment(decoded.value, overlapMs);
        logger.info(
          { hostId: decoded.value.hostId, status: decoded.value.status, policy: decoded.value.policy },
          'enrolment stored',
        );
        return;
      case 'NonceEpoch':
        await store.saveNonceEpoch(decoded.value);
        logger.debug({ epoch: decoded.value.epoch }, 'nonce epoch stored');
        return;
      case 'Challenge':
        checkKeyPart('hostId', decoded.value.hostId);
        await store.saveChallenge(
          decoded.value.hostId,
          decoded.value.requestId,
          decoded.value.nonce,
          decoded.value.at,
        );
        return;
      default:
        logger.debug({ schema: decoded.schema, topic: m.topic }, 'not a reference record, skipped');
    }
  };
}
