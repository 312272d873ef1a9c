/**
 * The topic table of docs/contract.md and the admin step that creates missing topics.
 *
 * measurements, quotes and checkpoints have the same partition count, so one host's key lands on
 * the same partition number in all three (the default partitioner is murmur2 of the key, modulo
 * the count). Changing a count re-homes keys: never change one on a live cluster.
 */
import type { Admin, ITopicConfig } from 'kafkajs';

import { ImastreamError } from '../../lib/errors.ts';
import type { Logger } from './logger.ts';

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

/** 1 MiB values plus key, headers and batch overhead (the broker default is 1 MiB + 12 bytes). */
export const TOPIC_MAX_MESSAGE_BYTES = 1024 * 1024 + 64 * 1024;

/** ima.shards: 8 MiB SealedShard values (codec MAX_SHARD_MESSAGE_BYTES) plus the same overhead. */
export const SHARDS_MAX_MESSAGE_BYTES = 8 * 1024 * 1024 + 64 * 1024;

export interface TopicSpec {
  name: string;
  partitions: number;
  cleanup: 'delete' | 'compact';
  /** retention.ms for `delete` topics. */
  retentionMs?: number;
  /** max.message.bytes when not {@link TOPIC_MAX_MESSAGE_BYTES}. */
  maxMessageBytes?: number;
}

/** Topic names, so services never spell them by hand. */
export const TOPIC = {
  measurements: 'ima.measurements',
  quotes: 'ima.quotes',
  checkpoints: 'ima.checkpoints',
  verdicts: 'ima.verdicts',
  alerts: 'ima.alerts',
  enrollments: 'ima.enrollments',
  nonces: 'ima.nonces',
  challenges: 'ima.challenges',
  enrolRequests: 'ima.enrol-requests',
  enrolChallenges: 'ima.enrol-challenges',
  deadLetter: 'ima.dead-letter',
  shards: 'ima.shards',
} as const;

/** Every imastream topic with its partitions and cleanup (docs/contract.md). */
export const TOPICS: readonly TopicSpec[] = [
  { name: TOPIC.measurements, partitions: 6, cleanup: 'delete', retentionMs: 7 * DAY_MS },
  { name: TOPIC.quotes, partitions: 6, cleanup: 'delete', retentionMs: 7 * DAY_MS },
  { name: TOPIC.checkpoints, partitions: 6, cleanup: 'delete', retentionMs: DAY_MS },
  { name: TOPIC.verdicts, partitions: 3, cleanup: 'compact' },
  { name: TOPIC.alerts, partitions: 3, cleanup: 'delete', retentionMs: 90 * DAY_MS },
  { name: TOPIC.enrollments, partitions: 3, cleanup: 'compact' },
  { name: TOPIC.nonces, partitions: 3, cleanup: 'delete', retentionMs: HOUR_MS },
  { name: TOPIC.challenges, partitions: 3, cleanup: 'delete', retentionMs: HOUR_MS },
  // EnrolRequest and EnrolAnswer, keyed by hostId: both of a host reach the same enroller.
  { name: TOPIC.enrolRequests, partitions: 3, cleanup: 'delete', retentionMs: HOUR_MS },
  { name: TOPIC.enrolChallenges, partitions: 3, cleanup: 'delete', retentionMs: HOUR_MS },
  { name: TOPIC.deadLetter, partitions: 3, cleanup: 'delete', retentionMs: 90 * DAY_MS },
  // Sealed shards are archived by the shard archiver; Kafka only carries them there.
  {
    name: TOPIC.shards,
    partitions: 3,
    cleanup: 'delete',
    retentionMs: 7 * DAY_MS,
    maxMessageBytes: SHARDS_MAX_MESSAGE_BYTES,
  },
];

/** The createTopics entry for one spec. */
export function topicConfig(spec: TopicSpec, replicationFactor: number): ITopicConfig {
  const configEntries = [
    { name: 'cleanup.policy', value: spec.cleanup },
    { name: 'max.message.bytes', value: String(spec.maxMessageBytes ?? TOPIC_MAX_MESSAGE_BYTES) },
  ];
  if (spec.retentionMs !== undefined)
    configEntries.push({ name: 'retention.ms', value: String(spec.retentionMs) });

  return { topic: spec.name, numPartitions: spec.partitions, replicationFactor, configEntries };
}

export interface EnsureTopicsOptions {
  topics?: readonly TopicSpec[];
  /** 1 on a single local broker; 3 on a real cluster. */
  replicationFactor?: number;
  logger?: Logger;
}

async function partitionCounts(admin: Admin, names: string[]): Promise<Map<string, number>> {
  if (names.length === 0) return new Map();
  const { topics } = await admin.fetchTopicMetadata({ topics: names });
  return new Map(topics.map((t) => [t.name, t.partitions.length]));
}

/**
 * Creates the topics of the table that do not exist yet (waiting for their leaders) and checks
 * that existing ones have the table's partition count; throws IMS_KAFKA_TOPIC_MISMATCH when one
 * does not. Existing topics' other configs are left alone. Returns the names it created.
 */
export async function ensureTopics(admin: Admin, options: EnsureTopicsOptions = {}): Promise<string[]> {
  const { topics = TOPICS, replicationFactor = 1, logger } = options;
  const existing = new Set(await admin.listTopics());
  const missing = topics.filter((t) => !existing.has(t.name));

  if (missing.length > 0) {
    await admin.createTopics({
      topics: missing.map((t) => topicConfig(t, replicationFactor)),
      waitForLeaders: true,
    });
    logger?.info({ topics: missing.map((t) => t.name) }, 'topics created');
  }

  const present = topics.filter((t) => existing.has(t.name));
  const counts = await partitionCounts(
    admin,
    present.map((t) => t.name),
  );
  const wrong = present.filter((t) => counts.get(t.name) !== t.partitions);
  if (wrong.length > 0) {
    const list = wrong.map(
      (t) => `${t.name} has ${counts.get(t.name)} partitions, table says ${t.partitions}`,
    );
    throw new ImastreamError('IMS_KAFKA_TOPIC_MISMATCH', list.join('; '), { details: { topics: list } });
  }

  return missing.map((t) => t.name);
}
