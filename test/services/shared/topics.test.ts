import assert from 'node:assert/strict';
import { it } from 'node:test';

import { TOPIC, TOPICS, topicConfig } from '../../../services/shared/topics.ts';

const DAY = 86_400_000;

it('matches the docs/contract.md topic table', () => {
  const table = Object.fromEntries(TOPICS.map((t) => [t.name, [t.partitions, t.cleanup, t.retentionMs]]));

  assert.deepEqual(table, {
    'ima.measurements': [6, 'delete', 7 * DAY],
    'ima.quotes': [6, 'delete', 7 * DAY],
    'ima.checkpoints': [6, 'delete', DAY],
    'ima.verdicts': [3, 'compact', undefined],
    'ima.alerts': [3, 'delete', 90 * DAY],
    'ima.enrollments': [3, 'compact', undefined],
    'ima.nonces': [3, 'delete', 3_600_000],
    'ima.challenges': [3, 'delete', 3_600_000],
    'ima.enrol-requests': [3, 'delete', 3_600_000],
    'ima.enrol-challenges': [3, 'delete', 3_600_000],
    'ima.dead-letter': [3, 'delete', 90 * DAY],
    'ima.shards': [3, 'delete', 7 * DAY],
  });
  assert.deepEqual(new Set(Object.values(TOPIC)), new Set(TOPICS.map((t) => t.name)));
});

it('renders createTopics entries with cleanup, retention and a message size above 1 MiB', () => {
  const quotes = topicConfig(TOPICS.find((t) => t.name === TOPIC.quotes)!, 1);
  const verdicts = topicConfig(TOPICS.find((t) => t.name === TOPIC.verdicts)!, 3);
  const entry = (c: typeof quotes, name: string) => c.configEntries?.find((e) => e.name === name)?.value;

  assert.equal(quotes.numPartitions, 6);
  assert.equal(entry(quotes, 'cleanup.policy'), 'delete');
  assert.equal(entry(quotes, 'retention.ms'), String(7 * DAY));
  assert.ok(Number(entry(quotes, 'max.message.bytes')) > 1024 * 1024);
  assert.equal(verdicts.replicationFactor, 3);
  assert.equal(entry(verdicts, 'cleanup.policy'), 'compact');
  assert.equal(entry(verdicts, 'retention.ms'), undefined);
  const shards = topicConfig(TOPICS.find((t) => t.name === TOPIC.shards)!, 1);
  assert.ok(Number(entry(shards, 'max.message.bytes')) > 8 * 1024 * 1024, 'room for an 8 MiB shard');
});
