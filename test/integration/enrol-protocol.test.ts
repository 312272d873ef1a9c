import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey, randomBytes, X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import * as pkijs from 'pkijs';
import { toHex } from '../../lib/bytes/hex.ts';
import { type EkPolicy, ekKeyHash } from '../../lib/enrol/ek-policy.ts';
import { hasCode, isImastreamError } from '../../lib/errors.ts';
import { credentialFile } from '../../lib/tpm/credential.ts';
import { toJwk } from '../../lib/tpm/key.ts';
import { parsePublic } from '../../lib/tpm/public.ts';
import { enrolAk } from '../../services/agent/enrol.ts';
import { activateCredential } from '../../services/agent/tpm.ts';
import { type EnrollerHandle, startEnroller } from '../../services/enroller/main.ts';
import { loadTrustStore } from '../../services/enroller/trust-store.ts';
import { encode } from '../../services/shared/codec.ts';
import type { ImsProducer } from '../../services/shared/kafka.ts';
import type { EnrolChallenge, Enrollment, EnrolRejection } from '../../services/shared/records.ts';
import { DAY, type Issuer, KU, makeCaPair, makeCert } from '../helpers/enrol-certs.ts';
import { EnrolTpm } from '../helpers/enrol-tpm.ts';
import { Swtpm } from '../helpers/swtpm.ts';
import { watchTopic } from '../services/replayer/pipeline.ts';
import { BROKERS, createTopics, memoryLogger, testKafka, unique } from './kafka-helpers.ts';

/*
 * Enrolment through the real services: the enroller process core (services/enroller/main.ts)
 * on the real broker, the agent's enrolment module (services/agent/enrol.ts) driving tpm2-tools
 * against swtpm. Each enroller gets its own request, challenge and enrolment topics, so two
 * enrollers with different policies never answer the same request.
 */

const AK_HANDLE = '0x81010002';
const RSA_EK = '0x81010001';

let tpm: EnrolTpm;
let trustDir: string;
const { logger } = memoryLogger();
const kafka = testKafka(logger);
let producer: ImsProducer;
/** Enrollers stop first, all at once; then their topics and folders go. */
const stops: (() => Promise<unknown>)[] = [];
const closers: (() => Promise<unknown>)[] = [];

before(async () => {
  tpm = await EnrolTpm.manufactured();
  trustDir = await mkdtemp(join(tmpdir(), 'imastream-trust-'));
  const [root, intermediate] = await tpm.caCertificates();
  await writeFile(join(trustDir, 'root.pem'), root!);
  await writeFile(join(trustDir, 'intermediate.pem'), intermediate!);
  await writeFile(join(trustDir, 'README.txt'), 'not a certificate: ignored');
  producer = await kafka.connectProducer();
});
after(async () => {
  await Promise.allSettled(stops.map((stop) => stop()));
  await Promise.allSettled(closers.map((close) => close()));
  await producer?.disconnect();
  await tpm?.stop();
  await rm(trustDir, { recursive: true, force: true });
});

interface Pipeline {
  enroller: EnrollerHandle;
  topics: { requests: string; challenges: string; enrollments: string; alerts: string };
}

async function pipeline(ekPolicy: EkPolicy, deadLetterTopic?: string): Promise<Pipeline> {
  const topics = {
    requests: unique('enrol-requests'),
    challenges: unique('enrol-challenges'),
    enrollments: unique('enrollments'),
    alerts: unique('alerts'),
  };
  const created = [...Object.values(topics), ...(deadLetterTopic === undefined ? [] : [deadLetterTopic])];
  await createTopics(kafka, created);
  closers.push(async () => {
    const admin = await kafka.connectAdmin();
    await admin.deleteTopics({ topics: created }).finally(() => admin.disconnect());
  });
  const enroller = await startEnroller({
    brokers: BROKERS,
    logger,
    ekPolicy,
    groupId: unique('enroller'),
    topics,
    deadLetterTopic,
  });
  stops.push(() => enroller.stop());
  await enroller.joined;

  return { enroller, topics };
}

const certificatePolicy = async (): Promise<EkPolicy> => ({
  trustStore: await loadTrustStore(trustDir),
  withoutCertificate: 'reject',
  allowList: new Set(),
});

async function stateDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'imastream-agent-state-'));
  closers.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** The records for `hostId` on `topic`, from its start, once `until` holds for them. */
async function recordsOn<T>(topic: string, hostId: string, until: (seen: T[]) => boolean): Promise<T[]> {
  const watch = await watchTopic(topic, [hostId], logger);
  try {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const values = watch.seen.map((s) => ({ schema: s.schema, ...s.value }) as T);
      if (until(values)) return values;
      if (Date.now() > deadline) throw new Error(`timed out waiting on ${topic}: ${JSON.stringify(values)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  } finally {
    await watch.stop();
  }
}

type Tagged = { schema: string; secret?: Buffer } & Partial<EnrolChallenge & EnrolRejection & Enrollment>;

test('a TPM with a certified EK enrols through the enroller; the marker skips the next round trip; a replayed answer is refused', async () => {
  const { enroller, topics } = await pipeline(await certificatePolicy());
  const hostId = unique('host-cert');
  const state = await stateDir();
  const options = {
    brokers: BROKERS,
    hostId,
    tpm: tpm.tools,
    akHandle: AK_HANDLE,
    akAlg: 'ecc' as const,
    stateDir: state,
    log: logger,
    topics,
  };

  const first = await enrolAk(options);
  assert.equal(first.outcome, 'enrolled');
  assert.equal(first.policy, 'ek-cert');
  const held = enroller.registry.get(hostId);
  assert.equal(held?.status, 'active');
  assert.equal(toHex(held!.akName), toHex(first.akName));
  assert.ok(held?.ekCertificate !== null, 'the certificate is kept with the enrolment');

  const second = await enrolAk(options);
  assert.equal(second.outcome, 'known');
  assert.equal(toHex(second.akName), toHex(first.akName));

  // The answer the agent sent, sent again: refused, and no second Enrollment is written.
  const sent = await recordsOn<Tagged>(topics.requests, hostId, (s) =>
    s.some((r) => r.schema === 'EnrolAnswer'),
  );
  const answer = sent.find((r) => r.schema === 'EnrolAnswer')!;
  await producer.send(topics.requests, [
    {
      key: hostId,
      value: encode('EnrolAnswer', {
        hostId,
        challengeId: answer.challengeId!,
        secret: answer.secret!,
        at: Date.now(),
      }),
    },
  ]);
  const replies = await recordsOn<Tagged>(topics.challenges, hostId, (s) =>
    s.some((r) => r.schema === 'EnrolRejection' && r.challengeId === answer.challengeId),
  );
  const refusal = replies.find((r) => r.schema === 'EnrolRejection');
  assert.equal(refusal?.code, 'CHALLENGE_REPLAYED');
  const written = await recordsOn<Tagged>(topics.enrollments, hostId, (s) => s.length >= 1);
  assert.equal(written.length, 1);
  assert.equal(written[0]?.policy, 'ek-cert');
});

/** The swtpm local CA's intermediate with its key, to issue bad certificates for the real EK. */
async function localCa(): Promise<Issuer> {
  const der = new Uint8Array(new X509Certificate(await readFile(join(tpm.dir, 'ca', 'issuercert.pem'))).raw);
  const privateKey = createPrivateKey(await readFile(join(tpm.dir, 'ca', 'signkey.pem')));
  return { der, cert: pkijs.Certificate.fromBER(der), privateKey };
}

test('expired, wrong-issuer and self-signed EK certificates are refused over Kafka with their codes', async () => {
  const { topics } = await pipeline(await certificatePolicy());
  const ekPublic = await tpm.readPublic(RSA_EK);
  const ekKey = createPublicKey({ key: toJwk(parsePublic(ekPublic).key), format: 'jwk' });
  const akPublic = await tpm.readPublic(AK_HANDLE).catch(async () => (await tpm.createAk(RSA_EK)).public);
  const now = Date.now();
  const expired = await makeCert({
    publicKey: ekKey,
    issuer: await localCa(),
    keyUsage: KU.keyEncipherment,
    notBefore: new Date(now - 400 * DAY),
    notAfter: new Date(now - DAY),
  });
  const rogue = await makeCaPair('rogue vendor');
  const wrongIssuer = await makeCert({
    publicKey: ekKey,
    issuer: rogue.intermediate,
    keyUsage: KU.keyEncipherment,
  });
  const selfSigned = await makeCert({ cn: 'swtpm-localca', keyUsage: KU.keyEncipherment });
  const cases = [
    ['expired', expired.der, 'EK_CERT_EXPIRED'],
    ['wrong-issuer', wrongIssuer.der, 'EK_CERT_UNTRUSTED_ISSUER'],
    ['self-signed', selfSigned.der, 'EK_CERT_SELF_SIGNED'],
    ['none', null, 'EK_NO_CERTIFICATE'],
  ] as const;

  const hostId = unique('host-badcert');
  for (const [requestId, certificate] of cases) {
    const value = encode('EnrolRequest', {
      hostId,
      requestId,
      ekPublic: Buffer.from(ekPublic),
      ekCertificate: certificate === null ? null : Buffer.from(certificate),
      akPublic: Buffer.from(akPublic),
      at: Date.now(),
    });
    await producer.send(topics.requests, [{ key: hostId, value }]);
  }
  const replies = await recordsOn<Tagged>(topics.challenges, hostId, (s) => s.length >= cases.length);
  for (const [requestId, , code] of cases) {
    const reply = replies.find((r) => r.requestId === requestId);
    assert.equal(reply?.schema, 'EnrolRejection', requestId);
    assert.equal(reply?.code, code, requestId);
  }
  // The security team sees each refusal as an alert with the same code.
  const alerts = await recordsOn<{ kind?: string; severity?: string; details?: string }>(
    topics.alerts,
    hostId,
    (s) => s.length >= cases.length,
  );
  assert.deepEqual(
    alerts.map((a) => [a.kind, a.severity, JSON.parse(a.details ?? '{}').code]).sort(),
    cases.map(([, , code]) => ['ENROLMENT_REJECTED', 'WARNING', code]).sort(),
  );
});

test("the agent stops with IMS_ENROL_REJECTED when the enroller does not trust its EK's manufacturer", async () => {
  const rogue = await makeCaPair('another vendor');
  const rogueDir = await stateDir();
  await writeFile(join(rogueDir, 'root.der'), rogue.root.der);
  const { topics } = await pipeline({
    trustStore: await loadTrustStore(rogueDir),
    withoutCertificate: 'reject',
    allowList: new Set(),
  });
  const hostId = unique('host-rogue');
  await assert.rejects(
    enrolAk({
      brokers: BROKERS,
      hostId,
      tpm: tpm.tools,
      akHandle: AK_HANDLE,
      akAlg: 'ecc',
      stateDir: await stateDir(),
      log: logger,
      topics,
    }),
    (e) =>
      hasCode(e, 'IMS_ENROL_REJECTED') &&
      isImastreamError(e) &&
      e.details?.code === 'EK_CERT_UNTRUSTED_ISSUER',
  );
});

test('an AK that is not under the EK: the TPM cannot activate the credential, and a guess is refused', async (t) => {
  const { topics } = await pipeline(await certificatePolicy());
  const other = await Swtpm.start();
  t.after(() => other.stop());
  const otherEk = await other.createEk({ alg: 'rsa' });
  const otherAk = await other.createAk(otherEk, { scheme: 'ecdsa', keyAlg: 'ecc' });
  const hostId = unique('host-mallory');
  // A genuine EK with its genuine certificate (public data), paired with an AK from another TPM.
  await producer.send(topics.requests, [
    {
      key: hostId,
      value: encode('EnrolRequest', {
        hostId,
        requestId: 'mallory-1',
        ekPublic: Buffer.from(await tpm.readPublic(RSA_EK)),
        ekCertificate: Buffer.from(await tpm.ekCertificate('rsa')),
        akPublic: Buffer.from(otherAk.public),
        at: Date.now(),
      }),
    },
  ]);
  const [challenge] = await recordsOn<Tagged>(topics.challenges, hostId, (s) => s.length >= 1);
  assert.equal(challenge?.schema, 'EnrolChallenge');
  const file = credentialFile({
    idObject: challenge!.credentialBlob!,
    encryptedSecret: challenge!.encryptedSecret!,
  });
  // The EK's TPM has no object of that Name; the AK's TPM has not got the EK.
  await assert.rejects(activateCredential(tpm.tools, RSA_EK, AK_HANDLE, file), (e) =>
    hasCode(e, 'IMS_ENROL_ACTIVATION_FAILED'),
  );
  await assert.rejects(activateCredential(other.tools, otherEk.handle, otherAk.context, file), (e) =>
    hasCode(e, 'IMS_ENROL_ACTIVATION_FAILED'),
  );
  await producer.send(topics.requests, [
    {
      key: hostId,
      value: encode('EnrolAnswer', {
        hostId,
        challengeId: challenge!.challengeId!,
        secret: randomBytes(32),
        at: Date.now(),
      }),
    },
  ]);
  const replies = await recordsOn<Tagged>(topics.challenges, hostId, (s) => s.length >= 2);
  assert.equal(replies[1]?.schema, 'EnrolRejection');
  assert.equal(replies[1]?.code, 'WRONG_SECRET');
});

test('an EK without a certificate: refused by default, accepted under tofu or the allow-list, and the enrolment says which', async (t) => {
  const blank = await Swtpm.start();
  t.after(() => blank.stop());
  const hostId = unique('host-nocert');
  const enrol = async (topics: Pipeline['topics']) =>
    enrolAk({
      brokers: BROKERS,
      hostId,
      tpm: blank.tools,
      akHandle: AK_HANDLE,
      akAlg: 'ecc',
      stateDir: await stateDir(),
      log: logger,
      topics,
    });

  const strict = await pipeline(await certificatePolicy());
  await assert.rejects(
    enrol(strict.topics),
    (e) => isImastreamError(e) && e.details?.code === 'EK_NO_CERTIFICATE',
  );

  const tofu = await pipeline({ trustStore: null, withoutCertificate: 'tofu', allowList: new Set() });
  assert.equal((await enrol(tofu.topics)).policy, 'tofu');
  assert.equal(tofu.enroller.registry.get(hostId)?.policy, 'tofu');

  await blank.tools.exclusive(() =>
    blank.tools.tool('tpm2_createek', [
      '-c',
      blank.tools.file('ek2.ctx'),
      '-G',
      'rsa',
      '-u',
      blank.tools.file('ek2.pub'),
    ]),
  );
  const ekHash = ekKeyHash(parsePublic(new Uint8Array(await readFile(blank.tools.file('ek2.pub')))).key);
  const listed = await pipeline({
    trustStore: null,
    withoutCertificate: 'allow-list',
    allowList: new Set([ekHash]),
  });
  assert.equal((await enrol(listed.topics)).policy, 'ek-allow-list');
  const unlisted = await pipeline({
    trustStore: null,
    withoutCertificate: 'allow-list',
    allowList: new Set(['00'.repeat(32)]),
  });
  await assert.rejects(
    enrol(unlisted.topics),
    (e) => isImastreamError(e) && e.details?.code === 'EK_NOT_ALLOWED',
  );
});

test('malformed requests are dead-lettered with the reason, and the agent told when it can be', async () => {
  const deadLetters = unique('dead-letter');
  const { topics } = await pipeline(
    { trustStore: null, withoutCertificate: 'tofu', allowList: new Set() },
    deadLetters,
  );
  const hostId = unique('host-malformed');
  const request = (ekPublic: Buffer) =>
    encode('EnrolRequest', {
      hostId,
      requestId: 'garbled-ek',
      ekPublic,
      ekCertificate: null,
      akPublic: Buffer.from(randomBytes(40)),
      at: Date.now(),
    });
  await producer.send(topics.requests, [
    // Another host's key: it would land on another enroller's partition than the answer.
    { key: `${hostId}-x`, value: request(Buffer.from(await tpm.readPublic(RSA_EK))) },
    { key: hostId, value: request(Buffer.from(randomBytes(64))) },
    { key: hostId, value: Buffer.from('not an Avro record') },
  ]);
  const dead = await recordsOn<{ schema: string; key: Buffer | null; reason?: string }>(
    deadLetters,
    hostId,
    (s) => s.length >= 2,
  );
  assert.deepEqual(dead.map((d) => d.reason).sort(), ['IMS_ENROL_BAD_REQUEST', 'IMS_WIRE_BAD_FRAME']);
  const misKeyed = await recordsOn<{ reason?: string }>(deadLetters, `${hostId}-x`, (s) => s.length >= 1);
  assert.equal(misKeyed[0]?.reason, 'IMS_ENROL_BAD_REQUEST');
  const told = await recordsOn<Tagged>(topics.challenges, hostId, (s) => s.length >= 1);
  assert.equal(told[0]?.schema, 'EnrolRejection');
  assert.equal(told[0]?.code, 'BAD_REQUEST');
});
