import { randomUUID } from 'node:crypto';
import { type Consumer, Kafka, logLevel, type Producer } from 'kafkajs';
import type { Logger } from 'pino';
import { isImastreamError } from '../../lib/errors.ts';
import { decode, encode } from '../shared/codec.ts';
import type {
  BootEvent,
  Challenge,
  CutRequest,
  Enrollment,
  LogRecord,
  NonceEpoch,
  Quote,
  QuoteTaken,
  RecordTypes,
  ResendRequest,
  SealedShard,
  SnapshotEvent,
} from '../shared/records.ts';
import { type BrokerTail, readBrokerTail } from './broker-tail.ts';

export type Measurement =
  | { name: 'LogRecord'; value: LogRecord }
  | { name: 'BootEvent'; value: BootEvent }
  | { name: 'QuoteTaken'; value: QuoteTaken }
  | { name: 'SnapshotEvent'; value: SnapshotEvent };

export interface AgentTopics {
  measurements: string;
  quotes: string;
  enrollments: string;
  nonces: string;
  challenges: string;
  /** Sealed shards for the shard archiver (docs/shards.md). */
  shards: string;
}

export const DEFAULT_TOPICS: AgentTopics = {
  measurements: 'ima.measurements',
  quotes: 'ima.quotes',
  enrollments: 'ima.enrollments',
  nonces: 'ima.nonces',
  challenges: 'ima.challenges',
  shards: 'ima.shards',
};

/** What the agent hears from the fleet side. */
export interface AgentInbox {
  onChallenge(challenge: Challenge): void;
  onResend(request: ResendRequest): void;
  /** A CutRequest naming this host. */
  onCut?(request: CutRequest): void;
}

/**
 * The agent's Kafka side. Every send waits for all in-sync replicas (acks = -1) through an
 * idempotent producer with one request in flight, so records of one host reach their partition
 * once each and in order; a send resolves only once the broker has them, which is what lets the
 * agent save its position afterwards. Everything is keyed by hostId.
 */
export class AgentKafka {
  private readonly kafka: Kafka;
  private readonly producer: Producer;
  private readonly consumers: Consumer[] = [];
  private readonly hostId: string;
  private readonly topics: AgentTopics;
  private readonly log: Logger;
  private nonce: NonceEpoch | undefined;

  constructor(brokers: string[], hostId: string, topics: AgentTopics, log: Logger) {
    this.kafka = new Kafka({ clientId: `imastream-agent-${hostId}`, brokers, logLevel: logLevel.NOTHING });
    this.producer = this.kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      allowAutoTopicCreation: false,
    });
    this.hostId = hostId;
    this.topics = topics;
    this.log = log;
  }

  async connect(): Promise<void> {
    await this.producer.connect();
  }

  /** Produces measurement-stream values in order; resolves once the broker acknowledged all. */
  async measurements(values: readonly Measurement[]): Promise<void> {
    if (values.length === 0) return;
    const messages = values.map((m) => ({ key: this.hostId, value: encode(m.name, m.value as never) }));
    await this.producer.send({ topic: this.topics.measurements, acks: -1, messages });
  }

  /** What the broker holds from this host past `sinceSeq` (broker-tail.ts). */
  tail(sameChain: (bootId: string) => boolean, sinceSeq: number): Promise<BrokerTail> {
    return readBrokerTail(this.kafka, this.topics.measurements, this.hostId, sameChain, sinceSeq);
  }

  async quote(quote: Quote): Promise<void> {
    await this.send(this.topics.quotes, 'Quote', quote);
  }

  /** One sealed shard (up to 8 MiB: the codec's SealedShard limit, the topic allows it). */
  async sealedShard(shard: SealedShard): Promise<void> {
    await this.send(this.topics.shards, 'SealedShard', shard);
  }

  async enrollment(enrollment: Enrollment): Promise<void> {
    await this.send(this.topics.enrollments, 'Enrollment', enrollment);
  }

  /** The newest nonce epoch still valid, if any has been heard. */
  currentNonce(now = Date.now()): NonceEpoch | undefined {
    return this.nonce !== undefined && this.nonce.validUntil > now ? this.nonce : undefined;
  }

  /**
   * Listens to ima.nonces (all of it: a private group read from the start, so the newest epoch is
   * known at once) and to ima.challenges (this host's group, new messages only). Resolves once
   * both consumers have joined their groups, so no challenge sent afterwards is missed.
   */
  async listen(inbox: AgentInbox): Promise<void> {
    await Promise.all([
      this.consume(`imastream-agent-nonces-${this.hostId}-${randomUUID()}`, this.topics.nonces, true, (v) =>
        this.onNonce(v),
      ),
      this.consume(`imastream-agent-${this.hostId}`, this.topics.challenges, false, (v) =>
        this.onChallenge(v, inbox),
      ),
    ]);
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.consumers.map((c) => c.disconnect()));
    await this.producer.disconnect();
  }

  private async send<N extends keyof RecordTypes>(
    topic: string,
    name: N,
    value: RecordTypes[N],
  ): Promise<void> {
    await this.producer.send({
      topic,
      acks: -1,
      messages: [{ key: this.hostId, value: encode(name, value) }],
    });
  }

  private async consume(
    groupId: string,
    topic: string,
    fromBeginning: boolean,
    handle: (value: Uint8Array) => void,
  ) {
    const consumer = this.kafka.consumer({ groupId, sessionTimeout: 10_000, heartbeatInterval: 1000 });
    this.consumers.push(consumer);
    const joined = new Promise<void>((resolve) => consumer.on(consumer.events.GROUP_JOIN, () => resolve()));
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning });
    await consumer.run({
      eachMessage: async ({ message }) => {
        if (message.value !== null) handle(message.value);
      },
    });
    await joined;
  }

  private onNonce(value: Uint8Array): void {
    const decoded = this.tryDecode(value, 'nonces');
    if (decoded?.schema !== 'NonceEpoch') return;
    if (this.nonce === undefined || decoded.value.epoch > this.nonce.epoch) this.nonce = decoded.value;
  }

  private onChallenge(value: Uint8Array, inbox: AgentInbox): void {
    const decoded = this.tryDecode(value, 'challenges');
    if (decoded === undefined) return;
    if (decoded.schema === 'Challenge' && decoded.value.hostId === this.hostId)
      inbox.onChallenge(decoded.value);
    if (decoded.schema === 'CutRequest' && decoded.value.hostId === this.hostId) inbox.onCut?.(decoded.value);
    const name = decoded.schema as string;
    if (name === 'ResendRequest') {
      const request = decoded.value as ResendRequest;
      if (request.hostId === this.hostId) inbox.onResend(request);
    }
  }

  private tryDecode(value: Uint8Array, topic: string) {
    try {
      return decode(value);
    } catch (err) {
      // A message we cannot read is someone else's problem to dead-letter; the agent moves on.
      this.log.warn(
        { topic, code: isImastreamError(err) ? err.code : undefined },
        'undecodable message ignored',
      );
      return undefined;
    }
  }
}
