/**
 * The consumer loop of {@link runGroup}, following STACK.md §2:
 * eachBatch with eachBatchAutoResolve off; messages of one partition strictly in order (one
 * partition never has two handlers running); across partitions up to
 * `partitionsConsumedConcurrently`. Before each chunk: `isRunning() && !isStale()`. After a chunk
 * succeeds: resolveOffset(last), heartbeat, commitOffsetsIfNecessary. So an offset is committed
 * only after its handler finished, and a crash or rebalance redelivers from the last commit:
 * handlers must be idempotent (the replayer's compare-and-set is).
 *
 * Failures (kafka-errors.ts): input → dead letter and move on; infrastructure → back off and retry
 * the same chunk, heartbeating, until it works or the consumer stops or loses the partition;
 * bug → a few retries, then dead letter. A failing multi-message chunk is retried message by
 * message, so only the bad message is dead-lettered.
 */
import { context } from '@opentelemetry/api';
import type { Batch, EachBatchPayload, KafkaMessage } from 'kafkajs';

import { encode } from './codec.ts';
import { deadLetterFor } from './dead-letter.ts';
import { classifyFailure, isMembershipError } from './kafka-errors.ts';
import type { Logger } from './logger.ts';
import { extractTraceContext } from './trace-headers.ts';

/** A consumed message. Key and value are raw bytes: decode the value with codec.decode. */
export interface InMessage {
  topic: string;
  partition: number;
  /** Offset as a decimal string (Kafka offsets are int64). */
  offset: string;
  key: Buffer | null;
  value: Buffer | null;
  headers: KafkaMessage['headers'];
  /** Producer or broker timestamp, ms since the epoch, as a string. */
  timestamp: string;
}

/** What a handler may use while it works. */
export interface HandlerContext {
  logger: Logger;
  /** Keeps the group membership alive during long work; may throw when a rebalance started. */
  heartbeat(): Promise<void>;
  /** False once the consumer is stopping or this partition was taken away: stop early. */
  isActive(): boolean;
}

export type MessageHandler = (message: InMessage, ctx: HandlerContext) => Promise<void>;
export type BatchHandler = (messages: InMessage[], ctx: HandlerContext) => Promise<void>;

export interface RetryPolicy {
  /** First backoff; doubles per attempt. */
  initialMs: number;
  maxMs: number;
  /** Attempts for a failure classified as a bug before it is dead-lettered. */
  bugAttempts: number;
}

export const DEFAULT_RETRY: RetryPolicy = { initialMs: 200, maxMs: 30_000, bugAttempts: 3 };

/** Sends one dead letter; throws when Kafka cannot take it (retried like infrastructure). */
export type DeadLetterSink = (key: Buffer | null, value: Buffer) => Promise<void>;

export interface BatchLoopOptions {
  logger: Logger;
  handleMessage?: MessageHandler;
  handleBatch?: BatchHandler;
  /** Largest chunk given to handleBatch (handleMessage always gets one message). */
  maxBatchMessages: number;
  retry: RetryPolicy;
  deadLetter: DeadLetterSink;
}

const HEARTBEAT_SLICE_MS = 500;

function toInMessage(batch: Batch, m: KafkaMessage): InMessage {
  return {
    topic: batch.topic,
    partition: batch.partition,
    offset: m.offset,
    key: m.key,
    value: m.value,
    headers: m.headers,
    timestamp: m.timestamp,
  };
}

function chunksOf<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/** Processes one kafkajs batch (one partition); the eachBatch callback of runGroup. */
export class BatchLoop {
  constructor(private readonly options: BatchLoopOptions) {}

  async eachBatch(payload: EachBatchPayload): Promise<void> {
    const { batch } = payload;
    const size = this.options.handleBatch ? this.options.maxBatchMessages : 1;
    const active = () => payload.isRunning() && !payload.isStale();
    const logger = this.options.logger.child({ topic: batch.topic, partition: batch.partition });
    const ctx: HandlerContext = { logger, heartbeat: () => payload.heartbeat(), isActive: active };

    for (const chunk of chunksOf(
      batch.messages.map((m) => toInMessage(batch, m)),
      size,
    )) {
      if (!active()) return;
      if (!(await this.settle(chunk, ctx))) return;

      payload.resolveOffset(chunk[chunk.length - 1]!.offset);
      await payload.heartbeat();
      await payload.commitOffsetsIfNecessary();
    }
  }

  /** Runs the handler until the chunk is done (true) or the loop must give up the partition (false). */
  private async settle(chunk: InMessage[], ctx: HandlerContext): Promise<boolean> {
    for (let attempt = 1; ; attempt++) {
      const failure = await this.attempt(chunk, ctx);
      if (failure === undefined) return true;

      const kind = classifyFailure(failure);
      const giveUp = kind === 'input' || (kind === 'bug' && attempt >= this.options.retry.bugAttempts);
      if (giveUp)
        return chunk.length > 1
          ? this.settleOneByOne(chunk, ctx)
          : this.sendToDeadLetter(chunk[0]!, failure, ctx);

      const first = chunk[0]!;
      ctx.logger.error({ err: failure, kind, attempt, offset: first.offset }, 'handler failed, retrying');
      if (!(await this.backoff(attempt, ctx))) return false;
    }
  }

  private async settleOneByOne(chunk: InMessage[], ctx: HandlerContext): Promise<boolean> {
    for (const message of chunk) {
      if (!ctx.isActive() || !(await this.settle([message], ctx))) return false;
    }
    return true;
  }

  /** The handler's error, or undefined on success. Membership errors go straight to kafkajs. */
  private async attempt(chunk: InMessage[], ctx: HandlerContext): Promise<unknown> {
    const { handleMessage, handleBatch } = this.options;
    try {
      const traced = extractTraceContext(chunk[0]!.headers);
      await context.with(traced, () =>
        handleBatch ? handleBatch(chunk, ctx) : handleMessage!(chunk[0]!, ctx),
      );
      return undefined;
    } catch (err) {
      if (isMembershipError(err)) throw err;
      return err ?? new Error('handler threw a nullish value');
    }
  }

  private async sendToDeadLetter(
    message: InMessage,
    failure: unknown,
    ctx: HandlerContext,
  ): Promise<boolean> {
    const letter = deadLetterFor(message, failure);
    ctx.logger.warn(
      { offset: message.offset, reason: letter.reason, error: letter.message },
      'message dead-lettered',
    );

    for (let attempt = 1; ; attempt++) {
      try {
        await this.options.deadLetter(message.key, encode('DeadLetter', letter));
        return true;
      } catch (err) {
        if (isMembershipError(err)) throw err;
        ctx.logger.error({ err, attempt, offset: message.offset }, 'dead letter not sent, retrying');
        if (!(await this.backoff(attempt, ctx))) return false;
      }
    }
  }

  /** Waits the attempt's backoff while heartbeating; false if the loop became inactive. */
  private async backoff(attempt: number, ctx: HandlerContext): Promise<boolean> {
    const { initialMs, maxMs } = this.options.retry;
    const until = Date.now() + Math.min(maxMs, initialMs * 2 ** (attempt - 1));

    while (Date.now() < until) {
      if (!ctx.isActive()) return false;
      await new Promise((resolve) => setTimeout(resolve, Math.min(HEARTBEAT_SLICE_MS, until - Date.now())));
      await ctx.heartbeat();
    }
    return ctx.isActive();
  }
}
