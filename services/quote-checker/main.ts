import { createKafka } from '../shared/kafka.ts';
import type { Logger } from '../shared/logger.ts';
import { connectRedis } from '../shared/redis.ts';
import { TOPIC } from '../shared/topics.ts';
import { refsHandler } from './refs.ts';
import { QuoteStore } from './store.ts';
import { type QuoteCheckerStats, QuoteWorker } from './worker.ts';

export const QUOTE_CHECKER_GROUP = 'imastream-quote-checker';
export const QUOTE_CHECKER_REFS_GROUP = 'imastream-quote-checker-refs';

export interface QuoteCheckerOptions {
  brokers: string[];
  redisUrl: string;
  logger: Logger;
  groupId?: string;
  refsGroupId?: string;
  /** Unattested deadline of a shard (default 5 min). */
  deadlineMs?: number;
  /** How often overdue joins are looked for (default 10 s). */
  sweepIntervalMs?: number;
  concurrency?: number;
  /** How long a replaced AK is still accepted after its host re-enrols (default 10 min). */
  akOverlapMs?: number;
}

export interface QuoteCheckerHandle {
  readonly joined: Promise<void>;
  readonly stats: QuoteCheckerStats;
  stop(): Promise<void>;
}

/**
 * Starts one quote-checker instance: a member of the quote-checker group on ima.quotes and
 * ima.checkpoints, a member of the references group on ima.enrollments, ima.nonces and
 * ima.challenges, and a periodic SHARD_DEADLINE sweep.
 */
export async function startQuoteChecker(options: QuoteCheckerOptions): Promise<QuoteCheckerHandle> {
  const { logger } = options;
  const redis = await connectRedis({
    url: options.redisUrl,
    logger,
    connectionName: 'imastream-quote-checker',
  });
  const kafka = createKafka({ brokers: options.brokers, clientId: 'imastream-quote-checker', logger });
  const producer = await kafka.connectProducer();
  const store = new QuoteStore(redis);
  const worker = new QuoteWorker(store, producer, logger, { deadlineMs: options.deadlineMs ?? 5 * 60_000 });
  const refs = await kafka.runGroup({
    groupId: options.refsGroupId ?? QUOTE_CHECKER_REFS_GROUP,
    topics: [TOPIC.enrollments, TOPIC.nonces, TOPIC.challenges],
    handleMessage: refsHandler(store, logger, { akOverlapMs: options.akOverlapMs }),
    partitionsConsumedConcurrently: 3,
  });
  const group = await kafka.runGroup({
    groupId: options.groupId ?? QUOTE_CHECKER_GROUP,
    topics: [TOPIC.quotes, TOPIC.checkpoints],
    handleMessage: worker.handleMessage,
    partitionsConsumedConcurrently: options.concurrency ?? 6,
  });
  const sweeper = startSweeper(worker, logger, options.sweepIntervalMs ?? 10_000);
  logger.info('quote-checker started');

  return {
    joined: Promise.all([refs.joined, group.joined]).then(() => undefined),
    stats: worker.stats,
    async stop() {
      sweeper.stop();
      await group.stop();
      await refs.stop();
      await producer.disconnect();
      await redis.quit();
      logger.info({ stats: worker.stats }, 'quote-checker stopped');
    },
  };
}

/** Runs the sweep every `intervalMs`, never two at once; a failed sweep is logged and retried next time. */
function startSweeper(worker: QuoteWorker, logger: Logger, intervalMs: number): { stop(): void } {
  let running = false;
  const timer = setInterval(() => {
    if (running) return;
    running = true;
    worker
      .sweep()
      .catch((err: unknown) => logger.error({ err }, 'deadline sweep failed'))
      .finally(() => {
        running = false;
      });
  }, intervalMs);

  return { stop: () => clearInterval(timer) };
}
