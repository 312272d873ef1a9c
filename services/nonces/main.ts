import { randomBytes, randomUUID } from 'node:crypto';

import { encode } from '../shared/codec.ts';
import type { ImsProducer } from '../shared/kafka.ts';
import type { Logger } from '../shared/logger.ts';
import type { Challenge, NonceEpoch } from '../shared/records.ts';
import { TOPIC } from '../shared/topics.ts';

/** Bytes of randomness in a nonce (TPM2B_DATA extraData holds up to 64). */
export const NONCE_BYTES = 32;

/**
 * A fresh epoch nonce. The epoch number is the issue time in ms: strictly increasing across
 * restarts without any stored counter, and unique even when a restart reissues within an interval.
 */
export function newEpoch(now: number, validForMs: number): NonceEpoch {
  return { epoch: now, nonce: randomBytes(NONCE_BYTES), issuedAt: now, validUntil: now + validForMs };
}

/** A challenge asking one host to quote now with a nonce of its own. */
export function newChallenge(hostId: string, now: number): Challenge {
  return { hostId, requestId: randomUUID(), nonce: randomBytes(NONCE_BYTES), at: now };
}

export async function publishEpoch(producer: ImsProducer, epoch: NonceEpoch): Promise<void> {
  await producer.send(TOPIC.nonces, [{ key: 'epoch', value: encode('NonceEpoch', epoch) }]);
}

export async function publishChallenge(producer: ImsProducer, challenge: Challenge): Promise<void> {
  await producer.send(TOPIC.challenges, [{ key: challenge.hostId, value: encode('Challenge', challenge) }]);
}

export interface NonceServiceOptions {
  producer: ImsProducer;
  logger: Logger;
  intervalMs: number;
  /** How long a nonce is announced as valid; the quote-checker accepts the last few epochs. */
  validForMs?: number;
  now?: () => number;
}

/** Publishes an epoch at once and then every interval, until stopped. A failed publish is retried next tick. */
export function startNonceService(options: NonceServiceOptions): { stop(): Promise<void> } {
  const { producer, logger, intervalMs } = options;
  const now = options.now ?? Date.now;
  let inFlight: Promise<void> = Promise.resolve();
  const tick = () => {
    const epoch = newEpoch(now(), options.validForMs ?? 4 * intervalMs);
    inFlight = publishEpoch(producer, epoch)
      .then(() => logger.info({ epoch: epoch.epoch, validUntil: epoch.validUntil }, 'nonce epoch published'))
      .catch((err: unknown) => logger.error({ err }, 'nonce epoch not published'));
  };
  tick();
  const timer = setInterval(tick, intervalMs);

  return {
    async stop() {
      clearInterval(timer);
      await inFlight;
    },
  };
}
