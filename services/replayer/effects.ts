import { hasCode } from '../../lib/errors.ts';
import { encode } from '../shared/codec.ts';
import type { Logger } from '../shared/logger.ts';
import type { RecordName, RecordTypes } from '../shared/records.ts';
import { TOPIC } from '../shared/topics.ts';
import type { ReplayEffect } from './events.ts';
import type { OutboxMessage } from './store.ts';

/**
 * Encodes a batch's effects as Kafka messages keyed by host. A ResendRequest needs its schema in
 * the catalogue; until it is there the request is logged and dropped (the SEQUENCE_GAP alert
 * still goes out, and an operator can ask the agent by hand).
 */
export function effectMessages(effects: readonly ReplayEffect[], logger: Logger): OutboxMessage[] {
  const out: OutboxMessage[] = [];
  for (const e of effects) {
    const m = effectMessage(e, logger);
    if (m !== undefined) out.push(m);
  }

  return out;
}

function effectMessage(e: ReplayEffect, logger: Logger): OutboxMessage | undefined {
  switch (e.kind) {
    case 'alert':
      return message(TOPIC.alerts, e.alert.hostId, encode('Alert', e.alert));
    case 'checkpoint':
      return message(TOPIC.checkpoints, e.checkpoint.hostId, encode('Checkpoint', e.checkpoint));
    case 'resend':
      try {
        const value = encode('ResendRequest' as RecordName, e.request as unknown as RecordTypes[RecordName]);
        return message(TOPIC.challenges, e.request.hostId, value);
      } catch (err) {
        if (!hasCode(err, 'IMS_WIRE_UNKNOWN_SCHEMA')) throw err;
        logger.warn(
          { request: e.request },
          'no ResendRequest schema in the catalogue: resend request not sent',
        );
        return undefined;
      }
  }
}

function message(topic: string, key: string, value: Buffer): OutboxMessage {
  return { topic, key, value: value.toString('base64') };
}

/** Groups outbox messages by topic for one send per topic, keeping their order. */
export function byTopic(messages: readonly OutboxMessage[]): Map<string, { key: string; value: Buffer }[]> {
  const out = new Map<string, { key: string; value: Buffer }[]>();
  for (const m of messages) {
    const list = out.get(m.topic) ?? [];
    list.push({ key: m.key, value: Buffer.from(m.value, 'base64') });
    out.set(m.topic, list);
  }

  return out;
}
