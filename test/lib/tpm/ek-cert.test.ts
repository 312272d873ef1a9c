import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { test } from 'node:test';
import * as pkijs from 'pkijs';
import { hasCode } from '../../../lib/errors.ts';
import { trustStoreFromCertificates, verifyEkCertificate } from '../../../lib/tpm/ek-cert.ts';
import { publicFromSpki } from '../../../lib/tpm/key.ts';
import type { PublicKey } from '../../../lib/tpm/public.ts';
import { type CertOptions, DAY, KU, makeCaPair, makeCert, resign } from '../../helpers/enrol-certs.ts';

const TPM = { manufacturer: 'id:00001014', model: 'swtpm', version: 'id:20191023' };
const NOW = new Date();

const rsaEk = generateKeyPairSync('rsa', { modulusLength: 2048 });
const eccEk = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const keyOf = (k: KeyObject): PublicKey =>
  publicFromSpki(new Uint8Array(k.export({ format: 'der', type: 'spki' }))).key;

const vendor = await makeCaPair('vendor');
const store = await trustStoreFromCertificates([vendor.root.der, vendor.intermediate.der]);

/** An EK certificate from the trusted intermediate, per the EK profile unless overridden. */
function ekCert(over: Partial<CertOptions> = {}) {
  return makeCert({
    publicKey: rsaEk.publicKey,
    issuer: vendor.intermediate,
    keyUsage: KU.keyEncipherment,
    tpm: TPM,
    ...over,
  });
}

test('the trust store sorts self-signed roots from intermediates', () => {
  assert.equal(store.roots.length, 1);
  assert.equal(store.intermediates.length, 1);
});

test('an RSA EK certificate chained through the intermediate to the root is OK', async () => {
  const { der } = await ekCert();
  const v = await verifyEkCertificate(der, keyOf(rsaEk.publicKey), store, NOW);
  assert.equal(v.code, 'EK_CERT_OK', v.message);
  assert.equal(v.ok, true);
  assert.deepEqual(v.chain, ['', 'CN=vendor ca', 'CN=vendor root']);
  assert.deepEqual(v.tpm, TPM);
});

test('an ECC EK certificate needs keyAgreement and is OK with it', async () => {
  const ok = await ekCert({ publicKey: eccEk.publicKey, keyUsage: KU.keyAgreement });
  assert.equal((await verifyEkCertificate(ok.der, keyOf(eccEk.publicKey), store, NOW)).code, 'EK_CERT_OK');
  const bad = await ekCert({ publicKey: eccEk.publicKey, keyUsage: KU.keyEncipherment });
  assert.equal(
    (await verifyEkCertificate(bad.der, keyOf(eccEk.publicKey), store, NOW)).code,
    'EK_CERT_BAD_KEY_USAGE',
  );
});

test('expired and not-yet-valid EK certificates', async () => {
  const old = await ekCert({
    notBefore: new Date(NOW.getTime() - 30 * DAY),
    notAfter: new Date(NOW.getTime() - DAY),
  });
  const v = await verifyEkCertificate(old.der, keyOf(rsaEk.publicKey), store, NOW);
  assert.equal(v.code, 'EK_CERT_EXPIRED');
  assert.equal(v.ok, false);
  const early = await ekCert({ notBefore: new Date(NOW.getTime() + DAY) });
  assert.equal(
    (await verifyEkCertificate(early.der, keyOf(rsaEk.publicKey), store, NOW)).code,
    'EK_CERT_NOT_YET_VALID',
  );
  // the same certificate is fine at a time inside its validity
  const inside = new Date(NOW.getTime() - 10 * DAY);
  assert.equal(
    (await verifyEkCertificate(old.der, keyOf(rsaEk.publicKey), store, inside)).code,
    'EK_CERT_OK',
  );
});

test('an EK certificate from a CA outside the trust store is UNTRUSTED_ISSUER', async () => {
  const rogue = await makeCaPair('rogue');
  const { der } = await ekCert({ issuer: rogue.intermediate });
  assert.equal(
    (await verifyEkCertificate(der, keyOf(rsaEk.publicKey), store, NOW)).code,
    'EK_CERT_UNTRUSTED_ISSUER',
  );
});

test('a certificate naming our intermediate but signed by another key is BAD_SIGNATURE', async () => {
  const impostor = await makeCert({ cn: 'vendor ca', ca: true, keyUsage: KU.keyCertSign });
  const { der } = await ekCert({ issuer: impostor });
  assert.equal(
    (await verifyEkCertificate(der, keyOf(rsaEk.publicKey), store, NOW)).code,
    'EK_CERT_BAD_SIGNATURE',
  );
});

test('a self-signed EK certificate is SELF_SIGNED, even if its key is the EK', async () => {
  const { der } = await makeCert({
    cn: 'my tpm',
    publicKey: rsaEk.publicKey,
    signingKey: rsaEk.privateKey,
    keyUsage: KU.keyEncipherment,
  });
  assert.equal(
    (await verifyEkCertificate(der, keyOf(rsaEk.publicKey), store, NOW)).code,
    'EK_CERT_SELF_SIGNED',
  );
});

test('a genuine certificate for another EK is KEY_MISMATCH', async () => {
  const { der } = await ekCert();
  const other = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey;
  assert.equal((await verifyEkCertificate(der, keyOf(other), store, NOW)).code, 'EK_CERT_KEY_MISMATCH');
  assert.equal(
    (await verifyEkCertificate(der, keyOf(eccEk.publicKey), store, NOW)).code,
    'EK_CERT_KEY_MISMATCH',
  );
});

test('an RSA EK certificate without keyEncipherment, or without key usage, is BAD_KEY_USAGE', async () => {
  for (const keyUsage of [KU.digitalSignature, undefined]) {
    const { der } = await ekCert({ keyUsage });
    assert.equal(
      (await verifyEkCertificate(der, keyOf(rsaEk.publicKey), store, NOW)).code,
      'EK_CERT_BAD_KEY_USAGE',
    );
  }
});

test('an EK certificate that is a CA certificate is IS_CA', async () => {
  const { der } = await ekCert({ ca: true });
  assert.equal((await verifyEkCertificate(der, keyOf(rsaEk.publicKey), store, NOW)).code, 'EK_CERT_IS_CA');
});

test('an expired intermediate makes the path fail with ISSUER_EXPIRED', async () => {
  const lapsed = await makeCaPair('lapsed', {
    notBefore: new Date(NOW.getTime() - 30 * DAY),
    notAfter: new Date(NOW.getTime() - DAY),
  });
  const s = await trustStoreFromCertificates([lapsed.root.der, lapsed.intermediate.der]);
  const { der } = await ekCert({ issuer: lapsed.intermediate });
  assert.equal(
    (await verifyEkCertificate(der, keyOf(rsaEk.publicKey), s, NOW)).code,
    'EK_CERT_ISSUER_EXPIRED',
  );
});

test('an intermediate that is not a CA cannot issue EK certificates', async () => {
  const root = await makeCert({ cn: 'nca root', ca: true, keyUsage: KU.keyCertSign });
  const notCa = await makeCert({ cn: 'nca leafy', ca: false, issuer: root, keyUsage: KU.digitalSignature });
  const s = await trustStoreFromCertificates([root.der, notCa.der]);
  const { der } = await ekCert({ issuer: notCa });
  const v = await verifyEkCertificate(der, keyOf(rsaEk.publicKey), s, NOW);
  assert.equal(v.code, 'EK_CERT_ISSUER_NOT_CA', v.message);
});

test('intermediates are path material, not anchors: without the root the path is untrusted', async () => {
  const s = await trustStoreFromCertificates([vendor.intermediate.der]);
  assert.equal(s.roots.length, 0);
  const { der } = await ekCert();
  assert.equal(
    (await verifyEkCertificate(der, keyOf(rsaEk.publicKey), s, NOW)).code,
    'EK_CERT_UNTRUSTED_ISSUER',
  );
});

test('an unknown critical extension is refused', async () => {
  const { cert } = await ekCert();
  const odd = new pkijs.Extension({
    extnID: '1.2.3.4.5',
    critical: true,
    extnValue: Uint8Array.of(5, 0).buffer,
  });
  cert.extensions = [...(cert.extensions ?? []), odd];
  const der = await resign(cert, vendor.intermediate);
  const v = await verifyEkCertificate(der, keyOf(rsaEk.publicKey), store, NOW);
  assert.equal(v.code, 'EK_CERT_UNKNOWN_CRITICAL_EXTENSION');
});

test('PEM input and NV padding after the DER are accepted; garbage is MALFORMED', async () => {
  const { der } = await ekCert();
  const b64 = Buffer.from(der).toString('base64').replace(/.{64}/g, '$&\n');
  const pem = new TextEncoder().encode(`-----BEGIN CERTIFICATE-----\n${b64}\n-----END CERTIFICATE-----\n`);
  const padded = new Uint8Array(der.length + 300).fill(0xff);
  padded.set(der);
  for (const bytes of [pem, padded]) {
    assert.equal((await verifyEkCertificate(bytes, keyOf(rsaEk.publicKey), store, NOW)).code, 'EK_CERT_OK');
  }
  const bad = [new Uint8Array(0), Uint8Array.of(0x30, 0x03, 1, 2, 3), der.subarray(0, 100)];
  for (const bytes of bad) {
    assert.equal(
      (await verifyEkCertificate(bytes, keyOf(rsaEk.publicKey), store, NOW)).code,
      'EK_CERT_MALFORMED',
    );
  }
});

test('a trust store entry that does not parse is a configuration error', async () => {
  await assert.rejects(
    trustStoreFromCertificates([vendor.root.der, Uint8Array.of(1, 2, 3)]),
    (e) => hasCode(e, 'IMS_ENROL_BAD_TRUST_ANCHOR') && e.details.index === 1,
  );
});

test('corrupted certificates always give a verdict, never an exception', async () => {
  const { der } = await ekCert();
  const rng = (n: number) => Math.floor(Math.random() * n);
  for (let i = 0; i < 60; i++) {
    const bytes = der.slice();
    for (let k = 0; k <= rng(4); k++) bytes[rng(bytes.length)] = rng(256);
    const v = await verifyEkCertificate(bytes, keyOf(rsaEk.publicKey), store, NOW);
    assert.equal(typeof v.code, 'string');
    if (v.ok) assert.equal(v.code, 'EK_CERT_OK');
  }
});

test('cross-signed CAs in the trust store give a verdict, not an endless path search', {
  timeout: 20_000,
}, async () => {
  // R1 and R2 are roots that certify each other (a root rollover): X1 = R1's key under R2,
  // X2 = R2's key under R1. pkijs's path search keeps no visited set and would recurse forever.
  const usage = KU.keyCertSign | KU.cRLSign;
  const k1 = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const k2 = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const self = (cn: string, k: typeof k1) =>
    makeCert({ cn, ca: true, keyUsage: usage, publicKey: k.publicKey, signingKey: k.privateKey });
  const r1 = await self('xs R1', k1);
  const r2 = await self('xs R2', k2);
  const x1 = await makeCert({ cn: 'xs R1', ca: true, keyUsage: usage, publicKey: k1.publicKey, issuer: r2 });
  const x2 = await makeCert({ cn: 'xs R2', ca: true, keyUsage: usage, publicKey: k2.publicKey, issuer: r1 });
  const { der } = await ekCert({ issuer: r1 });

  const both = await trustStoreFromCertificates([r1.der, r2.der, x1.der, x2.der]);
  assert.equal(both.roots.length, 2);
  const ok = await verifyEkCertificate(der, keyOf(rsaEk.publicKey), both, NOW);
  assert.equal(ok.code, 'EK_CERT_OK', ok.message);
  assert.deepEqual(ok.chain, ['', 'CN=xs R1']);

  // The same loop with neither of its roots trusted: refused.
  const other = await makeCaPair('xs other');
  const loopOnly = await trustStoreFromCertificates([other.root.der, x1.der, x2.der]);
  const v = await verifyEkCertificate(der, keyOf(rsaEk.publicKey), loopOnly, NOW);
  assert.equal(v.code, 'EK_CERT_UNTRUSTED_ISSUER', v.message);
});
