import { randomUUID } from 'node:crypto';
import { decodeAs, encode } from '../shared/codec.ts';
import type { GroupHandle, ImsProducer, KafkaAdapter } from '../shared/kafka.ts';
import { TOPIC } from '../shared/topics.ts';
import type { EnrolmentService, EnrolmentSink } from './service.ts';

/**
 * The enroller's half of the Kafka wiring that existing contracts cover: ima.enrollments out
 * (keyed by hostId, compacted) and in (every instance rebuilds the whole registry). Requests,
 * challenges and answers have no topic yet (docs/enrolment.md).
 */

/** Publishes accepted enrolments; resolves once the broker has them (acks=-1). */
export function kafkaEnrolmentSink(producer: ImsProducer, topic: string = TOPIC.enrollments): EnrolmentSink {
  return {
    async publish(record) {
      await producer.send(topic, [{ key: record.hostId, value: encode('Enrollment', record) }]);
    },
  };
}

/**
 * Follows ima.enrollments from the beginning into `service`'s registry. The group id is unique
 * per process: each instance needs every partition, not a share of them. A record that does not
 * decode goes to the adapter's dead-letter handling like any other poison message.
 */
export function followEnrollments(
  kafka: KafkaAdapter,
  service: EnrolmentService,
  topic: string = TOPIC.enrollments,
): Promise<GroupHandle> {
  return kafka.runGroup({
    groupId: `imastream-enroller-registry-${randomUUID()}`,
    topics: [topic],
    fromBeginning: true,
    handleMessage: async (message) => {
      if (message.value === null) return; // a tombstone: nothing to apply
      service.onRecord(decodeAs('Enrollment', message.value));
    },
  });
}
