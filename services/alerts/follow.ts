import { randomUUID } from 'node:crypto';

import { decodeAs } from '../shared/codec.ts';
import { createKafka, type InMessage } from '../shared/kafka.ts';
import type { Logger } from '../shared/logger.ts';
import type { Alert } from '../shared/records.ts';
import { TOPIC } from '../shared/topics.ts';

export interface FollowOptions {
  brokers: string[];
  logger: Logger;
  /** Keep reading new alerts; otherwise stop once every partition is read to its end. */
  follow: boolean;
  /** Start at the oldest retained alert; otherwise at the newest (follow) — a one-shot read always starts at the oldest. */
  fromBeginning: boolean;
  hostId?: string;
  onAlert(alert: Alert): void;
}

export interface AlertFollower {
  /** Resolves when a one-shot read reached the end (never, when following). */
  readonly done: Promise<void>;
  stop(): Promise<void>;
}

/**
 * Reads ima.alerts as a throw-away consumer group of its own, so it never takes alerts from another
 * reader and commits nothing anyone else depends on. Alerts it cannot decode are logged and skipped:
 * a reader has no business dead-lettering other components' messages.
 */
export async function followAlerts(options: FollowOptions): Promise<AlertFollower> {
  const kafka = createKafka({
    brokers: options.brokers,
    clientId: 'imastream-alerts',
    logger: options.logger,
  });
  const ends = options.follow ? null : await endOffsets(kafka);
  const progress = new Progress(ends);
  const group = await kafka.runGroup({
    groupId: `imastream-alerts-cli-${randomUUID()}`,
    topics: [TOPIC.alerts],
    fromBeginning: options.fromBeginning || !options.follow,
    handleMessage: async (m) => {
      const alert = readAlert(m, options.logger);
      if (alert !== undefined && (options.hostId === undefined || alert.hostId === options.hostId)) {
        options.onAlert(alert);
      }
      progress.seen(m.partition, m.offset);
    },
  });

  return { done: progress.done, stop: () => group.stop() };
}

function readAlert(m: InMessage, logger: Logger): Alert | undefined {
  try {
    return m.value === null ? undefined : decodeAs('Alert', m.value);
  } catch (err) {
    logger.warn({ err, partition: m.partition, offset: m.offset }, 'undecodable alert skipped');
    return undefined;
  }
}

/** The offset after the last message of each partition of ima.alerts, now. */
async function endOffsets(kafka: ReturnType<typeof createKafka>): Promise<Map<number, bigint>> {
  const admin = await kafka.connectAdmin();
  try {
    const offsets = await admin.fetchTopicOffsets(TOPIC.alerts);
    return new Map(
      offsets.filter((o) => BigInt(o.high) > BigInt(o.low)).map((o) => [o.partition, BigInt(o.high)]),
    );
  } finally {
    await admin.disconnect();
  }
}

/** Tracks a one-shot read: done once every non-empty partition was read up to its end offset. */
class Progress {
  readonly done: Promise<void>;
  private finish: () => void = () => {};

  constructor(private readonly remaining: Map<number, bigint> | null) {
    this.done = new Promise((resolve) => {
      this.finish = resolve;
    });
    if (remaining !== null && remaining.size === 0) this.finish();
  }

  seen(partition: number, offset: string): void {
    const end = this.remaining?.get(partition);
    if (end === undefined || BigInt(offset) + 1n < end) return;
    this.remaining!.delete(partition);
    if (this.remaining!.size === 0) this.finish();
  }
}
