import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { test } from 'node:test';
import { bytesEqual } from '../../../lib/bytes/hex.ts';
import { type EkPolicy, ekKeyHash } from '../../../lib/enrol/ek-policy.ts';
import { Enroller, type EnrollerOptions } from '../../../lib/enrol/enroller.ts';
import { checkQuoteAk, EnrolmentRegistry } from '../../../lib/enrol/registry.ts';
import type { EnrolChallenge, EnrolRequest } from '../../../lib/enrol/types.ts';
import { trustStoreFromCertificates } from '../../../lib/tpm/ek-cert.ts';
import { concat, u16be, u32be } from '../../../lib/tpm/marshal.ts';
import { objectName } from '../../../lib/tpm/name.ts';
import { parsePublic } from '../../../lib/tpm/public.ts';
import { KU, makeCaPair, makeCert } from '../../helpers/enrol-certs.ts';
import {
  AES_128_CFB,
  AK_ATTRIBUTES,
  akPublicBytes,
  EK_ATTRIBUTES,
  SoftTpm,
} from '../../helpers/enrol-soft-tpm.ts';

const T0 = Date.parse('2026-06-01T00:00:00Z');
const vendor = await makeCaPair('vendor');
const trustStore = await trustStoreFromCertificates([vendor.root.der, vendor.intermediate.der]);

const tofu: EkPolicy = { trustStore, withoutCertificate: 'tofu', allowList: new Set() };

function setup(opts: Partial<EnrollerOptions> = {}) {
  const registry = new EnrolmentRegistry();
  return { registry, enroller: new Enroller({ ekPolicy: tofu, challengeTtlMs: 60_000, ...opts }, registry) };
}

/** A host: a software TPM with an AK, and the request its agent would send. */
function host(hostId: string, tpm = new SoftTpm('ecc'), cert: Uint8Array | null = null) {
  const akKey = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const request: EnrolRequest = {
    hostId,
    ekPublic: tpm.ekPublic,
    ekCertificate: cert,
    akPublic: akPublicBytes(akKey.publicKey),
  };
  const activate = (c: EnrolChallenge) => tpm.activate(parsePublic(tpm.ekPublic), c.akName, c.credential);
  return { tpm, request, activate };
}

async function challengeFor(enroller: Enroller, request: EnrolRequest, now = T0): Promise<EnrolChallenge> {
  const out = await enroller.begin(request, now);
  if (!out.ok) assert.fail(`${out.rejection.code}: ${out.rejection.message}`);
  return out.challenge;
}

test('the host that activates the credential gets its AK enrolled, once', async () => {
  const { registry, enroller } = setup();
  const h = host('web-1');
  const challenge = await challengeFor(enroller, h.request);
  const ak = parsePublic(h.request.akPublic);
  assert.deepEqual(challenge.akName, objectName(ak.bytes, ak.nameAlg));
  assert.equal(challenge.expiresAt, T0 + 60_000);

  const answer = { hostId: 'web-1', challengeId: challenge.challengeId, secret: h.activate(challenge) };
  const ok = enroller.answer(answer, T0 + 1000);
  assert.ok(ok.ok);
  assert.equal(ok.enrollment.status, 'active');
  assert.equal(ok.enrollment.policy, 'tofu');
  assert.equal(ok.enrollment.at, T0 + 1000);
  assert.equal(ok.enrollment.akPublic.length, ak.bytes.length + 2, 'stored as TPM2B_PUBLIC');
  assert.equal(registry.get('web-1')?.status, 'active');

  const again = enroller.answer(answer, T0 + 2000);
  assert.equal(again.ok, false);
  assert.equal(!again.ok && again.rejection.code, 'CHALLENGE_REPLAYED');
});

test('a wrong secret is refused and spends the challenge', async () => {
  const { registry, enroller } = setup();
  const h = host('web-2');
  const challenge = await challengeFor(enroller, h.request);
  const secret = h.activate(challenge);
  const wrong = secret.slice();
  wrong[0]! ^= 1;
  const bad = enroller.answer({ hostId: 'web-2', challengeId: challenge.challengeId, secret: wrong }, T0);
  assert.equal(!bad.ok && bad.rejection.code, 'WRONG_SECRET');
  const late = enroller.answer({ hostId: 'web-2', challengeId: challenge.challengeId, secret }, T0);
  assert.equal(!late.ok && late.rejection.code, 'CHALLENGE_REPLAYED');
  const short = await challengeFor(enroller, h.request);
  const truncated = enroller.answer(
    { hostId: 'web-2', challengeId: short.challengeId, secret: secret.subarray(1) },
    T0,
  );
  assert.equal(!truncated.ok && truncated.rejection.code, 'WRONG_SECRET');
  assert.equal(registry.get('web-2'), undefined);
});

test('a credential for one AK cannot be activated for another AK or by another TPM', async () => {
  const { enroller } = setup();
  const h = host('web-3');
  const challenge = await challengeFor(enroller, h.request);
  const otherAk = parsePublic(host('x').request.akPublic);
  const otherName = objectName(otherAk.bytes, otherAk.nameAlg);
  const ek = parsePublic(h.tpm.ekPublic);
  assert.throws(() => h.tpm.activate(ek, otherName, challenge.credential), /INTEGRITY/);
  const stranger = new SoftTpm('ecc');
  assert.throws(() =>
    stranger.activate(parsePublic(stranger.ekPublic), challenge.akName, challenge.credential),
  );
});

test('an answer after expiry is refused', async () => {
  const { enroller } = setup();
  const h = host('web-4');
  const challenge = await challengeFor(enroller, h.request);
  const out = enroller.answer(
    { hostId: 'web-4', challengeId: challenge.challengeId, secret: h.activate(challenge) },
    T0 + 60_001,
  );
  assert.equal(!out.ok && out.rejection.code, 'CHALLENGE_EXPIRED');
});

test('an answer from another host does not spend the challenge', async () => {
  const { enroller } = setup();
  const h = host('web-5');
  const challenge = await challengeFor(enroller, h.request);
  const secret = h.activate(challenge);
  const out = enroller.answer({ hostId: 'web-6', challengeId: challenge.challengeId, secret }, T0);
  assert.equal(!out.ok && out.rejection.code, 'HOST_MISMATCH');
  assert.ok(enroller.answer({ hostId: 'web-5', challengeId: challenge.challengeId, secret }, T0).ok);
});

test("a new request supersedes the host's pending challenge; unknown ids are refused", async () => {
  const { enroller } = setup();
  const h = host('web-7');
  const first = await challengeFor(enroller, h.request);
  const second = await challengeFor(enroller, h.request);
  assert.equal(enroller.pendingCount, 1);
  const old = enroller.answer(
    { hostId: 'web-7', challengeId: first.challengeId, secret: h.activate(first) },
    T0,
  );
  assert.equal(!old.ok && old.rejection.code, 'UNKNOWN_CHALLENGE');
  assert.ok(
    enroller.answer({ hostId: 'web-7', challengeId: second.challengeId, secret: h.activate(second) }, T0).ok,
  );
});

test('requests with a non-attestation AK or malformed areas are refused before any credential', async () => {
  const { enroller } = setup();
  const h = host('db-1');
  const akKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey;
  const decrypting = { ...h.request, akPublic: akPublicBytes(akKey, AK_ATTRIBUTES | 0x20000) };
  const cases: [EnrolRequest, string][] = [
    [decrypting, 'AK_NOT_ATTESTATION_KEY'],
    [{ ...h.request, akPublic: akPublicBytes(akKey, AK_ATTRIBUTES & ~0x10000) }, 'AK_NOT_ATTESTATION_KEY'],
    [{ ...h.request, ekPublic: Uint8Array.of(0, 1, 2) }, 'BAD_REQUEST'],
    [{ ...h.request, akPublic: new Uint8Array(5000) }, 'BAD_REQUEST'],
    [{ ...h.request, hostId: '' }, 'BAD_REQUEST'],
    [{ ...h.request, hostId: 'a b' }, 'BAD_REQUEST'],
    [{ ...h.request, ekPublic: h.request.akPublic }, 'EK_UNSUPPORTED'],
  ];
  for (const [request, code] of cases) {
    const out = await enroller.begin(request, T0);
    assert.equal(!out.ok && out.rejection.code, code, JSON.stringify(!out.ok && out.rejection));
  }
  assert.equal(enroller.pendingCount, 0);
});

test('EKs without a certificate: reject, allow-list, or TOFU with change detection', async () => {
  const h = host('edge-1');
  const ekHash = ekKeyHash(parsePublic(h.tpm.ekPublic).key);

  const strict = setup({ ekPolicy: { trustStore, withoutCertificate: 'reject', allowList: new Set() } });
  const r = await strict.enroller.begin(h.request, T0);
  assert.equal(!r.ok && r.rejection.code, 'EK_NO_CERTIFICATE');

  const listed = setup({
    ekPolicy: { trustStore, withoutCertificate: 'allow-list', allowList: new Set([ekHash]) },
  });
  const c = await challengeFor(listed.enroller, h.request);
  const ok = listed.enroller.answer(
    { hostId: 'edge-1', challengeId: c.challengeId, secret: h.activate(c) },
    T0,
  );
  assert.equal(ok.ok && ok.enrollment.policy, 'ek-allow-list');
  const other = await listed.enroller.begin(host('edge-2').request, T0);
  assert.equal(!other.ok && other.rejection.code, 'EK_NOT_ALLOWED');

  const { enroller } = setup();
  const c1 = await challengeFor(enroller, h.request);
  assert.ok(
    enroller.answer({ hostId: 'edge-1', challengeId: c1.challengeId, secret: h.activate(c1) }, T0).ok,
  );
  const sameEk = await challengeFor(enroller, host('edge-1', h.tpm).request, T0 + 1);
  assert.equal(sameEk.hostId, 'edge-1');
  const swapped = await enroller.begin(host('edge-1').request, T0 + 2);
  assert.equal(!swapped.ok && swapped.rejection.code, 'EK_CHANGED');
});

test('an EK certificate is checked, recorded, and a bad one is never downgraded to TOFU', async () => {
  const { enroller } = setup();
  const tpm = new SoftTpm('rsa');
  const cert = await makeCert({
    publicKey: tpm.ek.publicKey,
    issuer: vendor.intermediate,
    keyUsage: KU.keyEncipherment,
  });
  const h = host('pki-1', tpm, cert.der);
  const c = await challengeFor(enroller, h.request, Date.now());
  const ok = enroller.answer(
    { hostId: 'pki-1', challengeId: c.challengeId, secret: h.activate(c) },
    Date.now(),
  );
  assert.ok(ok.ok);
  assert.equal(ok.enrollment.policy, 'ek-cert');
  assert.ok(ok.enrollment.ekCertificate !== null && bytesEqual(ok.enrollment.ekCertificate, cert.der));

  const rogue = await makeCaPair('rogue');
  const forged = await makeCert({
    publicKey: tpm.ek.publicKey,
    issuer: rogue.intermediate,
    keyUsage: KU.keyEncipherment,
  });
  const out = await enroller.begin(host('pki-2', tpm, forged.der).request, Date.now());
  assert.equal(!out.ok && out.rejection.code, 'EK_CERT_UNTRUSTED_ISSUER');
});

test('a host stays bound to its first EK under the certificate policy too; an operator rebinds it', async () => {
  const certified = async () => {
    const tpm = new SoftTpm('rsa');
    const cert = await makeCert({
      publicKey: tpm.ek.publicKey,
      issuer: vendor.intermediate,
      keyUsage: KU.keyEncipherment,
    });
    return { tpm, cert: cert.der };
  };
  const strict: EkPolicy = { trustStore, withoutCertificate: 'reject', allowList: new Set() };
  const registry = new EnrolmentRegistry();
  const enrol = async (enroller: Enroller, h: ReturnType<typeof host>) => {
    const c = await challengeFor(enroller, h.request, Date.now());
    const out = enroller.answer(
      { hostId: h.request.hostId, challengeId: c.challengeId, secret: h.activate(c) },
      Date.now(),
    );
    assert.ok(out.ok);
    return out.enrollment;
  };
  const mine = await certified();
  await enrol(new Enroller({ ekPolicy: strict }, registry), host('bound-1', mine.tpm, mine.cert));

  // Another genuine, certified TPM claiming the same host: refused, the enrolment stays.
  const other = await certified();
  const claim = host('bound-1', other.tpm, other.cert);
  const refused = await new Enroller({ ekPolicy: strict }, registry).begin(claim.request, Date.now());
  assert.equal(!refused.ok && refused.rejection.code, 'EK_CHANGED');
  assert.ok(bytesEqual(registry.get('bound-1')!.ekPublic.subarray(2), mine.tpm.ekPublic));
  // The same TPM re-enrols (a new AK) as before.
  await enrol(new Enroller({ ekPolicy: strict }, registry), host('bound-1', mine.tpm, mine.cert));

  // The operator's rebind entry names the new EK: only that one moves the host.
  const rebind = new Map([['bound-1', ekKeyHash(parsePublic(other.tpm.ekPublic).key)]]);
  const moved = await enrol(new Enroller({ ekPolicy: { ...strict, rebind } }, registry), claim);
  assert.ok(bytesEqual(moved.ekPublic.subarray(2), other.tpm.ekPublic));
  const third = await certified();
  const stray = await new Enroller({ ekPolicy: { ...strict, rebind } }, registry).begin(
    host('bound-1', third.tpm, third.cert).request,
    Date.now(),
  );
  assert.equal(!stray.ok && stray.rejection.code, 'EK_CHANGED');
});

test('a revoked host is refused, with its own EK too, until an operator rebinds it', async () => {
  const { registry, enroller } = setup();
  const h = host('gone-1');
  const c = await challengeFor(enroller, h.request);
  const ok = enroller.answer({ hostId: 'gone-1', challengeId: c.challengeId, secret: h.activate(c) }, T0);
  assert.ok(ok.ok);
  registry.apply({ ...ok.enrollment, status: 'revoked', at: T0 + 1 });

  const back = await enroller.begin(h.request, T0 + 2);
  assert.equal(!back.ok && back.rejection.code, 'HOST_REVOKED');
  const elsewhere = await enroller.begin(host('gone-1').request, T0 + 2);
  assert.equal(!elsewhere.ok && elsewhere.rejection.code, 'HOST_REVOKED');

  const rebind = new Map([['gone-1', ekKeyHash(parsePublic(h.tpm.ekPublic).key)]]);
  const readmitted = new Enroller({ ekPolicy: { ...tofu, rebind } }, registry);
  await challengeFor(readmitted, h.request, T0 + 3);
});

test('the number of outstanding challenges is bounded', async () => {
  const { enroller } = setup({ maxChallenges: 2 });
  await challengeFor(enroller, host('a').request);
  await challengeFor(enroller, host('b').request);
  const third = await enroller.begin(host('c').request, T0);
  assert.equal(!third.ok && third.rejection.code, 'TOO_MANY_PENDING');
  // after expiry the slots free up
  await challengeFor(enroller, host('c').request, T0 + 3 * 60_000);
});

test('quotes: UNKNOWN_AK for an unenrolled host or another AK; ok for the enrolled one', async () => {
  const { registry, enroller } = setup();
  const h = host('q-1');
  const someName = Uint8Array.of(0, 0x0b, ...new Uint8Array(32));
  assert.equal(checkQuoteAk(registry, 'q-1', someName).ok, false);
  const c = await challengeFor(enroller, h.request);
  assert.ok(enroller.answer({ hostId: 'q-1', challengeId: c.challengeId, secret: h.activate(c) }, T0).ok);
  const good = checkQuoteAk(registry, 'q-1', c.akName);
  assert.ok(good.ok);
  const wrong = checkQuoteAk(registry, 'q-1', someName);
  assert.equal(!wrong.ok && wrong.code, 'UNKNOWN_AK');
  const elsewhere = checkQuoteAk(registry, 'q-2', c.akName);
  assert.equal(!elsewhere.ok && elsewhere.code, 'UNKNOWN_AK');
  registry.apply({ ...good.enrollment, status: 'revoked', at: T0 + 5 });
  const revoked = checkQuoteAk(registry, 'q-1', c.akName);
  assert.equal(!revoked.ok && revoked.code, 'UNKNOWN_AK');
  registry.apply({ ...good.enrollment, at: T0 + 1 });
  assert.equal(registry.get('q-1')?.status, 'revoked', 'an older record does not win');
});

test('random request bytes are refused as verdicts, never thrown', async () => {
  const { enroller } = setup();
  const h = host('fuzz');
  for (let i = 0; i < 200; i++) {
    const size = Math.floor(Math.random() * 400);
    const junk = new Uint8Array(size).map(() => Math.floor(Math.random() * 256));
    // Keep the type and a plausible TPM2B size so the parser gets past the first bytes sometimes.
    if (size > 4 && i % 2 === 0) junk.set([(size - 2) >> 8, (size - 2) & 0xff, 0, 0x23], 0);
    const which = i % 3;
    const request = {
      ...h.request,
      ekPublic: which === 0 ? junk : h.request.ekPublic,
      akPublic: which === 1 ? junk : h.request.akPublic,
      ekCertificate: which === 2 ? junk : null,
    };
    const out = await enroller.begin(request, T0);
    assert.equal(out.ok, false);
  }
});

test('TOFU refuses every EK for a host whose stored EK no longer parses', async () => {
  const { registry, enroller } = setup();
  const h = host('odd');
  const c = await challengeFor(enroller, h.request);
  const ok = enroller.answer({ hostId: 'odd', challengeId: c.challengeId, secret: h.activate(c) }, T0);
  assert.ok(ok.ok);
  registry.apply({ ...ok.enrollment, ekPublic: Uint8Array.of(0), at: T0 + 1 });
  const again = await enroller.begin(h.request, T0 + 2);
  assert.equal(!again.ok && again.rejection.code, 'EK_CHANGED');
});

test('an ECC EK on an unsupported curve or off its curve is EK_UNSUPPORTED under every policy, not a throw', async () => {
  // TPMT_PUBLIC of an ECC EK with the given curve and point (parses: only the key is wrong).
  const eccEk = (curve: number, x: Uint8Array, y: Uint8Array) =>
    concat(
      ...[u16be(0x0023), u16be(0x000b), u32be(EK_ATTRIBUTES), u16be(0), AES_128_CFB, u16be(0x0010)],
      ...[u16be(curve), u16be(0x0010), u16be(x.length), x, u16be(y.length), y],
    );
  const bnCurve = eccEk(0x0010, new Uint8Array(32).fill(1), new Uint8Array(32).fill(2));
  const offCurve = eccEk(0x0003, new Uint8Array(32).fill(1), new Uint8Array(32).fill(2));
  const tooLong = eccEk(0x0003, new Uint8Array(80).fill(1), new Uint8Array(32).fill(2));
  for (const withoutCertificate of ['reject', 'allow-list', 'tofu'] as const) {
    const { enroller } = setup({ ekPolicy: { trustStore: null, withoutCertificate, allowList: new Set() } });
    for (const ekPublic of [bnCurve, offCurve, tooLong]) {
      const out = await enroller.begin({ ...host('odd-ek').request, ekPublic }, T0);
      assert.equal(!out.ok && out.rejection.code, 'EK_UNSUPPORTED', withoutCertificate);
    }
    assert.equal(enroller.pendingCount, 0);
  }
});
