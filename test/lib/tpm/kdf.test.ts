import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fromHex, toHex } from '../../../lib/bytes/hex.ts';
import { hasCode } from '../../../lib/errors.ts';
import { kdfA, kdfE } from '../../../lib/tpm/kdf.ts';

/*
 * Expected values come from OpenSSL 3.0 (Debian 12), an implementation independent of ours:
 *   KDFa = KBKDF (SP800-108 counter mode, HMAC, 32-bit counter, separator and L on):
 *     openssl kdf -keylen 16 -kdfopt digest:SHA256 -kdfopt mac:HMAC -kdfopt hexkey:<key> \
 *       -kdfopt salt:STORAGE -kdfopt hexinfo:<contextU‖contextV> KBKDF
 *   KDFe = SSKDF (SP800-56C one-step, hash): H(counter ‖ Z ‖ FixedInfo), FixedInfo = use‖00‖U‖V:
 *     openssl kdf -keylen 48 -kdfopt digest:SHA256 -kdfopt hexkey:<Z> -kdfopt hexinfo:<…> SSKDF
 * The end-to-end check against a TPM is test/integration/enrol-credential.test.ts.
 */
const KEY = fromHex('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f');
const EMPTY = new Uint8Array(0);

test('KDFa "STORAGE" with a context, one block truncated (AES-128 key)', () => {
  const out = kdfA('sha256', KEY, 'STORAGE', fromHex('000b0102030405'), EMPTY, 128);
  assert.equal(toHex(out), 'b2f5e6ef67ca5c13a538d767931d6dc8');
});

test('KDFa over two blocks, no context', () => {
  const out = kdfA('sha256', KEY, 'INTEGRITY', EMPTY, EMPTY, 320);
  assert.equal(
    toHex(out),
    '5d667f96855df2608a698bfb8824b1268723b3e10f4dd14ced3899b162e3e939c5d5fc375e5a916f',
  );
});

test('KDFa with SHA-384 and both contexts (U ‖ V are concatenated)', () => {
  const out = kdfA('sha384', fromHex('aa'), 'STORAGE', fromHex('000c'), fromHex('11'), 384);
  assert.equal(
    toHex(out),
    'f97a18f7323b9799570a69cfa1f2e46a2d21efe42bb14115e0e43322ccc70ff37c3321b3955355745004652d4de2aa9d',
  );
});

test('a label given with its NUL derives the same as without it', () => {
  const a = kdfA('sha256', KEY, 'STORAGE\0', EMPTY, EMPTY, 128);
  const b = kdfA('sha256', KEY, 'STORAGE', EMPTY, EMPTY, 128);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, kdfA('sha256', KEY, 'STORAGF', EMPTY, EMPTY, 128));
});

test('KDFe "IDENTITY" over 1.5 blocks', () => {
  const z = fromHex('55'.repeat(32));
  const out = kdfE('sha256', z, 'IDENTITY', fromHex('a1'.repeat(32)), fromHex('b2'.repeat(32)), 384);
  assert.equal(
    toHex(out),
    '0ec104fd23ff71ae3ecfe7fe660f71638dc8c79a7c48451c38fb81d538acfa8355092fc70d9e6113610303f7970f6033',
  );
});

test('lengths that are not whole bytes, zero, or huge are refused', () => {
  for (const bits of [0, 7, -8, 1.5, 8 * 1024 * 8 + 8, Number.NaN]) {
    assert.throws(
      () => kdfA('sha256', KEY, 'STORAGE', EMPTY, EMPTY, bits),
      (e) => hasCode(e, 'IMS_TPM_BAD_KDF'),
    );
    assert.throws(
      () => kdfE('sha256', KEY, 'IDENTITY', EMPTY, EMPTY, bits),
      (e) => hasCode(e, 'IMS_TPM_BAD_KDF'),
    );
  }
});

test('labels that are not printable ASCII are refused', () => {
  for (const label of ['STOR\0AGE', 'IDENTITY\0\0', 'é', 'a\n']) {
    assert.throws(
      () => kdfA('sha256', KEY, label, EMPTY, EMPTY, 128),
      (e) => hasCode(e, 'IMS_TPM_BAD_KDF'),
    );
  }
});
