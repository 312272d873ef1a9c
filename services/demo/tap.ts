import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Consumer, Kafka, logLevel } from 'kafkajs';
import { type Decoded, decode } from '../shared/codec.ts';
import type { NonceEpoch } from '../shared/records.ts';

/** A decoded message with where it was read from (offsets order one host's messages). */
export interface Tapped {
  topic: string;
  partition: number;
  offset: number;
  msg: Decoded;
}

/**
 * Reads topics from now on (the end when it joins) in a private consumer group and keeps the messages about some
 * hosts (by the `hostId` of the decoded value), and every nonce epoch. The end-to-end tests look at the pipeline's
 * traffic through it, the way an operator would with a console consumer.
 */
export class Tap {
  readonly seen: Tapped[] = [];
  private readonly kafka: Kafka;
  private readonly hostIds: Set<string>;
  private consumer: Consumer | undefined;

  constructor(brokers: string[], hostIds: Iterable<string>) {
    this.kafka = new Kafka({ clientId: 'imastream-tap', brokers, logLevel: logLevel.NOTHING });
    this.hostIds = new Set(hostIds);
  }

  async start(topics: string[]): Promise<void> {
    this.consumer = this.kafka.consumer({ groupId: `imastream-tap-${randomUUID()}`, sessionTimeout: 10_000 });
    const joined = new Promise<void>((resolve) =>
      this.consumer?.on(this.consumer.events.GROUP_JOIN, () => resolve()),
    );
    await this.consumer.connect();
    await this.consumer.subscribe({ topics, fromBeginning: false });
    await this.consumer.run({
      eachMessage: async ({ topic, partition, message }) => {
        if (message.value === null) return;
        try {
          const msg = decode(message.value);
          const hostId = (msg.value as { hostId?: string }).hostId;
          if (msg.schema === 'NonceEpoch' || (hostId !== undefined && this.hostIds.has(hostId))) {
            this.seen.push({ topic, partition, offset: Number(message.offset), msg });
          }
        } catch {
          // not ours to judge
        }
      },
    });
    await joined;
  }

  async stop(): Promise<void> {
    await this.consumer?.disconnect().catch(() => undefined);
  }

  /** Values of one record type about one host, in the order they were read. */
  values<T>(schema: Decoded['schema'], hostId: string, topic?: string): T[] {
    return this.seen
      .filter((t) => t.msg.schema === schema && (topic === undefined || t.topic === topic))
      .map((t) => t.msg.value as { hostId: string })
      .filter((v) => v.hostId === hostId) as T[];
  }

  /** The newest nonce epoch seen (by epoch number). */
  latestNonce(): NonceEpoch | undefined {
    const epochs = this.seen
      .filter((t) => t.msg.schema === 'NonceEpoch')
      .map((t) => t.msg.value as NonceEpoch);
    return epochs.sort((a, b) => b.epoch - a.epoch)[0];
  }

  /** Polls `cond` until true or the timeout; returns whether it became true. */
  async until(cond: () => boolean, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (cond()) return true;
      await sleep(100);
    }

    return cond();
  }
}
