import assert from 'node:assert/strict';
import { createHash, createPrivateKey, createPublicKey, randomBytes, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import * as pkijs from 'pkijs';
import { bytesEqual } from '../../lib/bytes/hex.ts';
import { type EkPolicy, ekKeyHash } from '../../lib/enrol/ek-policy.ts';
import { Enroller } from '../../lib/enrol/enroller.ts';
import { checkQuoteAk, EnrolmentRegistry, expectedQualifiedSigner } from '../../lib/enrol/registry.ts';
import type { EnrolRequest } from '../../lib/enrol/types.ts';
import { hasCode } from '../../lib/errors.ts';
import { parseAttest } from '../../lib/tpm/attest.ts';
import { type TrustStore, trustStoreFromCertificates, verifyEkCertificate } from '../../lib/tpm/ek-cert.ts';
import { toJwk } from '../../lib/tpm/key.ts';
import { objectName } from '../../lib/tpm/name.ts';
import { type PublicKey, parsePublic } from '../../lib/tpm/public.ts';
import { DAY, type Issuer, KU, makeCaPair, makeCert } from '../helpers/enrol-certs.ts';
import { activateCredential, EnrolTpm } from '../helpers/enrol-tpm.ts';
import { Swtpm } from '../helpers/swtpm.ts';

/*
 * Enrolment end to end against a manufactured swtpm (swtpm_setup --create-ek-cert with a local
 * CA in a temp dir): the agent's side is real tpm2-tools on the TPM, the enroller's side is
 * lib/enrol. Nothing is mocked; the second TPM is a second swtpm.
 */

const RSA_EK = '0x81010001';
const ECC_EK = '0x81010016';

let tpm: EnrolTpm;
let store: TrustStore;
let rsaEk: Uint8Array;
let rsaEkKey: PublicKey;
let ak: { context: string; public: Uint8Array };

before(async () => {
  tpm = await EnrolTpm.manufactured();
  store = await trustStoreFromCertificates(await tpm.caCertificates());
  rsaEk = await tpm.readPublic(RSA_EK);
  rsaEkKey = parsePublic(rsaEk).key;
  ak = await tpm.createAk(RSA_EK);
});
after(() => tpm?.stop());

const policy = (): EkPolicy => ({ trustStore: store, withoutCertificate: 'reject', allowList: new Set() });

/** The genuine swtpm-localca intermediate with its signing key, to issue bad certificates for the real EK. */
async function localCa(): Promise<Issuer> {
  const der = new Uint8Array(new X509Certificate(await readFile(join(tpm.dir, 'ca', 'issuercert.pem'))).raw);
  const privateKey = createPrivateKey(await readFile(join(tpm.dir, 'ca', 'signkey.pem')));
  return { der, cert: pkijs.Certificate.fromBER(der), privateKey };
}

const keyObject = (key: PublicKey) => createPublicKey({ key: toJwk(key), format: 'jwk' });

test('the EK certificates in NV chain to the local CA and certify the EKs', async () => {
  const rsa = await verifyEkCertificate(await tpm.ekCertificate('rsa'), rsaEkKey, store, new Date());
  assert.equal(rsa.code, 'EK_CERT_OK', rsa.message);
  assert.deepEqual(rsa.chain.slice(1), ['CN=swtpm-localca', 'CN=swtpm-localca-rootca']);
  assert.deepEqual(rsa.tpm, { manufacturer: 'id:00001014', model: 'swtpm', version: 'id:20191023' });
  const eccKey = parsePublic(await tpm.readPublic(ECC_EK)).key;
  const ecc = await verifyEkCertificate(await tpm.ekCertificate('ecc'), eccKey, store, new Date());
  assert.equal(ecc.code, 'EK_CERT_OK', ecc.message);
  const swapped = await verifyEkCertificate(await tpm.ekCertificate('ecc'), rsaEkKey, store, new Date());
  assert.equal(swapped.code, 'EK_CERT_KEY_MISMATCH');
});

test('the allow-list hash is sha256 of the DER public key tpm2-tools writes', async () => {
  const der = tpm.file('ek.der');
  await tpm.run('tpm2_readpublic', ['-c', RSA_EK, '-f', 'der', '-o', der]);
  const expected = createHash('sha256')
    .update(await readFile(der))
    .digest('hex');
  assert.equal(ekKeyHash(rsaEkKey), expected);
});

test('expired, wrong-issuer and self-signed certificates for the real EK get their codes', async () => {
  const now = Date.now();
  const expired = await makeCert({
    publicKey: keyObject(rsaEkKey),
    issuer: await localCa(),
    keyUsage: KU.keyEncipherment,
    notBefore: new Date(now - 400 * DAY),
    notAfter: new Date(now - DAY),
  });
  assert.equal((await verifyEkCertificate(expired.der, rsaEkKey, store, new Date())).code, 'EK_CERT_EXPIRED');

  const rogue = await makeCaPair('rogue vendor');
  const wrongIssuer = await makeCert({
    publicKey: keyObject(rsaEkKey),
    issuer: rogue.intermediate,
    keyUsage: KU.keyEncipherment,
  });
  const v = await verifyEkCertificate(wrongIssuer.der, rsaEkKey, store, new Date());
  assert.equal(v.code, 'EK_CERT_UNTRUSTED_ISSUER');

  const selfSigned = await makeCert({ cn: 'swtpm-localca', keyUsage: KU.keyEncipherment });
  assert.equal(
    (await verifyEkCertificate(selfSigned.der, rsaEkKey, store, new Date())).code,
    'EK_CERT_SELF_SIGNED',
  );
});

test('enrolment: the TPM activates the credential, the AK is enrolled once, replay refused', async () => {
  const registry = new EnrolmentRegistry();
  const enroller = new Enroller({ ekPolicy: policy() }, registry);
  const request: EnrolRequest = {
    hostId: 'host-a',
    ekPublic: rsaEk,
    ekCertificate: await tpm.ekCertificate('rsa'),
    akPublic: ak.public,
  };
  const begun = await enroller.begin(request, Date.now());
  assert.ok(begun.ok, !begun.ok ? begun.rejection.message : '');
  const { challenge } = begun;

  const secret = await tpm.activate(RSA_EK, ak.context, challenge.credential, 'policy');
  const answer = { hostId: 'host-a', challengeId: challenge.challengeId, secret };
  const done = enroller.answer(answer, Date.now());
  assert.ok(done.ok, !done.ok ? done.rejection.message : '');
  assert.equal(done.enrollment.policy, 'ek-cert');
  assert.equal(done.enrollment.status, 'active');
  assert.ok(bytesEqual(done.enrollment.akPublic, ak.public), 'AK stored as the TPM2B_PUBLIC the tool wrote');

  const replay = enroller.answer(answer, Date.now());
  assert.equal(!replay.ok && replay.rejection.code, 'CHALLENGE_REPLAYED');
  assert.equal(registry.get('host-a')?.at, done.enrollment.at);
});

test("an AK from another TPM cannot be enrolled under this TPM's EK", async (t) => {
  const other = await Swtpm.start();
  t.after(() => other.stop());
  const otherEk = await other.createEk({ alg: 'rsa' });
  const otherAk = await other.createAk(otherEk, { scheme: 'rsassa' });

  const registry = new EnrolmentRegistry();
  const enroller = new Enroller({ ekPolicy: policy() }, registry);
  // A genuine EK and certificate (public data), paired with an AK that lives elsewhere.
  const request = {
    hostId: 'mallory',
    ekPublic: rsaEk,
    ekCertificate: await tpm.ekCertificate('rsa'),
    akPublic: otherAk.public,
  };
  const begun = await enroller.begin(request, Date.now());
  assert.ok(begun.ok);
  const { credential, challengeId } = begun.challenge;

  // The TPM with the EK has no object of that Name; the TPM with the AK has not got the EK.
  await assert.rejects(tpm.activate(RSA_EK, ak.context, credential, 'policy'), (e) =>
    hasCode(e, 'IMS_TOOL_FAILED'),
  );
  await assert.rejects(
    activateCredential(other.tools, otherEk.handle, otherAk.context, credential, 'policy'),
    (e) => hasCode(e, 'IMS_TOOL_FAILED'),
  );
  const guess = enroller.answer({ hostId: 'mallory', challengeId, secret: randomBytes(32) }, Date.now());
  assert.equal(!guess.ok && guess.rejection.code, 'WRONG_SECRET');
  assert.equal(registry.get('mallory'), undefined);
});

test("an unenrolled AK's quote is UNKNOWN_AK; the enrolled AK's quote is vouched for", async (t) => {
  const blank = await Swtpm.start();
  t.after(() => blank.stop());
  const ek = await blank.createEk({ alg: 'rsa' });
  const enrolledAk = await blank.createAk(ek, { scheme: 'ecdsa' });
  const strayAk = await blank.createAk(ek, { scheme: 'ecdsa' });

  const registry = new EnrolmentRegistry();
  const tofu: EkPolicy = { trustStore: store, withoutCertificate: 'tofu', allowList: new Set() };
  const enroller = new Enroller({ ekPolicy: tofu }, registry);
  const begun = await enroller.begin(
    { hostId: 'host-b', ekPublic: ek.public, ekCertificate: null, akPublic: enrolledAk.public },
    Date.now(),
  );
  assert.ok(begun.ok);
  const secret = await activateCredential(
    blank.tools,
    ek.handle,
    enrolledAk.context,
    begun.challenge.credential,
    'policy',
  );
  const done = enroller.answer(
    { hostId: 'host-b', challengeId: begun.challenge.challengeId, secret },
    Date.now(),
  );
  assert.ok(done.ok);
  assert.equal(done.enrollment.policy, 'tofu');

  const nonce = randomBytes(16);
  const stray = await blank.quote(strayAk, { selection: 'sha256:10', nonce });
  const strayName = objectName(parsePublic(strayAk.public).bytes, 'sha256');
  assert.deepEqual(strayName, strayAk.name);
  const refused = checkQuoteAk(registry, 'host-b', strayName);
  assert.equal(!refused.ok && refused.code, 'UNKNOWN_AK');
  assert.ok(!bytesEqual(parseAttest(stray.attest).qualifiedSigner, expectedQualifiedSigner(done.enrollment)));

  const good = await blank.quote(enrolledAk, { selection: 'sha256:10', nonce });
  const vouched = checkQuoteAk(registry, 'host-b', enrolledAk.name);
  assert.ok(vouched.ok);
  assert.deepEqual(parseAttest(good.attest).qualifiedSigner, expectedQualifiedSigner(vouched.enrollment));
  assert.equal(checkQuoteAk(registry, 'host-unknown', enrolledAk.name).ok, false);
});
