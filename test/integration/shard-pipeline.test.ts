/**
 * Sealed shards end to end on the real stack: a real agent (swtpm, tpm2-tools, Kafka) seals a
 * shard at each quote that covers new records; the chain verifies offline with
 * `imastream verify-shard`; the shard archiver verifies and stores each one. A record changed inside
 * a sealed shard (resealed with a valid file digest, as an attacker would) is caught by
 * verify-shard and by the archiver (alert, dead letter, nothing stored).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Kafka, logLevel } from 'kafkajs';
import { parseBinaryLog } from '../../lib/ima/binary.ts';
import { templateDigestOf } from '../../lib/ima/digest.ts';
import { encodeBinaryRecord } from '../../lib/ima/encode.ts';
import { decodeShard } from '../../lib/shard/decode.ts';
import { encodeShard, storedShardDigest } from '../../lib/shard/format.ts';
import { listShardFiles, shardDir } from '../../services/agent/shard-sealer.ts';
import { CLI, SimHost } from '../../services/demo/host.ts';
import { corpusLog } from '../../services/demo/logs.ts';
import { startGroupsAtEnd } from '../../services/demo/services.ts';
import { Tap } from '../../services/demo/tap.ts';
import { type EnrollerHandle, startEnroller } from '../../services/enroller/main.ts';
import { type ShardArchiverHandle, startShardArchiver } from '../../services/shard-archiver/main.ts';
import { encode, MAX_MESSAGE_BYTES } from '../../services/shared/codec.ts';
import type { Alert, DeadLetter, Enrollment, SealedShard } from '../../services/shared/records.ts';
import { SHARDS_MAX_MESSAGE_BYTES, TOPIC } from '../../services/shared/topics.ts';
import { quietLogger, watchTopic } from '../services/replayer/pipeline.ts';
import { createTopics, memoryLogger, testKafka, unique, waitFor } from './kafka-helpers.ts';

const BROKERS = (process.env.IMASTREAM_KAFKA_BROKERS ?? '127.0.0.1:19092').split(',');
const run = randomUUID().slice(0, 8);
const base = mkdtempSync(join(tmpdir(), 'ims-shard-it-'));
const source = corpusLog('rust-keylime/ascii_runtime_measurements', 'sha1');
const hostId = `shard-it-${run}`;
/** Records kept back for the restart test. */
const TAIL = 40;
const MAIN = source.records.length - TAIL;
const topics = {
  shards: unique('shards'),
  tampered: unique('shards-tampered'),
  alerts: unique('alerts'),
  deadLetter: unique('dead-letter'),
};
const { logger } = memoryLogger();
const kafkaAdmin = testKafka(logger);
const archivers: ShardArchiverHandle[] = [];
let host: SimHost;
let tap: Tap;
let deadLetters: Awaited<ReturnType<typeof watchTopic>>;
let enroller: EnrollerHandle;

before(async () => {
  await createTopics(kafkaAdmin, Object.values(topics));
  tap = new Tap(BROKERS, [hostId, `${hostId}-unknown`]);
  await tap.start(['ima.enrollments', topics.alerts]);
  deadLetters = await watchTopic(topics.deadLetter, [hostId]);
  // The agent enrols through the enroller on first start (swtpm without EK certificate: tofu);
  // the archiver trusts the AK of the enroller's active enrolment only.
  const enrollerGroup = `shard-it-enroller-${run}`;
  await startGroupsAtEnd(BROKERS, [enrollerGroup], [TOPIC.enrolRequests]);
  enroller = await startEnroller({
    brokers: BROKERS,
    logger: quietLogger('enroller'),
    ekPolicy: { trustStore: null, withoutCertificate: 'tofu', allowList: new Set() },
    groupId: enrollerGroup,
  });
  await enroller.joined;
  host = await SimHost.start(
    { hostId, source, brokers: BROKERS.join(','), quoteIntervalS: 3600, shardsTopic: topics.shards },
    base,
  );
});

after(async () => {
  await Promise.allSettled(archivers.map((a) => a.stop()));
  await host?.stop();
  await tap?.stop();
  await deadLetters?.stop();
  await enroller?.stop();
  rmSync(base, { recursive: true, force: true });
});

async function send(topic: string, messages: { key: string; value: Buffer }[]): Promise<void> {
  const kafka = new Kafka({ clientId: 'shard-it', brokers: BROKERS, logLevel: logLevel.NOTHING });
  const producer = kafka.producer();
  await producer.connect();
  await producer.send({ topic, messages });
  await producer.disconnect();
}

async function withAdmin<T>(fn: (admin: ReturnType<Kafka['admin']>) => Promise<T>): Promise<T> {
  const admin = new Kafka({ clientId: 'shard-it', brokers: BROKERS, logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    return await fn(admin);
  } finally {
    await admin.disconnect();
  }
}

/** Sends a challenge and waits for the agent's quote to be answered (logged as sent). */
async function challenge(): Promise<void> {
  const requestId = `req-${randomUUID()}`;
  const value = encode('Challenge', { hostId, requestId, nonce: randomBytes(20), at: Date.now() });
  await send('ima.challenges', [{ key: hostId, value }]);
  await waitFor(
    `quote for ${requestId}`,
    () => host.agentLines().some((l) => l.msg === 'quote sent' && String(l.quoteId).startsWith(requestId)),
    60_000,
  );
}

function sealedLines(): Record<string, unknown>[] {
  return host.agentLines().filter((l) => l.msg === 'shard sealed');
}

function agentShardFiles(): string[] {
  const bootId = String(host.agentLines().find((l) => l.msg === 'agent ready')?.bootId);
  const dir = shardDir(join(host.dir, 'agent-state'), bootId);
  return listShardFiles(dir).map((f) => join(dir, f.name));
}

function verifyShard(args: string[]): { status: number | null; json: { ok: boolean; shards: ShardJson[] } } {
  const out = spawnSync(process.execPath, [CLI, 'verify-shard', '--json', ...args], { encoding: 'utf8' });
  return { status: out.status, json: JSON.parse(out.stdout) };
}

interface ShardJson {
  shardId?: string;
  ok: boolean;
  failures: { code: string }[];
}

function record(file: Uint8Array, hostIdOverride = hostId): SealedShard {
  const s = decodeShard(file);
  return {
    hostId: hostIdOverride,
    bootId: s.bootId,
    startSeq: s.startSeq,
    endSeq: s.endSeq,
    quoteId: `test-${randomUUID()}`,
    digest: Buffer.from(storedShardDigest(file)),
    size: file.byteLength,
    shard: Buffer.from(file),
    at: Date.now(),
  };
}

function enrolledAk(): Buffer {
  const e = tap.values<Enrollment>('Enrollment', hostId).at(-1);
  assert.ok(e, 'the enroller published the enrolment');
  assert.equal(e.status, 'active');
  return e.akPublic;
}

test('the agent seals a shard per quote that covers new records; the chain verifies offline', async () => {
  await host.writer.writeNext(120);
  await host.startAgent();
  await challenge();
  await host.writer.writeNext(150);
  await challenge();
  await challenge(); // nothing new: no shard
  await host.writer.writeNext(MAIN - 270);
  await challenge();
  await waitFor('three shards sealed', () => sealedLines().length >= 3, 30_000);
  assert.equal(sealedLines().length, 3, 'a quote that covers no new record seals nothing');
  assert.deepEqual(
    sealedLines().map((l) => [l.startSeq, l.endSeq]),
    [
      [0, 120],
      [120, 270],
      [270, MAIN],
    ],
  );

  const files = agentShardFiles();
  assert.equal(files.length, 3);
  const akFile = join(base, 'ak.pub');
  writeFileSync(akFile, enrolledAk());
  const good = verifyShard([...files, '--ak', akFile]);
  assert.equal(good.status, 0, JSON.stringify(good.json.shards.map((s) => s.failures)));
  assert.equal(good.json.ok, true);
  // The records inside are the log's own bytes.
  const records = files.flatMap((f) => decodeShard(new Uint8Array(readFileSync(f))).records);
  assert.equal(records.length, MAIN);
  assert.deepEqual(
    parseBinaryLog(Buffer.concat(records)).records.map((r) => Buffer.from(r.templateData).toString('hex')),
    source.records.slice(0, MAIN).map((r) => Buffer.from(r.templateData).toString('hex')),
  );
});

test('the archiver verifies and stores every shard, once, against the enrolled AK', async () => {
  const out = join(base, 'archive');
  const archiver = await startShardArchiver({
    brokers: BROKERS,
    logger,
    outDir: out,
    groupId: unique('archiver'),
    shardsTopic: topics.shards,
    alertsTopic: topics.alerts,
    deadLetterTopic: topics.deadLetter,
  });
  archivers.push(archiver);
  await archiver.joined;
  await waitFor('three shards archived', () => archiver.stats.stored >= 3, 60_000);

  const agentFiles = agentShardFiles();
  const bootId = decodeShard(new Uint8Array(readFileSync(agentFiles[0]!))).bootId;
  const stored = archiver.store.list(hostId, bootId);
  assert.deepEqual(
    stored.map((s) => readFileSync(s.path).toString('hex')),
    agentFiles.map((f) => readFileSync(f).toString('hex')),
    'the archive holds exactly the sealed files',
  );
  assert.equal(verifyShard(stored.map((s) => s.path)).status, 0);

  // Redelivery of an archived shard is a no-op.
  const first = new Uint8Array(readFileSync(agentFiles[0]!));
  await send(topics.shards, [{ key: hostId, value: encode('SealedShard', record(first)) }]);
  await waitFor('the duplicate seen', () => archiver.stats.duplicates >= 1, 60_000);
  assert.equal(archiver.stats.stored, 3);
  assert.equal(archiver.stats.rejected, 0);
  assert.equal(tap.values<Alert>('Alert', hostId, topics.alerts).length, 0);
});

test('a record changed inside a sealed shard is caught by verify-shard and by the archiver', async () => {
  const files = agentShardFiles().map((f) => new Uint8Array(readFileSync(f)));
  const middle = decodeShard(files[1]!);
  const at = 17;
  const { records } = parseBinaryLog(middle.records[at]!, { digestAlg: middle.recordFormat.digestAlg });
  const original = records[0]!;
  const templateData = original.templateData.slice();
  templateData[templateData.byteLength - 2] = (templateData[templateData.byteLength - 2] as number) ^ 0x20;
  // The attacker keeps the record self-consistent (template digest) and reseals the file.
  const templateDigest = templateDigestOf({ ...original, templateData }, 'sha1');
  const changed = [...middle.records];
  changed[at] = encodeBinaryRecord({ ...original, templateData, templateDigest });
  const forged = encodeShard({ ...middle, records: changed });
  assert.doesNotThrow(() => decodeShard(forged), 'the forged file has a valid digest');

  const paths = [0, 1].map((i) => join(base, `chain-${i}.imsshard`));
  writeFileSync(paths[0]!, files[0]!);
  writeFileSync(paths[1]!, forged);
  const offline = verifyShard(paths);
  assert.equal(offline.status, 1);
  assert.deepEqual(
    offline.json.shards.map((s) => s.failures.map((f) => f.code)),
    [[], ['SHARD_REPLAY_MISMATCH']],
  );

  // The pipeline: the forged shard after the genuine first one, on a topic of its own.
  const out = join(base, 'archive-tampered');
  const archiver = await startShardArchiver({
    brokers: BROKERS,
    logger,
    outDir: out,
    groupId: unique('archiver'),
    shardsTopic: topics.tampered,
    alertsTopic: topics.alerts,
    deadLetterTopic: topics.deadLetter,
    enrolmentGraceMs: 2_000,
  });
  archivers.push(archiver);
  await archiver.joined;
  const forgedRecord = record(forged);
  await send(topics.tampered, [
    { key: hostId, value: encode('SealedShard', record(files[0]!)) },
    { key: hostId, value: encode('SealedShard', forgedRecord) },
  ]);
  const alertFor = () =>
    tap
      .values<Alert>('Alert', hostId, topics.alerts)
      .find((a) => a.kind === 'SHARD_INVALID' && a.seq === forgedRecord.startSeq);
  await waitFor('the SHARD_INVALID alert', () => alertFor() !== undefined, 60_000);
  const details = JSON.parse(alertFor()!.details) as { codes: string[]; shardId: string };
  assert.deepEqual(details.codes, ['SHARD_REPLAY_MISMATCH']);
  assert.equal(alertFor()!.severity, 'CRITICAL');
  const dead = () =>
    deadLetters.seen
      .filter((t) => t.schema === 'DeadLetter')
      .map((t) => t.value as unknown as DeadLetter)
      .find((d) => d.topic === topics.tampered && d.reason === 'IMS_SHARD_REJECTED');
  await waitFor('the dead letter', () => dead() !== undefined, 60_000);
  assert.equal(archiver.stats.stored, 1);
  assert.equal(archiver.stats.rejected, 1);
  const bootDir = archiver.store.bootDir(hostId, middle.bootId);
  assert.deepEqual(readdirSync(bootDir).sort(), [`0-${middle.startSeq}.imsshard`]);
  assert.equal(
    existsSync(archiver.store.pathOf(hostId, middle.bootId, middle.startSeq, middle.endSeq)),
    false,
  );

  // A shard from a host with no enrolment: UNKNOWN_AK once the grace period is over.
  const stranger = `${hostId}-unknown`;
  await send(topics.tampered, [{ key: stranger, value: encode('SealedShard', record(files[0]!, stranger)) }]);
  await waitFor(
    'the UNKNOWN_AK alert',
    () => tap.values<Alert>('Alert', stranger, topics.alerts).some((a) => a.kind === 'UNKNOWN_AK'),
    60_000,
  );
  assert.equal(archiver.stats.stored, 1);
});

test('a killed agent resumes its chain: the next shard links to the last one, the archive stays whole', async () => {
  const archiver = archivers[0]!;
  await host.stopAgent('SIGKILL');
  await host.writer.writeNext(TAIL);
  await host.startAgent();
  await challenge();
  await waitFor('the shard after the restart', () => sealedLines().length >= 1, 30_000);
  assert.deepEqual(
    sealedLines().map((l) => [l.startSeq, l.endSeq]),
    [[MAIN, source.records.length]],
  );
  const files = agentShardFiles();
  assert.equal(files.length, 4);
  const akFile = join(base, 'ak.pub');
  assert.equal(verifyShard([...files, '--ak', akFile]).status, 0, 'the whole chain, across the restart');

  // The restarted agent resent its newest file (it could not know it had been acknowledged).
  await waitFor('the fourth shard archived', () => archiver.stats.stored >= 4, 60_000);
  await waitFor('the resent shard seen as a duplicate', () => archiver.stats.duplicates >= 2, 60_000);
  assert.equal(archiver.stats.rejected, 0);
  const bootId = decodeShard(new Uint8Array(readFileSync(files[0]!))).bootId;
  assert.deepEqual(
    archiver.store.list(hostId, bootId).map((f) => [f.startSeq, f.endSeq]),
    [
      [0, 120],
      [120, 270],
      [270, MAIN],
      [MAIN, source.records.length],
    ],
  );
});

test('the archiver refuses a record that lies about its file, a second file for an archived range, and reports an unsent shard', async () => {
  const archiver = archivers[1]!; // holds shard 0 of the genuine chain (test 3)
  const files = agentShardFiles().map((f) => new Uint8Array(readFileSync(f)));
  const first = decodeShard(files[0]!);
  const before = archiver.stats.rejected;
  const alerts = () => tap.values<Alert>('Alert', hostId, topics.alerts);
  const codesOf = (a: Alert) => (JSON.parse(a.details) as { codes?: string[] }).codes ?? [];

  // The record claims another range than the file holds.
  const lying = { ...record(files[1]!), endSeq: decodeShard(files[1]!).endSeq + 5 };
  // The same range as the archived shard 0, but another (resealed) file.
  const other = encodeShard({ ...first, closingQuote: { ...first.closingQuote }, scheme: 'perbank' });
  // A shard the agent could not send (too large): digest and size only.
  const unsent = { ...record(files[2]!), shard: null };
  await send(topics.tampered, [
    { key: hostId, value: encode('SealedShard', lying) },
    { key: hostId, value: encode('SealedShard', record(other)) },
    { key: hostId, value: encode('SealedShard', unsent) },
    // An id no host can have (and no safe file name): dead-lettered, nothing else.
    { key: hostId, value: encode('SealedShard', { ...record(files[1]!), hostId: '../../etc x' }) },
  ]);
  await waitFor(
    'three refusals and a gap',
    () => archiver.stats.rejected >= before + 3 && archiver.stats.gaps >= 1,
    60_000,
  );
  await waitFor(
    'the dead letter of the bad id',
    () =>
      deadLetters.seen.some(
        (t) =>
          t.schema === 'DeadLetter' &&
          (t.value as unknown as DeadLetter).reason === 'IMS_SHARD_REJECTED' &&
          /printable/.test((t.value as unknown as DeadLetter).message),
      ),
    60_000,
  );
  await waitFor(
    'their alerts',
    () =>
      alerts().some((a) => codesOf(a).includes('SHARD_RECORD_MISMATCH')) &&
      alerts().some((a) => codesOf(a).includes('SHARD_CONFLICT')) &&
      alerts().some((a) => a.kind === 'SHARD_GAP' && a.seq === unsent.startSeq),
    60_000,
  );
  assert.equal(alerts().find((a) => a.kind === 'SHARD_GAP')?.severity, 'WARNING');
  assert.deepEqual(
    archiver.store.list(hostId, first.bootId).map((f) => readFileSync(f.path).toString('hex')),
    [Buffer.from(files[0]!).toString('hex')],
    'the archived shard is untouched',
  );
});

test('a shard message of 7 MiB travels through ima.shards-sized topics to the archiver', async () => {
  const big = unique('shards-big');
  await withAdmin(async (admin) => {
    await admin.createTopics({
      topics: [
        {
          topic: big,
          numPartitions: 1,
          replicationFactor: 1,
          configEntries: [{ name: 'max.message.bytes', value: String(SHARDS_MAX_MESSAGE_BYTES) }],
        },
      ],
      waitForLeaders: true,
    });
  });
  const archiver = await startShardArchiver({
    brokers: BROKERS,
    logger,
    outDir: join(base, 'archive-big'),
    groupId: unique('archiver'),
    shardsTopic: big,
    alertsTopic: topics.alerts,
    deadLetterTopic: topics.deadLetter,
    enrolmentGraceMs: 0,
  });
  archivers.push(archiver);
  await archiver.joined;
  // Not a real shard (the host is not enrolled, so it is refused before any parsing): the point
  // is the size, which the codec, the topic and the consumer must all let through.
  const stranger = `${hostId}-big`;
  const shard = Buffer.alloc(7 * 1024 * 1024, 1);
  const value = encode('SealedShard', {
    hostId: stranger,
    bootId: 'boot:1',
    startSeq: 0,
    endSeq: 1,
    quoteId: 'q-big',
    digest: Buffer.alloc(32),
    size: shard.length,
    shard,
    at: Date.now(),
  });
  assert.ok(value.length > MAX_MESSAGE_BYTES * 7);
  await send(big, [{ key: stranger, value }]);
  await waitFor('the big shard judged', () => archiver.stats.rejected >= 1, 60_000);
  assert.deepEqual(archiver.stats, { stored: 0, duplicates: 0, rejected: 1, gaps: 0, skipped: 0 });
});
