/**
 * Enrolment as the quote-checker sees it, through the real services on the broker, Redis and
 * swtpm: the agent's enrolment module enrols a host's AK with the enroller service (an EK
 * without a certificate, under an explicit trust-on-first-use policy); the replayer and a
 * quote-checker then close that host's shard with a verdict that names the policy, while a
 * quote from another AK of the same TPM (same EK, never enrolled) is UNKNOWN_AK although its
 * signature, nonce and PCRs are right.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { parseSerializedPcrs } from '../../lib/tpm/pcr-file.ts';
import { enrolAk } from '../../services/agent/enrol.ts';
import { type EnrollerHandle, startEnroller } from '../../services/enroller/main.ts';
import { newEpoch, publishEpoch } from '../../services/nonces/main.ts';
import { type QuoteCheckerHandle, startQuoteChecker } from '../../services/quote-checker/main.ts';
import { type ReplayerHandle, startReplayer } from '../../services/replayer/main.ts';
import type { ImsProducer } from '../../services/shared/kafka.ts';
import type { LogRecord, PcrValue, Quote } from '../../services/shared/records.ts';
import { TOPIC } from '../../services/shared/topics.ts';
import { type AkHandle, Swtpm } from '../helpers/swtpm.ts';
import { bootEvent, logRecord, quoteTaken } from '../services/replayer/fixtures.ts';
import {
  BROKERS,
  cleanHosts,
  connectProducer,
  connectTestRedis,
  eventually,
  judged,
  produce,
  quietLogger,
  REDIS_URL,
  uniqueHost,
  watchTopic,
} from '../services/replayer/pipeline.ts';
import { createTopics, testKafka, unique } from './kafka-helpers.ts';

const SELECTION = 'sha1:10+sha256:10';
const ENROLLED = uniqueHost('enrol-qc');
const STRAY = uniqueHost('enrol-qc-stray');
const HOSTS = [ENROLLED, STRAY];

const redis = connectTestRedis();
const kafka = testKafka(quietLogger());
const topics = { requests: unique('enrol-requests'), challenges: unique('enrol-challenges') };
let tpm: Swtpm;
let ak: AkHandle;
let strayAk: AkHandle;
let stateDir: string;
let producer: ImsProducer;
let enroller: EnrollerHandle;
let replayer: ReplayerHandle;
let checker: QuoteCheckerHandle;
let verdicts: Awaited<ReturnType<typeof watchTopic>>;
let alerts: Awaited<ReturnType<typeof watchTopic>>;

before(async () => {
  tpm = await Swtpm.start();
  const ek = await tpm.createEk();
  ak = await tpm.createAk(ek, { scheme: 'rsassa', persist: '0x81010002' });
  strayAk = await tpm.createAk(ek, { scheme: 'rsassa', persist: '0x81010003' });
  stateDir = await mkdtemp(join(tmpdir(), 'imastream-enrol-qc-'));
  producer = await connectProducer();
  await createTopics(kafka, Object.values(topics));
  [verdicts, alerts] = await Promise.all([
    watchTopic(TOPIC.verdicts, HOSTS),
    watchTopic(TOPIC.alerts, HOSTS),
  ]);
  enroller = await startEnroller({
    brokers: BROKERS,
    logger: quietLogger('enroller'),
    ekPolicy: { trustStore: null, withoutCertificate: 'tofu', allowList: new Set() },
    groupId: unique('enroller'),
    topics,
  });
  replayer = await startReplayer({ brokers: BROKERS, redisUrl: REDIS_URL, logger: quietLogger('replayer') });
  checker = await startQuoteChecker({
    brokers: BROKERS,
    redisUrl: REDIS_URL,
    logger: quietLogger('quote-checker'),
    sweepIntervalMs: 500,
  });
  await Promise.all([enroller.joined, replayer.joined, checker.joined]);
});

after(async () => {
  await Promise.allSettled([replayer?.stop(), checker?.stop(), enroller?.stop()]);
  await Promise.allSettled([verdicts?.stop(), alerts?.stop()]);
  await producer?.disconnect();
  const admin = await kafka.connectAdmin();
  await admin.deleteTopics({ topics: Object.values(topics) }).finally(() => admin.disconnect());
  await tpm?.stop();
  await cleanHosts(redis, HOSTS);
  await redis.quit();
  await rm(stateDir, { recursive: true, force: true });
});

/** Extends PCR 10 with each record as the kernel would (per-bank template digests). */
async function measure(records: LogRecord[]): Promise<void> {
  for (const r of records) {
    const sha1 = createHash('sha1').update(r.templateData).digest();
    const sha256 = createHash('sha256').update(r.templateData).digest();
    await tpm.pcrExtend(10, { sha1, sha256 });
  }
}

/** A quote over the current PCRs with a fresh epoch nonce, produced as the agent does. */
async function sendQuote(host: string, boot: string, seq: number, signer: AkHandle): Promise<void> {
  const epoch = newEpoch(Date.now(), 60_000);
  await publishEpoch(producer, epoch);
  const files = await tpm.quote(signer, { selection: SELECTION, nonce: epoch.nonce });
  const pcrs: PcrValue[] = [...parseSerializedPcrs(files.pcrs)].flatMap(([bank, values]) =>
    [...values].map(([pcr, value]) => ({ scheme: 'tpm', bank, pcr, value: Buffer.from(value) })),
  );
  const quote: Quote = {
    hostId: host,
    bootId: boot,
    seq,
    quoteId: `${host}-q${seq}-${signer === ak ? 'enrolled' : 'stray'}`,
    attest: Buffer.from(files.attest),
    signature: Buffer.from(files.signature),
    akName: Buffer.from(signer.name),
    nonce: epoch.nonce,
    nonceEpoch: epoch.epoch,
    at: Date.now(),
    pcrs,
  };
  await produce(producer, TOPIC.quotes, 'Quote', [quote]);
}

async function stream(host: string, boot: string, records: LogRecord[]): Promise<void> {
  await produce(producer, TOPIC.measurements, 'BootEvent', [bootEvent(host, boot)]);
  await produce(producer, TOPIC.measurements, 'LogRecord', records);
  await produce(producer, TOPIC.measurements, 'QuoteTaken', [quoteTaken(host, boot, records.length)]);
}

test('a host enrolled by the enroller under TOFU gets verdicts that say so; another AK of the same TPM is UNKNOWN_AK', async () => {
  const enrolled = await enrolAk({
    brokers: BROKERS,
    hostId: ENROLLED,
    tpm: tpm.tools,
    akHandle: '0x81010002',
    akAlg: 'rsa',
    stateDir,
    log: quietLogger('agent'),
    topics,
  });
  assert.equal(enrolled.policy, 'tofu');
  assert.deepEqual(Buffer.from(enrolled.akName), Buffer.from(ak.name));

  // The enrolled host: records measured into the TPM, streamed, quoted by the enrolled AK.
  const boot = `${ENROLLED}:1`;
  const log = Array.from({ length: 6 }, (_, i) => logRecord(ENROLLED, boot, i));
  await tpm.reset();
  await measure(log);
  await stream(ENROLLED, boot, log);
  await sendQuote(ENROLLED, boot, log.length, ak);
  const verdict = await eventually(
    'the enrolled host verdict',
    () => verdicts.seen.find((v) => v.value.hostId === ENROLLED && judged(v)),
    60_000,
  );
  assert.equal(verdict.value.status, 'CLOSED', JSON.stringify(verdict.value.reasons));
  assert.equal(verdict.value.akPolicy, 'tofu');

  // The same host's TPM and EK, but an AK that was never enrolled: a perfect quote, refused.
  await sendQuote(ENROLLED, boot, log.length, strayAk);
  const unknown = await eventually(
    'UNKNOWN_AK for the stray AK',
    () => alerts.seen.find((a) => a.key === ENROLLED && a.value.kind === 'UNKNOWN_AK'),
    60_000,
  );
  assert.equal(unknown.value.bootId, boot);

  // The enrolled AK quoting for a host it is not enrolled to: UNKNOWN_AK too.
  await sendQuote(STRAY, `${STRAY}:1`, 0, ak);
  await eventually(
    'UNKNOWN_AK for a host the AK is not enrolled to',
    () => alerts.seen.find((a) => a.key === STRAY && a.value.kind === 'UNKNOWN_AK'),
    60_000,
  );
  assert.equal(alerts.seen.filter((a) => a.key === ENROLLED && a.value.kind === 'PCR_MISMATCH').length, 0);
});
