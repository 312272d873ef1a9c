import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { Enroller } from '../../../lib/enrol/enroller.ts';
import { EnrolmentRegistry } from '../../../lib/enrol/registry.ts';
import { parsePublic } from '../../../lib/tpm/public.ts';
import { EnrolmentService, fromRecord, toRecord } from '../../../services/enroller/service.ts';
import { createLogger } from '../../../services/shared/logger.ts';
import type { Enrollment as EnrollmentRecord } from '../../../services/shared/records.ts';
import { akPublicBytes, SoftTpm } from '../../helpers/enrol-soft-tpm.ts';

function harness() {
  const stream = new PassThrough();
  const lines: Record<string, unknown>[] = [];
  stream.on('data', (chunk: Buffer) => {
    for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l));
  });
  const log = createLogger({ service: 'enroller', level: 'debug', destination: stream });
  const registry = new EnrolmentRegistry();
  const policy = { trustStore: null, withoutCertificate: 'tofu' as const, allowList: new Set<string>() };
  const published: EnrollmentRecord[] = [];
  const sink = { publish: async (r: EnrollmentRecord) => void published.push(r) };
  const service = new EnrolmentService(
    new Enroller({ ekPolicy: policy }, registry),
    registry,
    sink,
    log,
    () => 1000,
  );
  return { service, registry, published, lines };
}

const flush = () => new Promise((resolve) => setImmediate(resolve));

test('a request and the right answer publish one active Enrollment; secrets stay out of the log', async () => {
  const { service, published, lines } = harness();
  const tpm = new SoftTpm('rsa');
  const akPublic = akPublicBytes(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey);
  const challenge = await service.request({
    hostId: 'h1',
    ekPublic: tpm.ekPublic,
    ekCertificate: null,
    akPublic,
  });
  assert.ok(challenge !== null);
  const secret = tpm.activate(parsePublic(tpm.ekPublic), challenge.akName, challenge.credential);
  assert.equal(await service.answer({ hostId: 'h1', challengeId: challenge.challengeId, secret }), true);
  assert.equal(published.length, 1);
  assert.equal(published[0]!.status, 'active');
  assert.equal(published[0]!.policy, 'tofu');
  assert.ok(Buffer.isBuffer(published[0]!.akPublic));

  assert.equal(await service.answer({ hostId: 'h1', challengeId: challenge.challengeId, secret }), false);
  assert.equal(published.length, 1);
  await flush();
  const enrolled = lines.find((l) => l.msg === 'AK enrolled');
  assert.equal(enrolled?.hostId, 'h1');
  const replay = lines.find((l) => l.msg === 'enrolment rejected');
  assert.equal(replay?.code, 'CHALLENGE_REPLAYED');
  assert.equal(replay?.level, 'warn');
  const hex = Buffer.from(secret).toString('hex');
  assert.ok(!lines.some((l) => JSON.stringify(l).includes(hex)));
});

test('a refused request is logged with its code and returns no challenge', async () => {
  const { service, lines } = harness();
  const out = await service.request({
    hostId: 'h2',
    ekPublic: Uint8Array.of(1),
    ekCertificate: null,
    akPublic: Uint8Array.of(2),
  });
  assert.equal(out, null);
  await flush();
  assert.equal(lines.find((l) => l.msg === 'enrolment rejected')?.code, 'BAD_REQUEST');
});

test('records from ima.enrollments feed the registry; ones this enroller did not write are skipped', async () => {
  const { service, registry, lines } = harness();
  const tpm = new SoftTpm('rsa');
  const base = {
    hostId: 'h3',
    akPublic: Buffer.from(akPublicBytes(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey)),
    akName: Buffer.alloc(34),
    ekPublic: Buffer.from(tpm.ekPublic),
    ekCertificate: null,
    at: 5,
  };
  service.onRecord({ ...base, policy: 'tofu', status: 'unverified-tofu' });
  assert.equal(registry.get('h3'), undefined);
  service.onRecord({ ...base, policy: 'tofu', status: 'active' });
  assert.equal(registry.get('h3')?.status, 'active');
  await flush();
  assert.equal(lines.filter((l) => l.msg === 'enrolment record ignored').length, 1);
  const round = fromRecord(toRecord(registry.get('h3')!));
  assert.deepEqual(round, registry.get('h3'));
});

test('a record whose public areas do not parse is skipped', () => {
  const { service, registry } = harness();
  const bad = {
    hostId: 'h4',
    akPublic: Buffer.of(1, 2),
    akName: Buffer.alloc(34),
    ekPublic: Buffer.of(3),
    ekCertificate: null,
    policy: 'tofu',
    status: 'active',
    at: 1,
  };
  service.onRecord(bad);
  assert.equal(registry.get('h4'), undefined);
});
