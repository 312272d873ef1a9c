import { randomUUID } from 'node:crypto';
import { type Kafka, Partitioners } from 'kafkajs';
import { ImastreamError } from '../../lib/errors.ts';
import { decode } from '../shared/codec.ts';
import type { LogRecord } from '../shared/records.ts';

/** Messages of the partition's tail read first; doubled until one of the host's own is found. */
const FIRST_WINDOW = 5_000;
/** Most messages looked at in all, so a start never scans a whole week of a busy partition. */
const MAX_SCAN = 2_000_000;
const READ_TIMEOUT_MS = 60_000;

/** What the broker already holds from this host for one TPM boot (one replay chain). */
export interface BrokerTail {
  /** The host's LogRecords of the chain, by seq (the newest copy of each). */
  records: Map<number, LogRecord>;
  /** Highest LogRecord seq of the chain, -1 if none was seen in the scanned tail. */
  lastSeq: number;
  /** seq → quoteId of the SnapshotEvents of the chain. */
  snapshots: Map<number, string | null>;
  /** bootIds of the BootEvents seen. */
  boots: Set<string>;
}

/**
 * Reads the tail of the host's own partition of the measurements topic, to learn what the broker
 * already has that the agent's saved position does not say (a crash between the broker's ack and
 * the position save). The partition is the one the producer's default (murmur2, Java-compatible)
 * partitioner picks for the hostId key. The broker's copy is the agent's own output, trusted here
 * only to avoid re-sending: the caller checks every record it skips against its archive.
 *
 * `sameChain(bootId)` picks the boots of the current TPM boot (kexec keeps the chain).
 */
export async function readBrokerTail(
  kafka: Kafka,
  topic: string,
  hostId: string,
  sameChain: (bootId: string) => boolean,
  sinceSeq: number,
): Promise<BrokerTail> {
  const admin = kafka.admin();
  await admin.connect();
  let partition: number;
  let low: number;
  let high: number;
  try {
    const meta = await admin.fetchTopicMetadata({ topics: [topic] });
    const partitionMetadata = (meta.topics[0]?.partitions ?? []).map((p) => ({
      partitionId: p.partitionId,
      leader: p.leader,
    }));
    partition = Partitioners.DefaultPartitioner()({
      topic,
      partitionMetadata: partitionMetadata as never,
      message: { key: hostId, value: null },
    });
    const offsets = (await admin.fetchTopicOffsets(topic)).find((o) => o.partition === partition);
    low = Number(offsets?.low ?? 0);
    high = Number(offsets?.high ?? 0);
  } finally {
    await admin.disconnect();
  }
  let window = FIRST_WINDOW;
  for (;;) {
    const from = Math.max(low, high - window);
    if (from >= high) return emptyTail();
    const found = emptyTail();
    const ownBefore = await scan(kafka, topic, partition, from, high, (value) =>
      collect(value, hostId, sameChain, sinceSeq, found),
    );
    // Found one of the host's records older than the saved position (or reached the start): the
    // whole unconfirmed region is inside the window.
    if (ownBefore || from === low || window >= MAX_SCAN) return found;
    window *= 2;
  }
}

function emptyTail(): BrokerTail {
  return { records: new Map(), lastSeq: -1, snapshots: new Map(), boots: new Set() };
}

/** Returns whether the message is one of the host's records from before `sinceSeq`. */
function collect(
  value: Uint8Array,
  hostId: string,
  sameChain: (bootId: string) => boolean,
  sinceSeq: number,
  tail: BrokerTail,
): boolean {
  let decoded: ReturnType<typeof decode>;
  try {
    decoded = decode(value);
  } catch {
    return false;
  }
  const v = decoded.value as { hostId?: string; bootId?: string };
  if (v.hostId !== hostId || typeof v.bootId !== 'string' || !sameChain(v.bootId)) return false;
  if (decoded.schema === 'BootEvent') {
    tail.boots.add(v.bootId);
    return false;
  }
  if (decoded.schema === 'SnapshotEvent') {
    const ev = decoded.value as { seq: number; quoteId: string | null };
    tail.snapshots.set(ev.seq, ev.quoteId);
    return false;
  }
  if (decoded.schema !== 'LogRecord') return false;
  const rec = decoded.value as LogRecord;
  if (rec.seq < sinceSeq) return true;
  tail.records.set(rec.seq, rec);
  tail.lastSeq = Math.max(tail.lastSeq, rec.seq);

  return false;
}

/** Reads [from, to) of one partition with a throw-away consumer group; true if `take` ever said so. */
async function scan(
  kafka: Kafka,
  topic: string,
  partition: number,
  from: number,
  to: number,
  take: (value: Uint8Array) => boolean,
): Promise<boolean> {
  const groupId = `imastream-agent-tail-${randomUUID()}`;
  const consumer = kafka.consumer({ groupId, sessionTimeout: 10_000, heartbeatInterval: 1000 });
  let any = false;
  let done!: () => void;
  const finished = new Promise<void>((resolve) => {
    done = resolve;
  });
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: false });
    await consumer.run({
      autoCommit: false,
      eachMessage: async ({ partition: p, message }) => {
        if (p !== partition) return;
        const offset = Number(message.offset);
        if (offset < from || offset >= to) return;
        if (message.value !== null && take(message.value)) any = true;
        if (offset >= to - 1) done();
      },
    });
    consumer.seek({ topic, partition, offset: String(from) });
    const timedOut = await Promise.race([finished.then(() => false), sleepFlag(READ_TIMEOUT_MS)]);
    if (timedOut) {
      throw new ImastreamError('IMS_AGENT_IO', `could not read the tail of ${topic}[${partition}]`, {
        canRetry: true,
        details: { topic, partition, from, to },
      });
    }
  } finally {
    await consumer.disconnect().catch(() => undefined);
    const admin = kafka.admin();
    await admin
      .connect()
      .then(() => admin.deleteGroups([groupId]))
      .catch(() => undefined)
      .finally(() => admin.disconnect().catch(() => undefined));
  }

  return any;
}

function sleepFlag(ms: number): Promise<boolean> {
  return new Promise((resolve) => setTimeout(() => resolve(true), ms).unref());
}
