/**
 * The agent against real swtpm, real tpm2-tools and the real broker (no replayer): what it puts
 * on the wire. Needs the stack up (deploy/stack.sh up).
 */
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Kafka, logLevel } from 'kafkajs';
import { parseAttest } from '../../lib/tpm/attest.ts';
import { parseSelectionSpec } from '../../lib/tpm/pcr-selection.ts';
import { parsePublic } from '../../lib/tpm/public.ts';
import { verifyQuote } from '../../lib/tpm/quote.ts';
import { BankTracker, SeqMatcher } from '../../services/agent/seq-match.ts';
import { SimHost } from '../../services/demo/host.ts';
import { corpusLog } from '../../services/demo/logs.ts';
import { startGroupsAtEnd } from '../../services/demo/services.ts';
import { Tap } from '../../services/demo/tap.ts';
import { type EnrollerHandle, startEnroller } from '../../services/enroller/main.ts';
import { encode } from '../../services/shared/codec.ts';
import type { BootEvent, Enrollment, LogRecord, Quote, QuoteTaken } from '../../services/shared/records.ts';
import { TOPIC } from '../../services/shared/topics.ts';
import { quietLogger } from '../services/replayer/pipeline.ts';

const BROKERS = (process.env.IMASTREAM_KAFKA_BROKERS ?? '127.0.0.1:19092').split(',');
const TOPICS = ['ima.measurements', 'ima.quotes', 'ima.enrollments'];
const run = randomUUID().slice(0, 8);
const base = mkdtempSync(join(tmpdir(), 'ims-agent-it-'));
const source = corpusLog('rust-keylime/ascii_runtime_measurements', 'sha1');
const hosts: SimHost[] = [];
let tap: Tap;
let enroller: EnrollerHandle;

async function newHost(name: string): Promise<SimHost> {
  const host = await SimHost.start(
    { hostId: `agent-it-${run}-${name}`, source, brokers: BROKERS.join(','), quoteIntervalS: 3600 },
    base,
  );
  hosts.push(host);
  return host;
}

function seqs(hostId: string): number[] {
  return tap.values<LogRecord>('LogRecord', hostId).map((r) => r.seq);
}

before(async () => {
  tap = new Tap(
    BROKERS,
    ['a', 'b', 'c'].map((n) => `agent-it-${run}-${n}`),
  );
  await tap.start(TOPICS);
  // The agents enrol through the protocol on first start; these TPMs have no EK certificate.
  await startGroupsAtEnd(BROKERS, [`agent-it-enroller-${run}`], [TOPIC.enrolRequests]);
  enroller = await startEnroller({
    brokers: BROKERS,
    logger: quietLogger('enroller'),
    ekPolicy: { trustStore: null, withoutCertificate: 'tofu', allowList: new Set() },
    groupId: `agent-it-enroller-${run}`,
  });
  await enroller.joined;
});

after(async () => {
  await Promise.allSettled(hosts.map((h) => h.stop()));
  await tap.stop();
  await enroller?.stop();
  rmSync(base, { recursive: true, force: true });
});

test('every record goes out once, in order, raw, after the boot event and the enrolment', async () => {
  const host = await newHost('a');
  await host.writer.writeNext(300);
  await host.startAgent();
  await host.play({ batch: 100, pauseMs: 20 });
  assert.ok(
    await tap.until(() => seqs(host.hostId).length >= source.records.length, 30_000),
    'all records arrive',
  );

  const records = tap.values<LogRecord>('LogRecord', host.hostId);
  assert.deepEqual(
    records.map((r) => r.seq),
    source.records.map((_, i) => i),
  );
  records.forEach((r, i) => {
    assert.deepEqual(
      new Uint8Array(r.templateData),
      source.records[i]!.templateData,
      `templateData of seq ${i}`,
    );
    assert.deepEqual(
      new Uint8Array(r.templateDigest),
      source.records[i]!.templateDigest,
      `templateDigest of seq ${i}`,
    );
  });
  const boots = tap.values<BootEvent>('BootEvent', host.hostId);
  assert.equal(boots.length, 1);
  assert.equal(boots[0]!.bootId, records[0]!.bootId);
  assert.equal(boots[0]!.bootId, `${host.hostBootId}:${boots[0]!.resetCount}`);
  const first = tap.seen.findIndex(
    (t) => t.msg.schema === 'LogRecord' && (t.msg.value as LogRecord).hostId === host.hostId,
  );
  const boot = tap.seen.findIndex(
    (t) => t.msg.schema === 'BootEvent' && (t.msg.value as BootEvent).hostId === host.hostId,
  );
  assert.ok(boot < first, 'BootEvent precedes the first record');
  const enrol = tap.values<Enrollment>('Enrollment', host.hostId);
  assert.equal(enrol[0]?.policy, 'tofu', 'enrolled by the enroller under trust on first use');
  assert.equal(enrol[0]?.status, 'active');
});

test('a challenge is answered by a quote placed at the seq it covers, after its records', async () => {
  const host = hosts[0]!;
  const kafka = new Kafka({ clientId: 'agent-it', brokers: BROKERS, logLevel: logLevel.NOTHING });
  const producer = kafka.producer();
  await producer.connect();
  const nonce = randomBytes(20);
  const requestId = `req-${randomUUID()}`;
  const challenge = { hostId: host.hostId, requestId, nonce, at: Date.now() };
  await producer.send({
    topic: 'ima.challenges',
    messages: [{ key: host.hostId, value: encode('Challenge', challenge) }],
  });
  await producer.disconnect();

  const quoteOf = () => tap.values<Quote>('Quote', host.hostId).find((q) => q.quoteId.startsWith(requestId));
  assert.ok(await tap.until(() => quoteOf() !== undefined, 30_000), 'the quote arrives');
  const quote = quoteOf()!;
  assert.equal(quote.seq, source.records.length, 'the whole log was extended before the quote');
  assert.deepEqual(new Uint8Array(quote.nonce), new Uint8Array(nonce));
  assert.equal(quote.nonceEpoch, null);

  // Verify it as the checker would: AK from the enrolment, PCR values from our own replay.
  const ak = parsePublic(new Uint8Array(tap.values<Enrollment>('Enrollment', host.hostId)[0]!.akPublic));
  const matcher = new SeqMatcher(
    new BankTracker(['sha1', 'sha256']),
    parseSelectionSpec('sha1:10+sha256:10'),
    'sha256',
  );
  for (const r of source.records.slice(0, quote.seq)) matcher.add(r);
  const verdict = await verifyQuote({
    attest: new Uint8Array(quote.attest),
    signature: new Uint8Array(quote.signature),
    akPublic: ak,
    nonce,
    pcrValues: matcher.valuesAt(quote.seq),
  });
  assert.deepEqual(verdict.failures, []);
  assert.equal(
    parseAttest(new Uint8Array(quote.attest)).clockInfo.resetCount,
    Number(quote.bootId.split(':').at(-1)),
  );

  const taken = tap.seen.findIndex(
    (t) => t.msg.schema === 'QuoteTaken' && (t.msg.value as QuoteTaken).quoteId === quote.quoteId,
  );
  const lastRecord = tap.seen.findIndex(
    (t) =>
      t.msg.schema === 'LogRecord' &&
      (t.msg.value as LogRecord).hostId === host.hostId &&
      (t.msg.value as LogRecord).seq === quote.seq - 1,
  );
  assert.ok(taken > lastRecord && lastRecord >= 0, 'QuoteTaken follows every record it covers');
  assert.equal((tap.seen[taken]!.msg.value as QuoteTaken).seq, quote.seq);
});

test('a stopped agent resumes where it was: nothing lost, nothing sent twice', async () => {
  const host = await newHost('b');
  await host.writer.writeNext(200);
  await host.startAgent();
  assert.ok(await tap.until(() => seqs(host.hostId).length >= 200, 30_000));
  assert.equal(await host.stopAgent('SIGTERM'), 0, 'SIGTERM is a clean exit');
  await host.writer.writeNext(250);
  await host.startAgent();
  assert.ok(await tap.until(() => seqs(host.hostId).length >= 450, 30_000));
  assert.deepEqual(
    seqs(host.hostId),
    Array.from({ length: 450 }, (_, i) => i),
  );
  assert.equal(tap.values<BootEvent>('BootEvent', host.hostId).length, 1, 'same boot: no second BootEvent');
});

test('a killed agent resumes: nothing lost, nothing sent twice (broker tail), same seqs and bytes', async () => {
  const host = await newHost('c');
  await host.startAgent();
  const playing = host.play({ batch: 50, pauseMs: 30 });
  await tap.until(() => seqs(host.hostId).length >= 100, 30_000);
  await host.stopAgent('SIGKILL');
  await playing;
  await host.startAgent();
  assert.ok(await tap.until(() => new Set(seqs(host.hostId)).size >= source.records.length, 30_000));

  const records = tap.values<LogRecord>('LogRecord', host.hostId);
  const bySeq = new Map<number, LogRecord>();
  for (const r of records) {
    const earlier = bySeq.get(r.seq);
    if (earlier !== undefined)
      assert.deepEqual(r.templateData, earlier.templateData, `resent seq ${r.seq} is identical`);
    bySeq.set(r.seq, r);
  }
  assert.deepEqual(
    [...bySeq.keys()].sort((a, b) => a - b),
    source.records.map((_, i) => i),
  );
  // The restarted agent reads its partition's tail and does not send what the broker already has.
  assert.equal(records.length, bySeq.size, 'nothing is sent twice, even after a kill -9');
});
