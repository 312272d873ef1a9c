import type { HashAlg } from '../../lib/hash.ts';
import { createKafka } from '../shared/kafka.ts';
import type { Logger } from '../shared/logger.ts';
import { connectRedis } from '../shared/redis.ts';
import { TOPIC } from '../shared/topics.ts';
import { ReplayStore } from './store.ts';
import { type ReplayerStats, ReplayWorker } from './worker.ts';

export const REPLAYER_GROUP = 'imastream-replayer';

export interface ReplayerOptions {
  brokers: string[];
  redisUrl: string;
  logger: Logger;
  groupId?: string;
  banks?: readonly HashAlg[];
  /** Partitions handled at once by this instance. */
  concurrency?: number;
  maxBatchMessages?: number;
  /** Consumer session timeout: how soon the group notices a dead instance (default 30 s). */
  sessionTimeoutMs?: number;
}

export interface ReplayerHandle {
  /** Resolves once the instance joined its consumer group. */
  readonly joined: Promise<void>;
  readonly stats: ReplayerStats;
  /** Stops consuming (committing what was handled), flushes the producer, closes Redis. */
  stop(): Promise<void>;
}

/** Starts one replayer instance: a member of the replayer consumer group on ima.measurements. */
export async function startReplayer(options: ReplayerOptions): Promise<ReplayerHandle> {
  const { logger } = options;
  const redis = await connectRedis({ url: options.redisUrl, logger, connectionName: 'imastream-replayer' });
  const kafka = createKafka({ brokers: options.brokers, clientId: 'imastream-replayer', logger });
  const producer = await kafka.connectProducer();
  const worker = new ReplayWorker(new ReplayStore(redis), producer, logger, {
    ...(options.banks === undefined ? {} : { banks: options.banks }),
  });
  const group = await kafka.runGroup({
    groupId: options.groupId ?? REPLAYER_GROUP,
    topics: [TOPIC.measurements],
    handleBatch: worker.handleBatch,
    partitionsConsumedConcurrently: options.concurrency ?? 3,
    maxBatchMessages: options.maxBatchMessages ?? 500,
    ...(options.sessionTimeoutMs === undefined ? {} : { sessionTimeout: options.sessionTimeoutMs }),
  });
  logger.info({ groupId: options.groupId ?? REPLAYER_GROUP }, 'replayer started');

  return {
    joined: group.joined,
    stats: worker.stats,
    async stop() {
      await group.stop();
      await producer.disconnect();
      await redis.quit();
      logger.info({ stats: worker.stats }, 'replayer stopped');
    },
  };
}
