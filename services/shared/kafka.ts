/**
 * The Kafka adapter: the only module that talks to kafkajs (2.2.4), so the client can be swapped
 * (@platformatic/kafka, @confluentinc/kafka-javascript) behind the same small API.
 *
 * API summary for service authors
 * -------------------------------
 *   const kafka = createKafka({ brokers, clientId: 'replayer', logger });
 *
 *   const producer = await kafka.connectProducer();          // acks=-1, idempotent, murmur2 keys
 *   await producer.send(TOPIC.measurements, [{ key: hostId, value: encode('LogRecord', rec) }]);
 *   await producer.disconnect();
 *
 *   const group = await kafka.runGroup({
 *     groupId: 'imastream-replayer',
 *     topics: [TOPIC.measurements],
 *     handleBatch: async (messages, ctx) => { ... },        // or handleMessage: async (m, ctx) => {}
 *     partitionsConsumedConcurrently: 3,                      // default 1
 *   });
 *   await group.joined;                                       // resolves on the first group join
 *   await group.stop();                                       // finish the chunk, commit, leave
 *
 *   // shutdown.ts: on SIGTERM/SIGINT run these in order, then exit (25 s grace)
 *   stopOnSignals(logger, [group.stop, producer.disconnect, () => redis.quit(), shutdownTelemetry]);
 *
 * Delivery contract of runGroup (STACK.md §2; details in kafka-group.ts):
 * - At least once. A message's offset is committed only after its handler resolved, so after a
 *   crash, a stop mid-retry or a rebalance, messages may come again: handlers must be idempotent.
 * - One partition is handled strictly in order, one chunk at a time; partitions run concurrently
 *   up to partitionsConsumedConcurrently. Key by hostId to keep a host's records in order.
 * - handleMessage gets one message; handleBatch gets up to maxBatchMessages (default 500)
 *   consecutive messages of ONE partition (possibly of many hosts).
 * - Values are raw bytes (InMessage.value: Buffer | null); decode with codec.decode/decodeAs.
 * - Throw an ImastreamError that cannot be retried (canRetry false; every IMS_WIRE_* from the
 *   codec) for bad input: the message goes to ima.dead-letter (DeadLetter record, reason = code)
 *   and processing continues. If a handleBatch chunk fails this way, the chunk is re-run one
 *   message at a time so only the bad message is dead-lettered.
 * - Throw anything infrastructure-like (ioredis/kafkajs/network errors, or an ImastreamError with
 *   canRetry: true, e.g. IMS_STATE_CONFLICT) to have the same chunk retried with backoff
 *   (200 ms doubling to 30 s), heartbeating, nothing committed, until it works or the consumer
 *   stops. Any other error (a bug) is retried 3 times, then dead-lettered as UNCLASSIFIED.
 * - Do not catch kafkajs rebalance errors from ctx.heartbeat(); let them propagate.
 * - Each handler runs inside the trace context found in the first message's headers; producer
 *   sends inject the active context. Both are no-ops when telemetry is off.
 * - New groups start from the earliest offset (fromBeginning defaults to true).
 */
import { type Admin, type Consumer, Kafka, Partitioners, type Producer, type RecordMetadata } from 'kafkajs';

import { ImastreamError } from '../../lib/errors.ts';
import {
  type BatchHandler,
  BatchLoop,
  DEFAULT_RETRY,
  type MessageHandler,
  type RetryPolicy,
} from './kafka-group.ts';
import { kafkaLogLevel, pinoLogCreator } from './kafka-log.ts';
import type { Logger } from './logger.ts';
import { TOPIC } from './topics.ts';
import { injectTraceHeaders } from './trace-headers.ts';

export type { BatchHandler, HandlerContext, InMessage, MessageHandler, RetryPolicy } from './kafka-group.ts';

export interface CreateKafkaOptions {
  brokers: string[];
  clientId: string;
  logger: Logger;
}

/** A message to produce. Key by hostId (ima.nonces: by epoch). */
export interface OutMessage {
  key: string | Buffer | null;
  value: Buffer | null;
  headers?: Record<string, string | Buffer>;
}

export interface ImsProducer {
  /** Sends with acks=-1 and resolves when every broker replica has the messages. */
  send(topic: string, messages: OutMessage[]): Promise<RecordMetadata[]>;
  disconnect(): Promise<void>;
}

export interface GroupOptions {
  groupId: string;
  topics: string[];
  /** Exactly one of handleMessage and handleBatch. */
  handleMessage?: MessageHandler;
  handleBatch?: BatchHandler;
  maxBatchMessages?: number;
  partitionsConsumedConcurrently?: number;
  /** Where a new group starts; default true (earliest). */
  fromBeginning?: boolean;
  deadLetterTopic?: string;
  retry?: Partial<RetryPolicy>;
  sessionTimeout?: number;
  heartbeatInterval?: number;
  /** Called when kafkajs gives up on the consumer (a crash it will not restart from). */
  onCrash?: (err: Error) => void;
}

export interface GroupHandle {
  /** Resolves on the first successful group join (partitions assigned). */
  readonly joined: Promise<void>;
  /** Finishes the chunk in hand, commits resolved offsets, leaves the group, disconnects. */
  stop(): Promise<void>;
}

export interface KafkaAdapter {
  readonly clientId: string;
  connectProducer(): Promise<ImsProducer>;
  runGroup(options: GroupOptions): Promise<GroupHandle>;
  /** A connected kafkajs admin client (for ensureTopics, lag checks); disconnect it when done. */
  connectAdmin(): Promise<Admin>;
}

function wrapProducer(producer: Producer): ImsProducer {
  return {
    send(topic, messages) {
      const withTrace = messages.map((m) => {
        const headers = { ...m.headers };
        injectTraceHeaders(headers);
        return { key: m.key, value: m.value, headers };
      });
      return producer.send({ topic, messages: withTrace, acks: -1 });
    },
    disconnect: () => producer.disconnect(),
  };
}

/** A Kafka adapter; nothing connects until a producer, group or admin is asked for. */
export function createKafka({ brokers, clientId, logger }: CreateKafkaOptions): KafkaAdapter {
  const kafkaLogger = logger.child({ component: 'kafka' });
  const kafka = new Kafka({
    clientId,
    brokers,
    connectionTimeout: 3_000,
    logLevel: kafkaLogLevel(kafkaLogger),
    logCreator: pinoLogCreator(kafkaLogger),
    retry: { initialRetryTime: 300, retries: 8 },
  });

  async function connectProducer(): Promise<ImsProducer> {
    const producer = kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      createPartitioner: Partitioners.DefaultPartitioner,
    });
    await producer.connect();
    return wrapProducer(producer);
  }

  async function connectAdmin(): Promise<Admin> {
    const admin = kafka.admin();
    await admin.connect();
    return admin;
  }

  return {
    clientId,
    connectProducer,
    connectAdmin,
    runGroup: (options) => runGroup(kafka, connectProducer, kafkaLogger, options),
  };
}

function checkGroupOptions(options: GroupOptions): void {
  if (Boolean(options.handleMessage) === Boolean(options.handleBatch)) {
    throw new ImastreamError(
      'IMS_CONFIG_INVALID',
      'runGroup needs exactly one of handleMessage and handleBatch',
    );
  }
  if (options.topics.length === 0) throw new ImastreamError('IMS_CONFIG_INVALID', 'runGroup needs topics');
}

/** Logs joins and crashes; the returned promise resolves on the first join. */
function watchGroup(consumer: Consumer, logger: Logger, onCrash?: (err: Error) => void): Promise<void> {
  return new Promise<void>((joined) => {
    consumer.on(consumer.events.GROUP_JOIN, (e) => {
      logger.info({ assignment: e.payload.memberAssignment }, 'group joined');
      joined();
    });
    consumer.on(consumer.events.CRASH, (e) => {
      logger.error({ err: e.payload.error, restart: e.payload.restart }, 'consumer crashed');
      if (!e.payload.restart) onCrash?.(e.payload.error);
    });
  });
}

async function runGroup(
  kafka: Kafka,
  connectProducer: () => Promise<ImsProducer>,
  logger: Logger,
  options: GroupOptions,
): Promise<GroupHandle> {
  checkGroupOptions(options);
  const groupLogger = logger.child({ groupId: options.groupId });
  const deadLetterTopic = options.deadLetterTopic ?? TOPIC.deadLetter;
  const producer = await connectProducer();

  const consumer = kafka.consumer({
    groupId: options.groupId,
    sessionTimeout: options.sessionTimeout ?? 30_000,
    heartbeatInterval: options.heartbeatInterval ?? 3_000,
    rebalanceTimeout: 60_000,
  });
  const joined = watchGroup(consumer, groupLogger, options.onCrash);

  const loop = new BatchLoop({
    logger: groupLogger,
    ...(options.handleMessage ? { handleMessage: options.handleMessage } : {}),
    ...(options.handleBatch ? { handleBatch: options.handleBatch } : {}),
    maxBatchMessages: options.maxBatchMessages ?? 500,
    retry: { ...DEFAULT_RETRY, ...options.retry },
    deadLetter: async (key, value) => {
      await producer.send(deadLetterTopic, [{ key, value }]);
    },
  });

  await consumer.connect();
  await consumer.subscribe({ topics: options.topics, fromBeginning: options.fromBeginning ?? true });
  await consumer.run({
    eachBatchAutoResolve: false,
    autoCommit: true,
    autoCommitInterval: 1_000,
    autoCommitThreshold: 100,
    partitionsConsumedConcurrently: options.partitionsConsumedConcurrently ?? 1,
    eachBatch: (payload) => loop.eachBatch(payload),
  });

  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      await consumer.disconnect();
      await producer.disconnect();
      groupLogger.info('group stopped');
    })();
    return stopping;
  };

  return { joined, stop };
}
