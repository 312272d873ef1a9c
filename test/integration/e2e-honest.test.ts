/**
 * End to end, the honest path: hosts with real corpus logs (and a generated one with violations),
 * RSA, RSA-PSS and ECC AKs, through real agents, swtpm, Kafka, Redis, two replayers and a
 * quote-checker, end attested over their whole log with no alert. An agent killed mid-stream and
 * restarted loses nothing: the replay in Redis counts every record exactly once.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { Fleet, type FleetHostSpec } from '../../services/demo/fleet.ts';
import { REPO_DIR } from '../../services/demo/host.ts';
import { corpusLog, syntheticLog } from '../../services/demo/logs.ts';
import { Observer } from '../../services/demo/observer.ts';
import { Pipeline } from '../../services/demo/pipeline.ts';
import { Tap } from '../../services/demo/tap.ts';
import type { BootEvent } from '../../services/shared/records.ts';

const BROKERS = (process.env.IMASTREAM_KAFKA_BROKERS ?? '127.0.0.1:19092').split(',');
const REDIS_URL = process.env.IMASTREAM_REDIS_URL ?? 'redis://127.0.0.1:6379';
const run = randomUUID().slice(0, 8);
const dir = mkdtempSync(join(tmpdir(), 'ims-e2e-honest-'));
const hostOf = (name: string) => `e2e-${run}-${name}`;
const specs: FleetHostSpec[] = [
  { hostId: hostOf('rsa'), source: corpusLog('ibmtss/imatest.log', 'sha1'), akAlg: 'rsa' },
  { hostId: hostOf('pss'), source: corpusLog('global-trust-authority/ima.bin', 'sha256'), akAlg: 'rsapss' },
  { hostId: hostOf('ecc'), source: corpusLog('tpm2-tss/sml-ima-sha1.bin', 'sha1'), akAlg: 'ecc' },
  { hostId: hostOf('synthetic'), source: syntheticLog(400, 7, [5, 90, 301]) },
];
const RESTARTED = hostOf('restart');
const restartSource = corpusLog('kunpengsecl/ascii_runtime_measurements', 'sha1', 1200);
let pipeline: Pipeline;
let fleet: Fleet;
let observer: Observer;
let tap: Tap;
let redis: Redis;

before(async () => {
  const all = [...specs, { hostId: RESTARTED, source: restartSource }];
  pipeline = await Pipeline.start(run, join(REPO_DIR, '.stack/e2e', run), BROKERS);
  observer = new Observer(
    BROKERS,
    all.map((s) => s.hostId),
  );
  tap = new Tap(
    BROKERS,
    all.map((s) => s.hostId),
  );
  redis = new Redis(REDIS_URL);
  await Promise.all([observer.start(), tap.start(['ima.measurements'])]);
  fleet = await Fleet.create(all, {
    brokers: BROKERS,
    baseDir: join(dir, 'hosts'),
    quoteIntervalS: 1,
    writer: { batch: 100, pauseMs: 30 },
  });
  await fleet.startAgents();
});

after(async () => {
  await fleet?.stop();
  await pipeline?.stop();
  await observer?.stop();
  await tap?.stop();
  redis?.disconnect();
  rmSync(dir, { recursive: true, force: true });
});

async function replayed(hostId: string): Promise<{ bootId: string; nextSeq: number; status: string }> {
  return JSON.parse((await redis.get(`h:{${hostId}}:replay`)) ?? '{}');
}

test('an agent killed mid-stream and restarted: every record replayed once, the whole log attested', async () => {
  const host = fleet.host(RESTARTED);
  const playing = host.play({ batch: 100, pauseMs: 30 });
  await tap.until(() => host.writer.written >= 400, 30_000);
  await host.stopAgent('SIGKILL');
  await playing;
  await host.startAgent();
  const ok = await tap.until(() => observer.attested(RESTARTED, restartSource.records.length), 120_000);
  assert.ok(
    ok,
    `attested to ${observer.closed(RESTARTED).at(-1)?.endSeq ?? 0} of ${restartSource.records.length}`,
  );
  assert.deepEqual(observer.alerts(RESTARTED), []);
  const replay = await replayed(RESTARTED);
  assert.equal(replay.nextSeq, restartSource.records.length);
  assert.equal(replay.status, 'ok');
  assert.equal(tap.values<BootEvent>('BootEvent', RESTARTED).length, 1, 'the restart is the same boot');
});

for (const spec of specs) {
  test(`${spec.hostId.split('-').at(-1)} host (${spec.source.name}) is attested over its whole log`, async () => {
    if (spec === specs[0])
      await Promise.all(specs.map((s) => fleet.host(s.hostId).play({ batch: 100, pauseMs: 30 })));
    const ok = await tap.until(() => observer.attested(spec.hostId, spec.source.records.length), 120_000);
    assert.ok(
      ok,
      `attested to ${observer.closed(spec.hostId).at(-1)?.endSeq ?? 0} of ${spec.source.records.length}`,
    );
    assert.deepEqual(observer.alerts(spec.hostId), []);
    const replay = await replayed(spec.hostId);
    assert.equal(replay.nextSeq, spec.source.records.length);
    assert.equal(observer.closed(spec.hostId).at(-1)?.bootId, replay.bootId);
  });
}
