/** Shared helpers for the Kafka integration tests: unique names, topics, waiting. */
import { randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';

import { COMMON_SETTINGS, loadConfig } from '../../services/shared/config.ts';
import { createKafka, type KafkaAdapter } from '../../services/shared/kafka.ts';
import { createLogger, type Logger } from '../../services/shared/logger.ts';

/** Brokers from IMASTREAM_KAFKA_BROKERS or the local stack's default. */
export const BROKERS = loadConfig({ kafkaBrokers: COMMON_SETTINGS.kafkaBrokers }, []).kafkaBrokers;

/** A name no other test (or earlier run) uses. */
export function unique(prefix: string): string {
  return `test.${prefix}.${randomUUID().slice(0, 8)}`;
}

/** A logger whose JSON lines are kept in `lines` (nothing printed). */
export function memoryLogger(): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line));
      done();
    },
  });
  return { logger: createLogger({ service: 'test', level: 'info', destination }), lines };
}

export function testKafka(logger: Logger): KafkaAdapter {
  return createKafka({ brokers: BROKERS, clientId: unique('client'), logger });
}

/** Creates fresh topics with `partitions` partitions each. */
export async function createTopics(kafka: KafkaAdapter, names: string[], partitions = 3): Promise<void> {
  const admin = await kafka.connectAdmin();
  try {
    await admin.createTopics({
      topics: names.map((topic) => ({ topic, numPartitions: partitions, replicationFactor: 1 })),
      waitForLeaders: true,
    });
  } finally {
    await admin.disconnect();
  }
}

/** Polls `condition` every 50 ms; throws with `what` after `timeoutMs`. */
export async function waitFor(what: string, condition: () => boolean, timeoutMs = 30_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** Committed offset per partition of `groupId` on `topic` (-1 when none). */
export async function committedOffsets(
  kafka: KafkaAdapter,
  groupId: string,
  topic: string,
): Promise<number[]> {
  const admin = await kafka.connectAdmin();
  try {
    const [entry] = await admin.fetchOffsets({ groupId, topics: [topic] });
    return (entry?.partitions ?? []).sort((a, b) => a.partition - b.partition).map((p) => Number(p.offset));
  } finally {
    await admin.disconnect();
  }
}
