/**
 * The Kafka adapter against the real broker of deploy/stack.sh: produce, group join, commit after
 * each handled message, resume after a restart with nothing lost, dead letters for bad input,
 * retries (not dead letters) while Redis is unreachable. Every test uses its own topics and group.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { describe, it, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';

import { hasCode } from '../../lib/errors.ts';
import { decodeAs, encode } from '../../services/shared/codec.ts';
import type { GroupHandle, InMessage, KafkaAdapter } from '../../services/shared/kafka.ts';
import { createRedis } from '../../services/shared/redis.ts';
import {
  BROKERS,
  committedOffsets,
  createTopics,
  memoryLogger,
  testKafka,
  unique,
  waitFor,
} from './kafka-helpers.ts';

const shared = (file: string) =>
  JSON.stringify(fileURLToPath(new URL(`../../services/shared/${file}`, import.meta.url)));

/** A consumer process that handles one message per 20 ms, prints each offset, and stops on SIGTERM. */
function consumerProcess(topic: string, groupId: string) {
  const script = `
    import { createKafka } from ${shared('kafka.ts')};
    import { createLogger } from ${shared('logger.ts')};
    import { stopOnSignals } from ${shared('shutdown.ts')};
    const logger = createLogger({ service: 'child', level: 'warn', destination: process.stderr });
    const kafka = createKafka({ brokers: ${JSON.stringify(BROKERS)}, clientId: 'child', logger });
    const group = await kafka.runGroup({
      groupId: ${JSON.stringify(groupId)},
      topics: [${JSON.stringify(topic)}],
      deadLetterTopic: ${JSON.stringify(`${topic}.dl`)},
      handleMessage: async (m) => {
        await new Promise((r) => setTimeout(r, 20));
        process.stdout.write(m.partition + ':' + m.offset + '\\n');
      },
    });
    stopOnSignals(logger, [group.stop]);`;
  return spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
}

const REDIS_URL = process.env.IMASTREAM_REDIS_URL ?? 'redis://127.0.0.1:6379';

function quoteTaken(hostId: string, seq: number): Buffer {
  return encode('QuoteTaken', { hostId, bootId: 'boot:0', seq, quoteId: `q-${seq}`, at: seq });
}

async function produceSeqs(kafka: KafkaAdapter, topic: string, hosts: string[], from: number, to: number) {
  const producer = await kafka.connectProducer();
  try {
    for (let seq = from; seq < to; seq++) {
      await producer.send(
        topic,
        hosts.map((h) => ({ key: h, value: quoteTaken(h, seq) })),
      );
    }
  } finally {
    await producer.disconnect();
  }
}

/** Collects every DeadLetter on `topic` into `letters` until the test ends. */
async function watchDeadLetters(t: TestContext, kafka: KafkaAdapter, topic: string) {
  const letters: ReturnType<typeof decodeAs<'DeadLetter'>>[] = [];
  const group = await kafka.runGroup({
    groupId: unique('dl-reader'),
    topics: [topic],
    handleMessage: async (m) => {
      letters.push(decodeAs('DeadLetter', m.value!));
    },
  });
  t.after(() => group.stop());
  return letters;
}

describe('kafka adapter', { timeout: 120_000 }, () => {
  it('produces, joins, handles each partition in key order and commits every handled offset', async (t) => {
    const { logger } = memoryLogger();
    const kafka = testKafka(logger);
    const topic = unique('order');
    const groupId = unique('group');
    const hosts = ['host-a', 'host-b', 'host-c', 'host-d'];
    await createTopics(kafka, [topic, `${topic}.dl`]);
    await produceSeqs(kafka, topic, hosts, 0, 25);

    const seen = new Map<string, number[]>();
    const group = await kafka.runGroup({
      groupId,
      topics: [topic],
      deadLetterTopic: `${topic}.dl`,
      partitionsConsumedConcurrently: 3,
      handleMessage: async (m) => {
        const value = decodeAs('QuoteTaken', m.value!);
        assert.equal(m.key?.toString(), value.hostId);
        seen.set(value.hostId, [...(seen.get(value.hostId) ?? []), value.seq]);
      },
    });
    t.after(() => group.stop());

    await group.joined;
    await waitFor('100 messages', () => [...seen.values()].flat().length >= 100);
    await group.stop();

    for (const host of hosts) assert.deepEqual(seen.get(host), [...Array(25).keys()], host);
    const committed = await committedOffsets(kafka, groupId, topic);
    assert.equal(
      committed.reduce((a, b) => a + b, 0),
      100,
      `committed ${committed}`,
    );
  });

  it('resumes after a stop with nothing lost and nothing handled twice', async (t) => {
    const { logger } = memoryLogger();
    const kafka = testKafka(logger);
    const topic = unique('resume');
    const groupId = unique('group');
    const hosts = ['h1', 'h2', 'h3', 'h4', 'h5', 'h6'];
    await createTopics(kafka, [topic, `${topic}.dl`]);
    await produceSeqs(kafka, topic, hosts, 0, 10);

    const handled: string[] = [];
    const run = (stopAfter: number | undefined): Promise<GroupHandle> => {
      let handle: GroupHandle | undefined;
      const started = kafka.runGroup({
        groupId,
        topics: [topic],
        deadLetterTopic: `${topic}.dl`,
        handleMessage: async (m: InMessage) => {
          handled.push(`${m.partition}:${m.offset}`);
          if (stopAfter !== undefined && handled.length === stopAfter) void handle?.stop();
        },
      });
      return started.then((h) => {
        handle = h;
        t.after(() => h.stop());
        return h;
      });
    };

    const first = await run(25);
    await waitFor('the first consumer to stop', () => handled.length >= 25);
    await first.stop();
    const afterFirst = handled.length;
    assert.ok(afterFirst < 60, `the first consumer stopped early (${afterFirst})`);

    await produceSeqs(kafka, topic, hosts, 10, 20);
    const second = await run(undefined);
    await waitFor('all 120 messages', () => new Set(handled).size >= 120);
    await second.stop();

    assert.equal(new Set(handled).size, 120, 'every message handled');
    assert.equal(handled.length, 120, 'no message handled twice after a graceful stop');
  });

  it('on SIGTERM finishes the message in hand, commits and exits 0', async (t) => {
    const { logger } = memoryLogger();
    const kafka = testKafka(logger);
    const topic = unique('sigterm');
    const groupId = unique('group');
    await createTopics(kafka, [topic, `${topic}.dl`], 1);
    await produceSeqs(kafka, topic, ['h'], 0, 500);

    const child = consumerProcess(topic, groupId);
    t.after(() => child.kill('SIGKILL'));
    const handled: string[] = [];
    child.stdout.on('data', (chunk: Buffer) => handled.push(...chunk.toString().split('\n').filter(Boolean)));
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));

    await waitFor('the child to handle 20 messages', () => handled.length >= 20);
    child.kill('SIGTERM');
    assert.equal(await exited, 0);

    assert.ok(handled.length < 500, 'stopped before the end');
    assert.deepEqual(
      handled,
      [...Array(handled.length).keys()].map((i) => `0:${i}`),
    );
    assert.deepEqual(
      await committedOffsets(kafka, groupId, topic),
      [handled.length],
      'committed exactly what it handled',
    );
  });

  it('sends undecodable input to the dead-letter topic with its reason and carries on', async (t) => {
    const { logger, lines } = memoryLogger();
    const kafka = testKafka(logger);
    const topic = unique('dl');
    const dlTopic = `${topic}.dl`;
    await createTopics(kafka, [topic], 1);
    await createTopics(kafka, [dlTopic], 1);

    const producer = await kafka.connectProducer();
    t.after(() => producer.disconnect());
    const garbage = Buffer.from('not an avro frame');
    await producer.send(topic, [
      { key: 'host-x', value: quoteTaken('host-x', 0) },
      { key: 'host-x', value: garbage, headers: { note: 'bad' } },
      { key: 'host-x', value: quoteTaken('host-x', 1) },
    ]);

    const good: number[] = [];
    const group = await kafka.runGroup({
      groupId: unique('group'),
      topics: [topic],
      deadLetterTopic: dlTopic,
      handleMessage: async (m) => {
        good.push(decodeAs('QuoteTaken', m.value!).seq);
      },
    });
    t.after(() => group.stop());
    const letters = await watchDeadLetters(t, kafka, dlTopic);

    await waitFor('both good messages and one dead letter', () => good.length === 2 && letters.length === 1);
    assert.deepEqual(good, [0, 1]);
    const [letter] = letters;
    assert.equal(letter?.reason, 'IMS_WIRE_BAD_FRAME');
    assert.equal(letter?.topic, topic);
    assert.equal(letter?.partition, 0);
    assert.equal(letter?.offset, '1');
    assert.deepEqual(letter?.key, Buffer.from('host-x'));
    assert.deepEqual(letter?.value, garbage);
    assert.ok(lines.some((l) => l.msg === 'message dead-lettered' && l.level === 'warn'));
  });

  it('isolates the bad message of a failing batch and dead-letters only that one', async (t) => {
    const { logger } = memoryLogger();
    const kafka = testKafka(logger);
    const topic = unique('batch');
    const dlTopic = `${topic}.dl`;
    await createTopics(kafka, [topic, dlTopic], 1);
    const producer = await kafka.connectProducer();
    t.after(() => producer.disconnect());
    const values = [0, 1, 2, 3, 4].map((seq) =>
      seq === 2 ? Buffer.from([0, 0, 0, 0x7f, 0xff, 1]) : quoteTaken('h', seq),
    );
    await producer.send(
      topic,
      values.map((value) => ({ key: 'h', value })),
    );

    const applied = new Set<number>();
    const group = await kafka.runGroup({
      groupId: unique('group'),
      topics: [topic],
      deadLetterTopic: dlTopic,
      handleBatch: async (messages) => {
        const decoded = messages.map((m) => decodeAs('QuoteTaken', m.value!));
        for (const value of decoded) applied.add(value.seq);
      },
    });
    t.after(() => group.stop());
    const letters = await watchDeadLetters(t, kafka, dlTopic);

    await waitFor('four applied, one dead letter', () => applied.size === 4 && letters.length === 1);
    assert.deepEqual([...applied].sort(), [0, 1, 3, 4]);
    assert.equal(letters[0]?.reason, 'IMS_WIRE_UNKNOWN_SCHEMA');
    assert.equal(letters[0]?.offset, '2');
  });

  it('retries while Redis is unreachable, in order, without dead-lettering', async (t) => {
    const { logger, lines } = memoryLogger();
    const kafka = testKafka(logger);
    const topic = unique('infra');
    const dlTopic = `${topic}.dl`;
    await createTopics(kafka, [topic, dlTopic], 1);
    await produceSeqs(kafka, topic, ['h'], 0, 3);

    // A real client pointed at a port where nothing listens: its commands fail as in an outage.
    const down = createRedis({ url: 'redis://127.0.0.1:1', logger });
    const up = createRedis({ url: REDIS_URL, logger });
    const key = unique('infra-key');
    t.after(async () => {
      down.disconnect();
      await up.del(key);
      up.disconnect();
    });

    let failures = 0;
    const order: number[] = [];
    const group = await kafka.runGroup({
      groupId: unique('group'),
      topics: [topic],
      deadLetterTopic: dlTopic,
      retry: { initialMs: 50, maxMs: 200 },
      handleMessage: async (m) => {
        const seq = decodeAs('QuoteTaken', m.value!).seq;
        const client = seq === 1 && failures < 2 ? down : up;
        try {
          await client.rpush(key, String(seq));
        } catch (err) {
          failures++;
          throw err;
        }
        order.push(seq);
      },
    });
    t.after(() => group.stop());

    await waitFor('three messages', () => order.length === 3);
    assert.deepEqual(order, [0, 1, 2]);
    assert.equal(failures, 2);
    assert.deepEqual(await up.lrange(key, 0, -1), ['0', '1', '2']);
    assert.equal(
      lines.filter((l) => l.msg === 'handler failed, retrying' && l.kind === 'infrastructure').length,
      2,
    );
    assert.ok(!lines.some((l) => l.msg === 'message dead-lettered'));
  });

  it('refuses a group with both or neither handler', async () => {
    const kafka = testKafka(memoryLogger().logger);

    await assert.rejects(kafka.runGroup({ groupId: unique('g'), topics: ['x'] }), (err: unknown) =>
      hasCode(err, 'IMS_CONFIG_INVALID'),
    );
  });
});
