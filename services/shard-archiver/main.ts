import { randomUUID } from 'node:crypto';
import { createKafka } from '../shared/kafka.ts';
import type { Logger } from '../shared/logger.ts';
import { TOPIC } from '../shared/topics.ts';
import { type ArchiverStats, ShardArchiver } from './archiver.ts';
import { ShardStore } from './store.ts';

export const SHARD_ARCHIVER_GROUP = 'imastream-shard-archiver';

export interface ShardArchiverOptions {
  brokers: string[];
  logger: Logger;
  /** Root of the archive: `<out>/<hostId>/<bootId>/<start>-<end>.imsshard`. */
  outDir: string;
  groupId?: string;
  /** Topic names (tests use their own). */
  shardsTopic?: string;
  enrollmentsTopic?: string;
  alertsTopic?: string;
  deadLetterTopic?: string;
  enrolmentGraceMs?: number;
  concurrency?: number;
  /** Archive only hosts whose id starts with this. */
  hostPrefix?: string;
}

export interface ShardArchiverHandle {
  readonly joined: Promise<void>;
  readonly stats: ArchiverStats;
  readonly store: ShardStore;
  stop(): Promise<void>;
}

/**
 * Starts the shard archiver: the archiver group on ima.shards, and a private group (its own id,
 * read from the start) on ima.enrollments so every instance knows every host's AK. A shard whose
 * host's enrolment has not been read yet is retried (IMS_SHARD_AK_PENDING) for the grace period.
 */
export async function startShardArchiver(options: ShardArchiverOptions): Promise<ShardArchiverHandle> {
  const { logger } = options;
  const kafka = createKafka({ brokers: options.brokers, clientId: 'imastream-shard-archiver', logger });
  const producer = await kafka.connectProducer();
  const store = new ShardStore(options.outDir);
  const archiver = new ShardArchiver({
    store,
    producer,
    alertsTopic: options.alertsTopic ?? TOPIC.alerts,
    logger,
    ...(options.enrolmentGraceMs === undefined ? {} : { enrolmentGraceMs: options.enrolmentGraceMs }),
    ...(options.hostPrefix === undefined ? {} : { hostPrefix: options.hostPrefix }),
  });
  const deadLetterTopic = options.deadLetterTopic ?? TOPIC.deadLetter;
  const enrolments = await kafka.runGroup({
    groupId: `${options.groupId ?? SHARD_ARCHIVER_GROUP}-enrolments-${randomUUID()}`,
    topics: [options.enrollmentsTopic ?? TOPIC.enrollments],
    handleMessage: archiver.handleEnrollment,
    partitionsConsumedConcurrently: 3,
    deadLetterTopic,
  });
  const shards = await kafka.runGroup({
    groupId: options.groupId ?? SHARD_ARCHIVER_GROUP,
    topics: [options.shardsTopic ?? TOPIC.shards],
    handleMessage: archiver.handleShard,
    partitionsConsumedConcurrently: options.concurrency ?? 3,
    deadLetterTopic,
    // Verifying a large shard takes a while; keep the retry cap short for the enrolment wait.
    retry: { maxMs: 5_000 },
  });
  logger.info({ outDir: options.outDir }, 'shard archiver started');

  return {
    joined: Promise.all([enrolments.joined, shards.joined]).then(() => undefined),
    stats: archiver.stats,
    store,
    async stop() {
      await shards.stop();
      await enrolments.stop();
      await producer.disconnect();
      logger.info({ stats: archiver.stats }, 'shard archiver stopped');
    },
  };
}
