/**
 * Kill -9 a replayer process mid-stream and start another: every record is applied exactly once.
 * The final PCR state of each host in Redis must equal an offline replay of its records, with
 * the record count equal to the number of records produced, and every checkpoint present.
 *
 * Other replayers (other tests, the demo) may read ima.measurements in groups of their own, so
 * the processes here keep their state in a Redis database of their own: only they can move it.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { after, it } from 'node:test';
import { Redis } from 'ioredis';
import { PcrReplay } from '../../lib/ima/replay.ts';
import { hostKeys } from '../../services/replayer/keys.ts';
import type { ImsProducer } from '../../services/shared/kafka.ts';
import { TOPIC } from '../../services/shared/topics.ts';
import { bootEvent, logRecord, quoteTaken } from '../services/replayer/fixtures.ts';

import {
  cleanHosts,
  connectProducer,
  connectTestRedis,
  eventually,
  produce,
  REDIS_URL,
  uniqueHost,
  watchTopic,
} from '../services/replayer/pipeline.ts';

const BOOT = 'boot-k:1';
const PER_HOST = 5_000;
const HOSTS = Array.from({ length: 8 }, (_, i) => uniqueHost(`rp-kill${i}`));
const BIN = new URL('../../bin/imastream.js', import.meta.url).pathname;
const CRASH_DB = 5;
const CRASH_REDIS_URL = `${REDIS_URL.replace(/\/\d*$/, '')}/${CRASH_DB}`;

function startReplayerProcess(): ChildProcess {
  const level = process.env.REPLAYER_CHILD_LOG ?? 'warn';
  const args = [
    BIN,
    'replayer',
    '--session-timeout-ms',
    '6000',
    '--log-level',
    level,
    '--redis-url',
    CRASH_REDIS_URL,
  ];
  const stdout = process.env.REPLAYER_CHILD_LOG === undefined ? 'ignore' : 'inherit';

  return spawn(process.execPath, args, { stdio: ['ignore', stdout, 'inherit'] });
}

async function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  await new Promise((resolve) => child.once('exit', resolve));
}

const redis = new Redis(CRASH_REDIS_URL, { protocol: 2 });
const children: ChildProcess[] = [];
let producer: ImsProducer | undefined;

after(async () => {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await exited(c);
  }
  await producer?.disconnect();
  await cleanHosts(redis, HOSTS);
  await redis.quit();
  // Replayers of other groups (other tests, the demo) may have replayed these hosts into db 0.
  const shared = connectTestRedis();
  await cleanHosts(shared, HOSTS);
  await shared.quit();
});

async function progress(): Promise<number[]> {
  const raws = await redis.mget(...HOSTS.map((h) => hostKeys.replay(h)));
  return raws.map((r) => (r === null ? 0 : (JSON.parse(r) as { nextSeq: number }).nextSeq));
}

it('applies every record exactly once across a kill -9 and a restart', async (t) => {
  producer = await connectProducer();
  const checkpoints = await watchTopic(TOPIC.checkpoints, HOSTS);
  t.after(() => checkpoints.stop());
  const logs = HOSTS.map((h) => Array.from({ length: PER_HOST }, (_, i) => logRecord(h, BOOT, i)));
  for (const [i, host] of HOSTS.entries()) {
    await produce(producer, TOPIC.measurements, 'BootEvent', [bootEvent(host, BOOT)]);
    await produce(producer, TOPIC.measurements, 'LogRecord', logs[i]!.slice(0, PER_HOST / 2));
    await produce(producer, TOPIC.measurements, 'QuoteTaken', [quoteTaken(host, BOOT, PER_HOST / 2)]);
    await produce(producer, TOPIC.measurements, 'LogRecord', logs[i]!.slice(PER_HOST / 2));
    await produce(producer, TOPIC.measurements, 'QuoteTaken', [quoteTaken(host, BOOT, PER_HOST)]);
  }

  const first = startReplayerProcess();
  children.push(first);
  const sum = async () => (await progress()).reduce((a, b) => a + b, 0);
  await eventually('first progress', async () => ((await sum()) > 0 ? true : undefined), 60_000);
  const atKill = await eventually('mid-stream', async () => {
    const n = await sum();
    return n >= 15_000 ? n : undefined;
  });
  first.kill('SIGKILL');
  await exited(first);
  const total = HOSTS.length * PER_HOST;
  t.diagnostic(`first replayer killed (kill -9) after ${atKill} of ${total} records`);
  assert.ok(atKill < total, 'the kill must land mid-stream (raise PER_HOST if it does not)');

  const second = startReplayerProcess();
  children.push(second);
  const resumed = await eventually(
    'second replayer resumes',
    async () => ((await sum()) > atKill ? Date.now() : undefined),
    60_000,
  );
  await eventually('all hosts replayed', async () => ((await sum()) === total ? true : undefined), 120_000);
  const rate = Math.round(((total - atKill) * 1000) / (Date.now() - resumed));
  t.diagnostic(`second replayer: ${total - atKill} records after resuming, about ${rate} records/s`);

  for (const [i, host] of HOSTS.entries()) {
    const doc = JSON.parse((await redis.get(hostKeys.replay(host)))!) as { replay: { count: number } };
    const offline = new PcrReplay();
    for (const r of logs[i]!) offline.extend(r);
    assert.equal(doc.replay.count, PER_HOST, `${host}: records applied`);
    assert.deepEqual(doc.replay, offline.state(), `${host}: PCR state`);
    for (const seq of [PER_HOST / 2, PER_HOST]) {
      assert.equal(await redis.exists(hostKeys.ckpt(host, BOOT, seq)), 1, `${host}: checkpoint at ${seq}`);
    }
  }
  await eventually('every checkpoint on ima.checkpoints', () => {
    const got = new Set(checkpoints.seen.map((s) => `${s.value.hostId}:${s.value.seq}`));
    return HOSTS.every((h) => got.has(`${h}:${PER_HOST / 2}`) && got.has(`${h}:${PER_HOST}`))
      ? true
      : undefined;
  });

  second.kill('SIGTERM');
  await exited(second);
  assert.equal(second.exitCode, 0, 'SIGTERM stops the replayer cleanly');
});
