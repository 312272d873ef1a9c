import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { test } from 'node:test';
import { Enroller } from '../../lib/enrol/enroller.ts';
import { checkQuoteAk, EnrolmentRegistry } from '../../lib/enrol/registry.ts';
import { parsePublic } from '../../lib/tpm/public.ts';
import { followEnrollments, kafkaEnrolmentSink } from '../../services/enroller/kafka.ts';
import { EnrolmentService } from '../../services/enroller/service.ts';
import { akPublicBytes, SoftTpm } from '../helpers/enrol-soft-tpm.ts';
import { createTopics, memoryLogger, testKafka, unique, waitFor } from './kafka-helpers.ts';

/*
 * Two enroller instances on a real broker: the one that enrols a host publishes the Enrollment
 * (Avro, Confluent framing) to a compacted-style topic, and the other one's registry learns it
 * from the topic, so a quote from that AK is vouched for there too.
 */
test("an enrolment published by one enroller reaches another enroller's registry", async (t) => {
  const { logger } = memoryLogger();
  const kafka = testKafka(logger);
  const topic = unique('enrollments');
  await createTopics(kafka, [topic]);
  t.after(async () => {
    const admin = await kafka.connectAdmin();
    await admin.deleteTopics({ topics: [topic] }).finally(() => admin.disconnect());
  });
  const producer = await kafka.connectProducer();
  t.after(() => producer.disconnect());

  const policy = { trustStore: null, withoutCertificate: 'tofu' as const, allowList: new Set<string>() };
  const make = () => {
    const registry = new EnrolmentRegistry();
    const enroller = new Enroller({ ekPolicy: policy }, registry);
    return {
      registry,
      service: new EnrolmentService(enroller, registry, kafkaEnrolmentSink(producer, topic), logger),
    };
  };
  const a = make();
  const b = make();
  const follower = await followEnrollments(kafka, b.service, topic);
  t.after(() => follower.stop());
  await follower.joined;

  const tpm = new SoftTpm('ecc');
  const akPublic = akPublicBytes(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey);
  const challenge = await a.service.request({
    hostId: 'kafka-host',
    ekPublic: tpm.ekPublic,
    ekCertificate: null,
    akPublic,
  });
  assert.ok(challenge !== null);
  const secret = tpm.activate(parsePublic(tpm.ekPublic), challenge.akName, challenge.credential);
  assert.equal(
    await a.service.answer({ hostId: 'kafka-host', challengeId: challenge.challengeId, secret }),
    true,
  );

  await waitFor('the enrolment on the other instance', () => b.registry.get('kafka-host') !== undefined);
  const check = checkQuoteAk(b.registry, 'kafka-host', challenge.akName);
  assert.ok(check.ok);
  assert.equal(check.enrollment.policy, 'tofu');
  assert.deepEqual(check.enrollment.akPublic, akPublic);
});
