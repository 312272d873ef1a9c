import type { EkPolicy } from '../../lib/enrol/ek-policy.ts';
import { Enroller } from '../../lib/enrol/enroller.ts';
import { EnrolmentRegistry } from '../../lib/enrol/registry.ts';
import { createKafka, type GroupHandle } from '../shared/kafka.ts';
import type { Logger } from '../shared/logger.ts';
import { TOPIC } from '../shared/topics.ts';
import { followEnrollments, kafkaEnrolmentSink, waitCaughtUp } from './kafka.ts';
import { EnrolmentService } from './service.ts';
import { type EnrolTopics, requestsHandler } from './transport.ts';

export const ENROLLER_GROUP = 'imastream-enroller';

export interface EnrollerOptions {
  brokers: string[];
  logger: Logger;
  ekPolicy: EkPolicy;
  challengeTtlMs?: number;
  /** Consumer group on ima.enrol-requests (default imastream-enroller). */
  groupId?: string;
  topics?: Partial<EnrolTopics>;
  /** Where malformed requests go (default ima.dead-letter). */
  deadLetterTopic?: string;
  /** How long to wait for the registry to read ima.enrollments up to its end at start. */
  catchUpTimeoutMs?: number;
}

export interface EnrollerHandle {
  /** Resolves once the registry is caught up and the request group has joined. */
  readonly joined: Promise<void>;
  readonly registry: EnrolmentRegistry;
  stop(): Promise<void>;
}

/**
 * Starts one enroller: it rebuilds the registry from ima.enrollments (every instance reads all
 * of it), waits until that read reaches the topic's end as of start (so trust on first use
 * compares with the host's real enrolment, not an empty registry), then joins the request group.
 *
 * Pending challenges live in this process's memory. That is sound because requests and answers
 * are keyed by hostId on one topic, so both reach the partition owner; a rebalance between a
 * request and its answer loses the challenge (UNKNOWN_CHALLENGE) and the agent starts again.
 */
export async function startEnroller(options: EnrollerOptions): Promise<EnrollerHandle> {
  const { logger } = options;
  const topics: EnrolTopics = {
    requests: options.topics?.requests ?? TOPIC.enrolRequests,
    challenges: options.topics?.challenges ?? TOPIC.enrolChallenges,
    enrollments: options.topics?.enrollments ?? TOPIC.enrollments,
    alerts: options.topics?.alerts ?? TOPIC.alerts,
  };
  const ttlMs = options.challengeTtlMs ?? 5 * 60_000;
  const kafka = createKafka({ brokers: options.brokers, clientId: 'imastream-enroller', logger });
  const producer = await kafka.connectProducer();
  const registry = new EnrolmentRegistry();
  const enroller = new Enroller({ ekPolicy: options.ekPolicy, challengeTtlMs: ttlMs }, registry);
  const service = new EnrolmentService(
    enroller,
    registry,
    kafkaEnrolmentSink(producer, topics.enrollments),
    logger,
  );

  const groups: GroupHandle[] = [];
  const stopAll = async () => {
    for (const g of groups.reverse()) await g.stop().catch(() => undefined);
    await producer.disconnect().catch(() => undefined);
  };
  try {
    const follower = await followEnrollments(kafka, service, topics.enrollments);
    groups.push(follower);
    await waitCaughtUp(kafka, follower, options.catchUpTimeoutMs ?? 120_000);
    logger.info({ hosts: registry.size }, 'enrolment registry caught up');
    const requests = await kafka.runGroup({
      groupId: options.groupId ?? ENROLLER_GROUP,
      topics: [topics.requests],
      handleMessage: requestsHandler(service, producer, topics, logger, { staleAfterMs: ttlMs }),
      partitionsConsumedConcurrently: 3,
      deadLetterTopic: options.deadLetterTopic,
    });
    groups.push(requests);
    const pruner = setInterval(() => enroller.prune(Date.now()), Math.min(ttlMs, 60_000));
    pruner.unref();
    logger.info({ topics }, 'enroller started');

    return {
      joined: requests.joined,
      registry,
      async stop() {
        clearInterval(pruner);
        await stopAll();
        logger.info('enroller stopped');
      },
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}
