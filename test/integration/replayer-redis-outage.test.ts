/**
 * Redis goes away mid-stream and comes back: the replayer retries with backoff, commits no offset
 * past a record it has not stored, and ends with every record applied exactly once. The test runs
 * its own redis-server (append-only, fsync always) so it can kill and restart it.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, it } from 'node:test';

import { Redis } from 'ioredis';

import { PcrReplay } from '../../lib/ima/replay.ts';
import { hostKeys } from '../../services/replayer/keys.ts';
import { type ReplayerHandle, startReplayer } from '../../services/replayer/main.ts';
import type { ImsProducer } from '../../services/shared/kafka.ts';
import { TOPIC } from '../../services/shared/topics.ts';
import { bootEvent, logRecord } from '../services/replayer/fixtures.ts';
import {
  BROKERS,
  cleanHosts,
  connectProducer,
  connectTestRedis,
  eventually,
  produce,
  quietLogger,
  uniqueHost,
} from '../services/replayer/pipeline.ts';

const BOOT = 'boot-r:1';
const PER_HOST = 3_000;
const HOSTS = [uniqueHost('rp-outage-a'), uniqueHost('rp-outage-b')];

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));

  return port;
}

function startRedisServer(port: number, dir: string): ChildProcess {
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', ''];
  args.push('--appendonly', 'yes', '--appendfsync', 'always');

  return spawn('redis-server', args, { stdio: 'ignore' });
}

async function stopped(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  await new Promise((resolve) => child.once('exit', resolve));
}

const servers: ChildProcess[] = [];
let dir = '';
let replayer: ReplayerHandle | undefined;
let producer: ImsProducer | undefined;
let probe: Redis | undefined;

after(async () => {
  await replayer?.stop();
  await producer?.disconnect();
  probe?.disconnect();
  for (const s of servers) {
    s.kill('SIGKILL');
    await stopped(s);
  }
  if (dir !== '') await rm(dir, { recursive: true, force: true });
  // Replayers of other groups may have replayed these hosts into the shared Redis.
  const shared = connectTestRedis();
  await cleanHosts(shared, HOSTS);
  await shared.quit();
});

it('survives Redis going away mid-stream, applying every record exactly once', async (t) => {
  dir = await mkdtemp(join(tmpdir(), 'imastream-redis-'));
  const port = await freePort();
  const url = `redis://127.0.0.1:${port}`;
  servers.push(startRedisServer(port, dir));
  probe = new Redis(url, { protocol: 2, maxRetriesPerRequest: null, retryStrategy: () => 100 });
  await eventually('redis-server up', async () => ((await probe!.ping()) === 'PONG' ? true : undefined));

  replayer = await startReplayer({ brokers: BROKERS, redisUrl: url, logger: quietLogger('replayer') });
  await replayer.joined;
  producer = await connectProducer();
  const logs = HOSTS.map((h) => Array.from({ length: PER_HOST }, (_, i) => logRecord(h, BOOT, i)));
  const progress = async () => {
    const raws = await probe!.mget(...HOSTS.map((h) => hostKeys.replay(h)));
    return raws.reduce((n, r) => n + (r === null ? 0 : (JSON.parse(r) as { nextSeq: number }).nextSeq), 0);
  };
  for (const [i, host] of HOSTS.entries()) {
    await produce(producer, TOPIC.measurements, 'BootEvent', [bootEvent(host, BOOT)]);
    await produce(producer, TOPIC.measurements, 'LogRecord', logs[i]!.slice(0, 1_000));
  }
  await eventually('some progress', async () => ((await progress()) > 0 ? true : undefined), 60_000);

  servers[0]!.kill('SIGKILL');
  await stopped(servers[0]!);
  for (const [i] of HOSTS.entries())
    await produce(producer, TOPIC.measurements, 'LogRecord', logs[i]!.slice(1_000));
  await new Promise((r) => setTimeout(r, 3_000));
  servers.push(startRedisServer(port, dir));
  t.diagnostic('redis-server killed for 3 s while records kept coming, then restarted from its AOF');

  await eventually(
    'all records applied',
    async () => ((await progress()) === 2 * PER_HOST ? true : undefined),
    90_000,
  );
  for (const [i, host] of HOSTS.entries()) {
    const doc = JSON.parse((await probe.get(hostKeys.replay(host)))!) as {
      replay: { count: number };
      status: string;
    };
    const offline = new PcrReplay();
    for (const r of logs[i]!) offline.extend(r);
    assert.equal(doc.status, 'ok');
    assert.equal(doc.replay.count, PER_HOST, `${host}: applied exactly once`);
    assert.deepEqual(doc.replay, offline.state(), `${host}: PCR state`);
  }
});
