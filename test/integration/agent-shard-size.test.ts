/**
 * --shard-max-bytes on the real stack (swtpm, tpm2-tools, broker, enroller): a host that logs
 * steadily between its periodic quotes (here: none for an hour) still seals shards of bounded
 * size, each closed by its own quote, and the chain verifies offline with the enrolled AK.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { decodeShard } from '../../lib/shard/decode.ts';
import { listShardFiles, shardDir } from '../../services/agent/shard-sealer.ts';
import { CLI, SimHost } from '../../services/demo/host.ts';
import { syntheticLog } from '../../services/demo/logs.ts';
import { startGroupsAtEnd } from '../../services/demo/services.ts';
import { Tap } from '../../services/demo/tap.ts';
import { type EnrollerHandle, startEnroller } from '../../services/enroller/main.ts';
import type { Enrollment } from '../../services/shared/records.ts';
import { TOPIC } from '../../services/shared/topics.ts';
import { quietLogger } from '../services/replayer/pipeline.ts';
import { createTopics, memoryLogger, testKafka, unique, waitFor } from './kafka-helpers.ts';

const BROKERS = (process.env.IMASTREAM_KAFKA_BROKERS ?? '127.0.0.1:19092').split(',');
const run = randomUUID().slice(0, 8);
const base = mkdtempSync(join(tmpdir(), 'ims-shard-size-it-'));
const hostId = `shard-size-it-${run}`;
const source = syntheticLog(600, 17);
const MAX_BYTES = 16 * 1024;
const shardsTopic = unique('shards');
let host: SimHost;
let tap: Tap;
let enroller: EnrollerHandle;

before(async () => {
  await createTopics(testKafka(memoryLogger().logger), [shardsTopic]);
  tap = new Tap(BROKERS, [hostId]);
  await tap.start(['ima.enrollments']);
  const group = `shard-size-it-enroller-${run}`;
  await startGroupsAtEnd(BROKERS, [group], [TOPIC.enrolRequests]);
  enroller = await startEnroller({
    brokers: BROKERS,
    logger: quietLogger('enroller'),
    ekPolicy: { trustStore: null, withoutCertificate: 'tofu', allowList: new Set() },
    groupId: group,
  });
  await enroller.joined;
  host = await SimHost.start(
    {
      hostId,
      source,
      brokers: BROKERS.join(','),
      quoteIntervalS: 3600,
      shardsTopic,
      agentArgs: ['--shard-max-bytes', String(MAX_BYTES)],
    },
    base,
  );
});

after(async () => {
  await host?.stop();
  await tap?.stop();
  await enroller?.stop();
  rmSync(base, { recursive: true, force: true });
});

test('a steadily logging host seals shards of at most about --shard-max-bytes, each closed by a quote', async () => {
  await host.startAgent();
  // 20 records every 50 ms: the agent (100 ms polls) stays caught up, as on a busy host.
  await host.play({ batch: 20, pauseMs: 50 });
  // Raw bytes of a binary record: PCR, SHA-1 digest, name length, name, data length, data.
  const bytesOf = (from: number) =>
    source.records
      .slice(from)
      .reduce((n, r) => n + 32 + r.templateName.length + r.templateData.byteLength, 0);
  const sealed = () => host.agentLines().filter((l) => l.msg === 'shard sealed');
  // Once caught up, what is left unsealed is under the bound (no periodic quote comes for an hour).
  await waitFor(
    'every full shard sealed',
    () => bytesOf(Number(sealed().at(-1)?.endSeq ?? 0)) < MAX_BYTES,
    60_000,
  );
  assert.ok(sealed().length >= 3, `${sealed().length} shards of ${bytesOf(0)} bytes`);

  // Each shard: the bound plus at most what one poll read past it, the framing and the quote.
  const sizes = sealed().map((l) => Number(l.bytes));
  assert.ok(
    sizes.every((b) => b <= 2 * MAX_BYTES),
    `sizes ${sizes.join(', ')}`,
  );
  assert.ok(
    sealed().every((l) => String(l.quoteId).startsWith('size-')),
    'closed by the size quotes (no periodic quote in an hour)',
  );

  const bootId = String(host.agentLines().find((l) => l.msg === 'agent ready')?.bootId);
  const dir = shardDir(join(host.dir, 'agent-state'), bootId);
  const files = listShardFiles(dir).map((f) => join(dir, f.name));
  const shards = files.map((f) => decodeShard(new Uint8Array(readFileSync(f))));
  for (let i = 1; i < shards.length; i++) assert.equal(shards[i]!.startSeq, shards[i - 1]!.endSeq);
  const akFile = join(base, 'ak.pub');
  const enrolment = tap.values<Enrollment>('Enrollment', hostId).at(-1);
  assert.ok(enrolment !== undefined, 'the enroller published the enrolment');
  writeFileSync(akFile, enrolment.akPublic);
  const out = spawnSync(process.execPath, [CLI, 'verify-shard', '--json', ...files, '--ak', akFile], {
    encoding: 'utf8',
  });
  assert.equal(out.status, 0, out.stdout);
});
