/**
 * The agent's cut protocol on the Linux 7.2 staging interface, on the real stack: swtpm, the
 * kernel emulator process (which extends the swtpm like the kernel), real agent processes and
 * the real broker. A simulated host cuts its log many times in both flavours, with a kill -9
 * injected at each step of a cut (IMASTREAM_AGENT_CRASH_AT, the test-only hook in
 * services/agent/crash.ts) and a restart after each: every record must reach the broker exactly
 * once and in order, every quote must be reproduced by the replay of the delivered records, and
 * the kernel's lists must end as expected. The crash-injection matrix is printed.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Kafka, logLevel } from 'kafkajs';
import { encodeBinaryRecord } from '../../lib/ima/encode.ts';
import type { ImaRecord } from '../../lib/ima/record.ts';
import { generateLog } from '../../lib/ima/synthetic.ts';
import { parseSelectionSpec } from '../../lib/tpm/pcr-selection.ts';
import { parsePublic } from '../../lib/tpm/public.ts';
import { verifyQuote } from '../../lib/tpm/quote.ts';
import { CRASH_STEPS, type CrashStep } from '../../services/agent/crash.ts';
import { BankTracker, SeqMatcher } from '../../services/agent/seq-match.ts';
import { Tap } from '../../services/demo/tap.ts';
import { tpmExtender } from '../../services/kernel-emulator/tpm-extend.ts';
import { encode } from '../../services/shared/codec.ts';
import type { BootEvent, LogRecord, Quote, SnapshotEvent } from '../../services/shared/records.ts';
import { StagingHost } from './staging-host.ts';

const BROKERS = (process.env.IMASTREAM_KAFKA_BROKERS ?? '127.0.0.1:19092').split(',');
const run = randomUUID().slice(0, 8);
const TOPIC = `test.agent-cut.${run}`;
const base = mkdtempSync(join(tmpdir(), 'ims-cut-it-'));
const hosts: StagingHost[] = [];
const CUT_RECORDS = 30;
const BATCH = 10;
let tap: Tap;

before(async () => {
  const kafka = new Kafka({ clientId: 'agent-cut-it', brokers: BROKERS, logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  // Three partitions: the agent must find its own one for the broker-tail check.
  await admin.createTopics({
    topics: [{ topic: TOPIC, numPartitions: 3, replicationFactor: 1 }],
    waitForLeaders: true,
  });
  await admin.disconnect();
  tap = new Tap(
    BROKERS,
    ['stage', 'delete', 'kexec', 'virtual', 'securityfs', 'bytes'].map((f) => `cut-it-${run}-${f}`),
  );
  await tap.start([TOPIC, 'ima.quotes']);
});

after(async () => {
  await Promise.allSettled(hosts.map((h) => h.stop()));
  await tap?.stop();
  const kafka = new Kafka({ clientId: 'agent-cut-it', brokers: BROKERS, logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  await admin.deleteTopics({ topics: [TOPIC] }).catch(() => undefined);
  await admin.disconnect();
  if (process.env.IMASTREAM_TEST_KEEP === undefined) rmSync(base, { recursive: true, force: true });
});

function records(hostId: string): LogRecord[] {
  return tap.values<LogRecord>('LogRecord', hostId, TOPIC);
}

async function untilAsync(cond: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await cond()) return true;
    await sleep(200);
  }
  return cond();
}

interface Row {
  flavour: string;
  step: string;
  outcome: string;
}

/** Feeds batches until the agent dies of the injected crash (bounded: a cut happens every 30). */
async function feedUntilCrash(host: StagingHost, source: ImaRecord[], fed: { n: number }): Promise<boolean> {
  for (let i = 0; i < 40 && host.agentRunning; i++) {
    await host.measure(source.slice(fed.n, fed.n + BATCH));
    fed.n += BATCH;
    await tap.until(
      () => !host.agentRunning || new Set(records(host.spec.hostId).map((r) => r.seq)).size >= fed.n,
      10_000,
    );
  }
  return !host.agentRunning;
}

async function cutMatrix(flavour: 'stage' | 'delete'): Promise<Row[]> {
  const hostId = `cut-it-${run}-${flavour}`;
  const host = await StagingHost.start(
    {
      hostId,
      brokers: BROKERS.join(','),
      topic: TOPIC,
      cutArgs: ['--cut', flavour, '--cut-records', `${CUT_RECORDS}`],
    },
    base,
  );
  hosts.push(host);
  const source = generateLog({ records: 1200, seed: flavour === 'stage' ? 3 : 4 }).records;
  const fed = { n: 0 };
  const rows: Row[] = [];
  const steps = CRASH_STEPS.filter((s) => flavour === 'stage' || s !== 'cut-staged');
  for (const step of steps as CrashStep[]) {
    await host.startAgent({ crashAt: step });
    const crashed = await feedUntilCrash(host, source, fed);
    const exit = await (crashed ? host.agentExited() : host.stopAgent('SIGTERM'));
    assert.ok(crashed, `${flavour}/${step}: the agent reached the crash point`);
    assert.equal(exit.signal, 'SIGKILL', `${flavour}/${step}: killed by the injected SIGKILL`);
    await host.startAgent();
    await host.measure(source.slice(fed.n, fed.n + BATCH));
    fed.n += BATCH;
    const all = () => records(hostId);
    const delivered = await tap.until(() => new Set(all().map((r) => r.seq)).size >= fed.n, 60_000);
    const seqs = all().map((r) => r.seq);
    const dups = seqs.length - new Set(seqs).size;
    const inOrder = seqs.every((s, i) => s === i);
    const state = await host.control.state();
    rows.push({
      flavour,
      step,
      outcome:
        `${delivered ? 'resumed' : 'STALLED'}: ${new Set(seqs).size}/${fed.n} delivered, ${dups} duplicate(s), ` +
        `${inOrder ? 'in order' : 'OUT OF ORDER'}; kernel holds ${state.count}+${state.staged} staged, freed ${state.freed}`,
    });
    assert.ok(delivered, `${flavour}/${step}: every record delivered after the restart`);
    assert.equal(dups, 0, `${flavour}/${step}: nothing sent twice`);
    assert.ok(inOrder, `${flavour}/${step}: in order`);
    assert.equal((await host.stopAgent('SIGTERM')).code, 0);
  }

  // A last run without crashes: more cuts, then a clean stop.
  await host.startAgent();
  for (let i = 0; i < 8; i++) {
    await host.measure(source.slice(fed.n, fed.n + BATCH));
    fed.n += BATCH;
  }
  assert.ok(await tap.until(() => new Set(records(hostId).map((r) => r.seq)).size >= fed.n, 60_000));
  // Wait for the cut of what the kernel still holds past the threshold.
  assert.ok(
    await untilAsync(async () => (await host.control.state()).count < CUT_RECORDS, 60_000),
    'the kernel list is cut below the threshold',
  );
  assert.equal((await host.stopAgent('SIGTERM')).code, 0);
  await checkDelivery(host, source.slice(0, fed.n), flavour);

  return rows;
}

/** Exactly once, in order, the generated bytes; every quote reproduced by the replay; the kernel's end state. */
async function checkDelivery(
  host: StagingHost,
  fed: ImaRecord[],
  flavour: string,
  minCuts = 8,
): Promise<void> {
  const hostId = host.spec.hostId;
  const delivered = records(hostId);
  assert.deepEqual(
    delivered.map((r) => r.seq),
    fed.map((_, i) => i),
    'every record exactly once, in order',
  );
  delivered.forEach((r, i) => {
    assert.deepEqual(new Uint8Array(r.templateData), fed[i]!.templateData, `templateData of seq ${i}`);
  });

  const snapshots = tap.values<SnapshotEvent>('SnapshotEvent', hostId, TOPIC);
  assert.ok(snapshots.length >= minCuts, `${flavour}: many cuts (${snapshots.length})`);
  assert.equal(new Set(snapshots.map((s) => s.seq)).size, snapshots.length, 'one SnapshotEvent per cut');
  assert.ok(snapshots.every((s) => s.kind === 'STAGING'));

  const quotes = tap.values<Quote>('Quote', hostId, 'ima.quotes');
  const byId = new Map(quotes.map((q) => [q.quoteId, q]));
  for (const s of snapshots) {
    const q = byId.get(s.quoteId ?? '');
    assert.ok(q !== undefined, `the quote of the cut at ${s.seq} was sent`);
    assert.ok(q.seq >= s.seq, `the quote at the cut covers every freed record (${q.seq} >= ${s.seq})`);
  }
  const ak = parsePublic(await host.akPublic());
  const matcher = new SeqMatcher(
    new BankTracker(['sha1', 'sha256']),
    parseSelectionSpec('sha1:10+sha256:10'),
    'sha256',
    0,
    fed.length + 1,
  );
  for (const r of fed) matcher.add(r);
  for (const q of quotes) {
    const verdict = await verifyQuote({
      attest: new Uint8Array(q.attest),
      signature: new Uint8Array(q.signature),
      akPublic: ak,
      nonce: new Uint8Array(q.nonce),
      pcrValues: matcher.valuesAt(q.seq)!,
    });
    assert.deepEqual(verdict.failures, [], `quote ${q.quoteId} at ${q.seq} is reproduced by the replay`);
  }

  const state = await host.control.state();
  assert.equal(state.staged, 0, 'nothing left staged');
  assert.equal(state.freed + state.count, fed.length, 'the kernel freed exactly what it no longer holds');
  const lastCut = Math.max(...snapshots.map((s) => s.seq));
  assert.equal(state.freed, lastCut, 'the kernel freed up to the last cut');
}

test('kexec with a staged list: the replay continues under a new boot id, nothing is sent twice', {
  timeout: 600_000,
}, async () => {
  const hostId = `cut-it-${run}-kexec`;
  const host = await StagingHost.start(
    {
      hostId,
      brokers: BROKERS.join(','),
      topic: TOPIC,
      cutArgs: ['--cut', 'stage', '--cut-records', `${CUT_RECORDS}`],
    },
    base,
  );
  hosts.push(host);
  const source = generateLog({ records: 400, seed: 5 }).records;
  const fed = { n: 0 };
  // A cut that dies after its quote and journal, before D: the staged list is still there.
  await host.startAgent({ crashAt: 'cut-journaled' });
  assert.ok(await feedUntilCrash(host, source, fed), 'the agent died before D');
  assert.equal((await host.agentExited()).signal, 'SIGKILL');
  const before = await host.control.state();
  assert.ok(before.staged > 0, 'a staged list is carried over the kexec');
  const firstBoot = tap.values<BootEvent>('BootEvent', hostId, TOPIC);
  assert.equal(firstBoot.length, 1);

  // kexec: measurements suspended, then the new kernel with staged + current carried and its own boot_aggregate.
  await host.control.suspendForKexec();
  const newKernelAggregate = generateLog({ records: 1, seed: 77 }).records[0]!;
  await host.control.completeKexec(newKernelAggregate);
  const after = await host.control.state();
  assert.equal(after.staged, 0);
  assert.equal(after.count, before.staged + before.count + 1);
  const log = [...source.slice(0, fed.n), newKernelAggregate];

  const newHostBootId = randomUUID();
  await host.startAgent({ bootId: newHostBootId });
  const more = source.slice(fed.n, fed.n + 60);
  for (let i = 0; i < more.length; i += BATCH) await host.measure(more.slice(i, i + BATCH));
  log.push(...more);
  assert.ok(
    await tap.until(() => new Set(records(hostId).map((r) => r.seq)).size >= log.length, 60_000),
    'every record of both kernels delivered',
  );
  assert.ok(
    await untilAsync(async () => (await host.control.state()).count < CUT_RECORDS, 60_000),
    'cut again after the kexec',
  );
  assert.equal((await host.stopAgent('SIGTERM')).code, 0);

  const boots = tap.values<BootEvent>('BootEvent', hostId, TOPIC);
  assert.equal(boots.length, 2, 'one BootEvent per kernel');
  const kexec = boots[1]!;
  assert.equal(kexec.kind, 'KEXEC');
  assert.equal(
    kexec.bootId,
    `${newHostBootId}:${firstBoot[0]!.resetCount}`,
    'new host boot id, same resetCount',
  );
  // The next seq the agent had not sent: records the old kernel logged after the agent's last read
  // travel with the new kernel's list and go out under the new boot id.
  const delivered = records(hostId);
  const underOldId = delivered.filter((r) => r.bootId === firstBoot[0]!.bootId).length;
  assert.equal(kexec.firstSeq, underOldId, 'the new boot starts at the next seq');
  assert.ok(kexec.firstSeq <= fed.n);
  assert.ok(
    delivered.slice(kexec.firstSeq).every((r) => r.bootId === kexec.bootId),
    'every record from firstSeq on carries the new boot id',
  );
  assert.equal(
    delivered[fed.n]?.templateName,
    newKernelAggregate.templateName,
    "the new kernel's boot_aggregate follows the carried records",
  );
  await checkDelivery(host, log, 'kexec', 2);
});

test('a plain file (no cut support): virtual shards every N records and on a CutRequest', {
  timeout: 600_000,
}, async () => {
  const hostId = `cut-it-${run}-virtual`;
  const logFile = join(base, `${hostId}.log`);
  writeFileSync(logFile, new Uint8Array(0));
  const host = await StagingHost.start(
    { hostId, brokers: BROKERS.join(','), topic: TOPIC, cutArgs: ['--shard-records', '25'], logFile },
    base,
  );
  hosts.push(host);
  const extend = tpmExtender(host.tools);
  const source = generateLog({ records: 124, seed: 6 }).records;
  // The kernel's part: a record is in the log before it is in the PCR.
  const write = async (batch: ImaRecord[]) => {
    appendFileSync(logFile, Buffer.concat(batch.map((r) => encodeBinaryRecord(r, 'le'))));
    await extend(batch);
  };
  await host.startAgent();
  // 30 records at a time, each time until a shard closes: 25 or more pending close one. (Written
  // all at once, one quote could cover them all: a quote covers whatever the TPM holds.)
  for (let k = 1; k <= 4; k++) {
    for (let i = (k - 1) * 30; i < k * 30; i += BATCH) await write(source.slice(i, i + BATCH));
    assert.ok(
      await tap.until(() => tap.values<SnapshotEvent>('SnapshotEvent', hostId, TOPIC).length >= k, 60_000),
      `a virtual shard once 25 records are pending (${k})`,
    );
  }
  assert.ok(await tap.until(() => records(hostId).length >= 120, 60_000));
  // A CutRequest closes a shard at once, even below the record threshold (the 4 new records may
  // also complete 25 pending: either way a shard must end at the end of the log).
  await write(source.slice(120, 124));
  assert.ok(await tap.until(() => records(hostId).length >= 124, 60_000));
  const kafka = new Kafka({ clientId: 'agent-cut-it', brokers: BROKERS, logLevel: logLevel.NOTHING });
  const producer = kafka.producer();
  await producer.connect();
  const request = { hostId, requestId: `cut-${randomUUID()}`, at: Date.now() };
  await producer.send({
    topic: 'ima.challenges',
    messages: [{ key: hostId, value: encode('CutRequest', request) }],
  });
  await producer.disconnect();
  assert.ok(
    await tap.until(
      () => tap.values<SnapshotEvent>('SnapshotEvent', hostId, TOPIC).some((s) => s.seq === 124),
      60_000,
    ),
    'the CutRequest closed a shard at the end of the log',
  );
  assert.equal((await host.stopAgent('SIGTERM')).code, 0);
  const snapshots = tap.values<SnapshotEvent>('SnapshotEvent', hostId, TOPIC);
  await host.waitForLog('cut requested', 30_000);
  assert.ok(snapshots.every((s) => s.kind === 'VIRTUAL'));
  assert.deepEqual(
    records(hostId).map((r) => r.seq),
    source.map((_, i) => i),
    'every record once, in order',
  );
  const quotes = new Map(tap.values<Quote>('Quote', hostId, 'ima.quotes').map((q) => [q.quoteId, q]));
  const matcher = new SeqMatcher(
    new BankTracker(['sha1', 'sha256']),
    parseSelectionSpec('sha1:10+sha256:10'),
    'sha256',
    0,
    200,
  );
  for (const r of source) matcher.add(r);
  const ak = parsePublic(await host.akPublic());
  for (const s of snapshots) {
    const q = quotes.get(s.quoteId ?? '');
    assert.ok(q !== undefined && q.seq === s.seq, `the shard at ${s.seq} is closed by its quote`);
    const verdict = await verifyQuote({
      attest: new Uint8Array(q.attest),
      signature: new Uint8Array(q.signature),
      akPublic: ak,
      nonce: new Uint8Array(q.nonce),
      pcrValues: matcher.valuesAt(q.seq)!,
    });
    assert.deepEqual(verdict.failures, [], `the closing quote at ${s.seq} is reproduced by the replay`);
  }
});

test('securityfs files (read side): the agent follows the kernel list through the real file path', {
  timeout: 600_000,
}, async () => {
  const hostId = `cut-it-${run}-securityfs`;
  const host = await StagingHost.start(
    {
      hostId,
      brokers: BROKERS.join(','),
      topic: TOPIC,
      cutArgs: ['--shard-records', '40'],
      securityfs: true,
    },
    base,
  );
  hosts.push(host);
  const source = generateLog({ records: 100, seed: 8 }).records;
  await host.measure(source.slice(0, 20));
  await host.startAgent();
  // Two halves, each until a virtual shard closes: a quote covers whatever the TPM holds, so with
  // all 100 records written at once one shard could take them all.
  for (const [from, to, shards] of [
    [20, 60, 1],
    [60, 100, 2],
  ] as const) {
    for (let i = from; i < to; i += BATCH) await host.measure(source.slice(i, i + BATCH));
    assert.ok(
      await tap.until(
        () => tap.values<SnapshotEvent>('SnapshotEvent', hostId, TOPIC).length >= shards,
        60_000,
      ),
      `a virtual shard once 40 records are pending (${shards})`,
    );
  }
  assert.ok(await tap.until(() => records(hostId).length >= source.length, 60_000));
  assert.equal((await host.stopAgent('SIGTERM')).code, 0);
  assert.deepEqual(
    records(hostId).map((r) => r.seq),
    source.map((_, i) => i),
  );
  records(hostId).forEach((r, i) => {
    assert.deepEqual(new Uint8Array(r.templateData), source[i]!.templateData);
  });
});

test('--cut-bytes: the delete flavour cuts on the size of the current list', {
  timeout: 600_000,
}, async () => {
  const hostId = `cut-it-${run}-bytes`;
  const host = await StagingHost.start(
    { hostId, brokers: BROKERS.join(','), topic: TOPIC, cutArgs: ['--cut', 'delete', '--cut-bytes', '3000'] },
    base,
  );
  hosts.push(host);
  const source = generateLog({ records: 120, seed: 9 }).records;
  await host.startAgent();
  for (let i = 0; i < source.length; i += BATCH) {
    await host.measure(source.slice(i, i + BATCH));
    await tap.until(() => records(hostId).length >= i + BATCH, 30_000);
  }
  assert.ok(await tap.until(() => records(hostId).length >= source.length, 60_000));
  const listBytes = async () => (await host.control.read('current')).byteLength;
  assert.ok(
    await untilAsync(async () => (await listBytes()) < 3000, 60_000),
    'the list is cut below 3000 bytes',
  );
  assert.equal((await host.stopAgent('SIGTERM')).code, 0);
  const snapshots = tap.values<SnapshotEvent>('SnapshotEvent', hostId, TOPIC);
  assert.ok(snapshots.length >= 3, `several size-triggered cuts (${snapshots.length})`);
  const state = await host.control.state();
  assert.equal(state.freed, Math.max(...snapshots.map((x) => x.seq)));
  assert.deepEqual(
    records(hostId).map((r) => r.seq),
    source.map((_, i) => i),
  );
});

const matrix: Row[] = [];

test('stage flavour: a kill -9 at each step of a cut loses nothing and sends nothing twice', {
  timeout: 1_500_000,
}, async () => {
  matrix.push(...(await cutMatrix('stage')));
});

test('delete-N flavour: a kill -9 at each step of a cut loses nothing and sends nothing twice', {
  timeout: 1_500_000,
}, async () => {
  matrix.push(...(await cutMatrix('delete')));
});

test('crash-injection matrix', () => {
  const lines = ['| flavour | crash step | outcome after restart |', '| --- | --- | --- |'];
  for (const r of matrix) lines.push(`| ${r.flavour} | ${r.step} | ${r.outcome} |`);
  console.log(`\ncrash-injection matrix\n${lines.join('\n')}\n`);
  assert.ok(matrix.length > 0);
});
