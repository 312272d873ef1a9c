import { encode } from '../shared/codec.ts';
import { TOPIC } from '../shared/topics.ts';
import type { ReplayEffect } from './events.ts';
import type { OutboxMessage } from './store.ts';

/**
 * Encodes a batch's effects as Kafka messages keyed by host: alerts to ima.alerts, checkpoints to
 * ima.checkpoints, resend requests to ima.challenges (where the host's agent listens). They are
 * stored in the outbox with the state, so they go out at least once even across a crash.
 */
export function effectMessages(effects: readonly ReplayEffect[]): OutboxMessage[] {
  return effects.map(effectMessage);
}

function effectMessage(e: ReplayEffect): OutboxMessage {
  switch (e.kind) {
    case 'alert':
      return message(TOPIC.alerts, e.alert.hostId, encode('Alert', e.alert));
    case 'checkpoint':
      return message(TOPIC.checkpoints, e.checkpoint.hostId, encode('Checkpoint', e.checkpoint));
    case 'resend':
      return message(TOPIC.challenges, e.request.hostId, encode('ResendRequest', e.request));
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
