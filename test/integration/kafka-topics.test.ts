/**
 * ensureTopics against the real broker, with a private topic table so the real topics are not
 * touched: creates what is missing with the table's settings, is idempotent, and refuses a topic
 * whose partition count differs from the table.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';

import { hasCode } from '../../lib/errors.ts';
import { ensureTopics, TOPICS, type TopicSpec } from '../../services/shared/topics.ts';
import { memoryLogger, testKafka, unique } from './kafka-helpers.ts';

it('creates missing topics with their settings, once, and refuses a partition mismatch', async (t) => {
  const kafka = testKafka(memoryLogger().logger);
  const admin = await kafka.connectAdmin();
  t.after(() => admin.disconnect());
  const table: TopicSpec[] = [
    { name: unique('topics.log'), partitions: 6, cleanup: 'delete', retentionMs: 3_600_000 },
    { name: unique('topics.compact'), partitions: 2, cleanup: 'compact' },
  ];

  assert.deepEqual(
    await ensureTopics(admin, { topics: table }),
    table.map((s) => s.name),
  );
  assert.deepEqual(await ensureTopics(admin, { topics: table }), [], 'second run creates nothing');

  const { topics } = await admin.fetchTopicMetadata({ topics: table.map((s) => s.name) });
  assert.deepEqual(topics.map((m) => m.partitions.length).sort(), [2, 6]);
  const configs = await admin.describeConfigs({
    includeSynonyms: false,
    resources: table.map((s) => ({ type: 2 /* TOPIC */, name: s.name })),
  });
  const value = (topic: string, key: string) =>
    configs.resources.find((r) => r.resourceName === topic)?.configEntries.find((e) => e.configName === key)
      ?.configValue;
  assert.equal(value(table[0]!.name, 'cleanup.policy'), 'delete');
  assert.equal(value(table[0]!.name, 'retention.ms'), '3600000');
  assert.equal(value(table[1]!.name, 'cleanup.policy'), 'compact');

  const drifted = [{ ...table[0]!, partitions: 3 }];
  await assert.rejects(ensureTopics(admin, { topics: drifted }), (err: unknown) => {
    return hasCode(err, 'IMS_KAFKA_TOPIC_MISMATCH') && err.message.includes('has 6 partitions, table says 3');
  });
});

it('finds the pipeline topics that deploy/stack.sh created', async (t) => {
  const kafka = testKafka(memoryLogger().logger);
  const admin = await kafka.connectAdmin();
  t.after(() => admin.disconnect());

  assert.deepEqual(await ensureTopics(admin), [], 'stack.sh up already created every topic');
  const existing = new Set(await admin.listTopics());
  for (const spec of TOPICS) assert.ok(existing.has(spec.name), spec.name);
});
