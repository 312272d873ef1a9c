/**
 * Helpers for the replayer and quote-checker integration tests (test/integration/replayer-*,
 * quote-checker-*): a producer that writes framed records as an agent would, a reader that
 * collects one test's hosts from an output topic, Redis cleanup, and polling.
 */
import { randomUUID } from 'node:crypto';

import { Redis } from 'ioredis';
import { Enroller } from '../../../lib/enrol/enroller.ts';
import { EnrolmentRegistry } from '../../../lib/enrol/registry.ts';
import { activateCredential } from '../../../services/agent/tpm.ts';
import { kafkaEnrolmentSink } from '../../../services/enroller/kafka.ts';
import { EnrolmentService } from '../../../services/enroller/service.ts';
import { PENDING_JOINS_KEY } from '../../../services/quote-checker/store.ts';
import { hostKeyPattern } from '../../../services/replayer/keys.ts';
import { decode, encode } from '../../../services/shared/codec.ts';
import { createKafka, type ImsProducer } from '../../../services/shared/kafka.ts';
import { createLogger, type Logger } from '../../../services/shared/logger.ts';
import type { RecordName, RecordTypes } from '../../../services/shared/records.ts';
import type { AkHandle, EkHandle } from '../../helpers/swtpm.ts';

export const BROKERS = (process.env.IMASTREAM_KAFKA_BROKERS ?? '127.0.0.1:19092').split(',');
export const REDIS_URL = process.env.IMASTREAM_REDIS_URL ?? 'redis://127.0.0.1:6379';

export function quietLogger(service = 'test'): Logger {
  return createLogger({ service, level: (process.env.TEST_LOG_LEVEL as 'error' | undefined) ?? 'error' });
}

/** A host id no other test run uses. */
export function uniqueHost(label: string): string {
  return `${label}-${randomUUID().slice(0, 8)}`;
}

export async function connectProducer(logger = quietLogger()): Promise<ImsProducer> {
  return createKafka({ brokers: BROKERS, clientId: 'imastream-test', logger }).connectProducer();
}

/** Produces records keyed by their hostId, framed with the codec, in order. */
export async function produce<N extends RecordName>(
  producer: ImsProducer,
  topic: string,
  name: N,
  values: readonly RecordTypes[N][],
): Promise<void> {
  const messages = values.map((v) => ({ key: (v as { hostId: string }).hostId, value: encode(name, v) }));
  for (let i = 0; i < messages.length; i += 1000) await producer.send(topic, messages.slice(i, i + 1000));
}

/** A decoded record seen on a topic, for the hosts a test watches. */
export interface Seen {
  schema: RecordName;
  value: Record<string, unknown>;
  key: string | null;
}

/**
 * Collects every record on `topic` whose key is one of `hosts`, from the topic's start, with a
 * throw-away consumer group. Undecodable values are kept with schema 'undecodable'.
 */
export async function watchTopic(topic: string, hosts: readonly string[], logger = quietLogger()) {
  const seen: Seen[] = [];
  const wanted = new Set(hosts);
  const kafka = createKafka({ brokers: BROKERS, clientId: 'imastream-test-watch', logger });
  const group = await kafka.runGroup({
    groupId: `imastream-test-watch-${randomUUID()}`,
    topics: [topic],
    partitionsConsumedConcurrently: 6,
    handleMessage: async (m) => {
      const key = m.key?.toString() ?? null;
      // Verdicts are keyed <hostId>/<shardId>; everything else by host.
      if (key === null || !wanted.has(key.split('/')[0]!) || m.value === null) return;
      const d = decode(m.value);
      seen.push({ schema: d.schema, value: d.value as unknown as Record<string, unknown>, key });
    },
  });
  await group.joined;

  return { seen, stop: () => group.stop() };
}

/** A verdict that judged its shard (CLOSED or FAILED), not an OPEN or CUT lifecycle state. */
export function judged(v: Seen): boolean {
  return v.value.status === 'CLOSED' || v.value.status === 'FAILED';
}

/** Polls `check` until it returns a value other than undefined, or fails after `timeoutMs`. */
export async function eventually<T>(
  what: string,
  check: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 30_000,
): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export function connectTestRedis(): Redis {
  return new Redis(REDIS_URL, { protocol: 2, maxRetriesPerRequest: 2 });
}

/** Deletes every key of the given hosts, and their pending joins. */
export async function cleanHosts(redis: Redis, hosts: readonly string[]): Promise<void> {
  for (const host of hosts) {
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(
        cursor,
        'MATCH',
        hostKeyPattern(host).replace(/[{}]/g, '\\$&'),
        'COUNT',
        500,
      );
      if (keys.length > 0) await redis.del(...keys);
      cursor = next;
    } while (cursor !== '0');
    const pending = await redis.zrange(PENDING_JOINS_KEY, 0, -1);
    const mine = pending.filter((m) => m.startsWith(`["${host}"`));
    if (mine.length > 0) await redis.zrem(PENDING_JOINS_KEY, ...mine);
  }
}

/**
 * Enrols `ak` (under `ek`) as the AK of every host in `hosts` through the enrolment protocol:
 * the enroller's state machine and publishing path (services/enroller/service.ts) with a
 * trust-on-first-use policy (the harness EK has no certificate), and a real
 * TPM2_ActivateCredential on the swtpm holding both keys. The Enrollment records on
 * ima.enrollments are exactly what the enroller service writes: status active, policy tofu.
 */
export async function enrolOnFirstUse(
  producer: ImsProducer,
  hosts: readonly string[],
  ek: EkHandle,
  ak: AkHandle,
): Promise<void> {
  const registry = new EnrolmentRegistry();
  const tofu = { trustStore: null, withoutCertificate: 'tofu' as const, allowList: new Set<string>() };
  const service = new EnrolmentService(
    new Enroller({ ekPolicy: tofu }, registry),
    registry,
    kafkaEnrolmentSink(producer),
    quietLogger('enroller'),
  );
  for (const hostId of hosts) {
    const challenge = await service.request({
      hostId,
      ekPublic: ek.public,
      ekCertificate: null,
      akPublic: ak.public,
    });
    if (challenge === null) throw new Error(`enrolment of ${hostId} refused`);
    const secret = await activateCredential(ek.tools, ek.handle, ak.context, challenge.credential);
    if (!(await service.answer({ hostId, challengeId: challenge.challengeId, secret }))) {
      throw new Error(`enrolment answer of ${hostId} refused`);
    }
  }
}
