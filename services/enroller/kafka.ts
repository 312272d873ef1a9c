import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { ImastreamError } from '../../lib/errors.ts';
import { decodeAs, encode } from '../shared/codec.ts';
import type { GroupHandle, ImsProducer, KafkaAdapter } from '../shared/kafka.ts';
import { TOPIC } from '../shared/topics.ts';
import type { EnrolmentService, EnrolmentSink } from './service.ts';

/**
 * The enroller's ima.enrollments wiring: accepted enrolments out (keyed by hostId, compacted)
 * and in (every instance rebuilds the whole registry). Requests, challenges and answers are in
 * ./transport.ts.
 */

/** Publishes accepted enrolments; resolves once the broker has them (acks=-1). */
export function kafkaEnrolmentSink(producer: ImsProducer, topic: string = TOPIC.enrollments): EnrolmentSink {
  return {
    async publish(record) {
      await producer.send(topic, [{ key: record.hostId, value: encode('Enrollment', record) }]);
    },
  };
}

/** The registry's consumer, with the last offset it has applied per partition. */
export interface EnrolmentFollower extends GroupHandle {
  readonly topic: string;
  readonly applied: ReadonlyMap<number, bigint>;
}

/**
 * Follows ima.enrollments from the beginning into `service`'s registry. The group id is unique
 * per process: each instance needs every partition, not a share of them. A record that does not
 * decode goes to the adapter's dead-letter handling like any other poison message.
 */
export async function followEnrollments(
  kafka: KafkaAdapter,
  service: EnrolmentService,
  topic: string = TOPIC.enrollments,
): Promise<EnrolmentFollower> {
  const applied = new Map<number, bigint>();
  const group = await kafka.runGroup({
    groupId: `imastream-enroller-registry-${randomUUID()}`,
    topics: [topic],
    fromBeginning: true,
    handleMessage: async (message) => {
      // Recorded first: a poison message is dead-lettered, and still counts as read.
      applied.set(message.partition, BigInt(message.offset));
      if (message.value === null) return; // a tombstone: nothing to apply
      service.onRecord(decodeAs('Enrollment', message.value));
    },
  });

  return { joined: group.joined, stop: () => group.stop(), topic, applied };
}

/**
 * Resolves once the follower has read every partition up to its end as of this call. Fails
 * closed (IMS_KAFKA_UNAVAILABLE) after `timeoutMs`: an enroller that has not read the host's
 * enrolment would treat a changed EK as a first use.
 */
export async function waitCaughtUp(
  kafka: KafkaAdapter,
  follower: EnrolmentFollower,
  timeoutMs: number,
): Promise<void> {
  const admin = await kafka.connectAdmin();
  let ends: { partition: number; high: string; low: string }[];
  try {
    ends = await admin.fetchTopicOffsets(follower.topic);
  } finally {
    await admin.disconnect();
  }
  const pending = ends.filter((p) => BigInt(p.high) > BigInt(p.low));
  const deadline = Date.now() + timeoutMs;
  await follower.joined;
  for (;;) {
    const behind = pending.filter((p) => (follower.applied.get(p.partition) ?? -1n) < BigInt(p.high) - 1n);
    if (behind.length === 0) return;
    if (Date.now() > deadline) {
      throw new ImastreamError(
        'IMS_KAFKA_UNAVAILABLE',
        `${follower.topic} not read to its end within ${timeoutMs} ms (partitions ${behind.map((p) => p.partition).join(',')})`,
      );
    }
    await sleep(100);
  }
}
