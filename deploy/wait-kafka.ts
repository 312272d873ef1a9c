/**
 * Waits until the Kafka cluster answers (admin.describeCluster succeeds), then creates the
 * topics of services/shared/topics.ts that are missing. Used by deploy/stack.sh up.
 *
 *   node --import tsx deploy/wait-kafka.ts [--kafka-brokers 127.0.0.1:19092] [--timeout-s 90] [--no-topics]
 *     [--replication-factor 1] [--pid <broker pid>]
 *
 * Exit status 0 when ready, 1 on timeout (IMS_KAFKA_UNAVAILABLE) or a topic mismatch.
 */
import { setTimeout as sleep } from 'node:timers/promises';

import { Kafka, logLevel } from 'kafkajs';

import { ImastreamError, isImastreamError } from '../lib/errors.ts';
import { COMMON_SETTINGS, loadConfig, parsers } from '../services/shared/config.ts';
import { createKafka } from '../services/shared/kafka.ts';
import { createLogger } from '../services/shared/logger.ts';
import { ensureTopics } from '../services/shared/topics.ts';

const SETTINGS = {
  kafkaBrokers: COMMON_SETTINGS.kafkaBrokers,
  timeoutS: { flag: 'timeout-s', default: '90', parse: parsers.int(1, 3600), doc: 'give up after this long' },
  noTopics: { flag: 'no-topics', boolean: true, parse: parsers.boolean, doc: 'only wait, create no topics' },
  replicationFactor: {
    flag: 'replication-factor',
    default: '1',
    parse: parsers.int(1, 16),
    doc: 'replication of created topics (3 on a real cluster)',
  },
  pid: {
    flag: 'pid',
    default: '0',
    parse: parsers.int(0, 2 ** 22),
    doc: 'give up early if this process exits',
  },
};

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** One probe with no client-side retries, so the loop here controls the pace. */
async function probe(brokers: string[]): Promise<number> {
  const kafka = new Kafka({
    clientId: 'imastream-wait',
    brokers,
    connectionTimeout: 1_000,
    logLevel: logLevel.NOTHING,
    retry: { retries: 0 },
  });
  const admin = kafka.admin();
  try {
    await admin.connect();
    const cluster = await admin.describeCluster();
    return cluster.brokers.length;
  } finally {
    await admin.disconnect().catch(() => {});
  }
}

async function waitForCluster(brokers: string[], timeoutS: number, pid: number): Promise<number> {
  const started = Date.now();
  let lastError = 'no answer';
  while (Date.now() - started < timeoutS * 1000) {
    if (pid > 0 && !isAlive(pid)) {
      throw new ImastreamError('IMS_KAFKA_UNAVAILABLE', `the broker process ${pid} exited: ${lastError}`);
    }
    try {
      return await probe(brokers);
    } catch (err) {
      lastError = err instanceof Error ? err.message : String(err);
      await sleep(250);
    }
  }
  throw new ImastreamError(
    'IMS_KAFKA_UNAVAILABLE',
    `no answer from ${brokers.join(',')} in ${timeoutS} s: ${lastError}`,
  );
}

async function main(): Promise<number> {
  const config = loadConfig(SETTINGS);
  const logger = createLogger({ service: 'stack', level: 'warn' });
  const started = Date.now();

  const count = await waitForCluster(config.kafkaBrokers, config.timeoutS, config.pid);
  process.stdout.write(`wait-kafka: cluster answers (${count} broker) after ${Date.now() - started} ms\n`);
  if (config.noTopics) return 0;

  const admin = await createKafka({
    brokers: config.kafkaBrokers,
    clientId: 'imastream-stack',
    logger,
  }).connectAdmin();
  try {
    const created = await ensureTopics(admin, { logger, replicationFactor: config.replicationFactor });
    process.stdout.write(
      `wait-kafka: topics ready (${created.length ? `created ${created.join(' ')}` : 'all present'})\n`,
    );
  } finally {
    await admin.disconnect();
  }
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    const line = isImastreamError(err) ? `${err.code}: ${err.message}` : String(err);
    process.stderr.write(`wait-kafka: ${line}\n`);
    process.exit(1);
  },
);
