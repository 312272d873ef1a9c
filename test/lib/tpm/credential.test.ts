import assert from 'node:assert/strict';
import type { KeyObject } from 'node:crypto';
import { test } from 'node:test';
import fc from 'fast-check';
import { fromHex } from '../../../lib/bytes/hex.ts';
import { hasCode, isImastreamError } from '../../../lib/errors.ts';
import { hash } from '../../../lib/hash.ts';
import {
  type Credential,
  credentialFile,
  makeCredential,
  parseCredentialFile,
} from '../../../lib/tpm/credential.ts';
import { concat, u16be, u32be } from '../../../lib/tpm/marshal.ts';
import { parsePublic, type TpmPublic } from '../../../lib/tpm/public.ts';
import { ekPublicBytes, SoftTpm } from '../../helpers/enrol-soft-tpm.ts';

/*
 * Unit tests open each credential again in software with the EK's private key, following TCG
 * Part 1, 24 step by step (test/helpers/enrol-soft-tpm.ts). The TPM itself is the oracle in
 * test/integration/enrol-credential.test.ts.
 */

const rsaTpm = new SoftTpm('rsa');
const eccTpm = new SoftTpm('ecc');
const rsa = rsaTpm.ek;
const ecc = eccTpm.ek;

function ekPublic(key: KeyObject, opts: { attributes?: number; symmetric?: Uint8Array } = {}): TpmPublic {
  return parsePublic(ekPublicBytes(key, opts));
}

function activate(ek: TpmPublic, _private: KeyObject, akName: Uint8Array, cred: Credential): Uint8Array {
  return (ek.key.type === 'rsa' ? rsaTpm : eccTpm).activate(ek, akName, cred);
}

const AK_NAME = concat(u16be(0x000b), hash('sha256', new TextEncoder().encode('an AK public area')));
const OTHER_NAME = concat(u16be(0x000b), hash('sha256', new TextEncoder().encode('another AK')));

test('RSA EK: the credential opens with the EK private key and gives the secret back', () => {
  const ek = ekPublic(rsa.publicKey);
  const secret = fromHex('00112233445566778899aabbccddeeff');
  const cred = makeCredential(ek, AK_NAME, secret);
  assert.deepEqual(activate(ek, rsa.privateKey, AK_NAME, cred), secret);
  assert.equal(cred.encryptedSecret.length, 2 + 256);
  // TPM2B_ID_OBJECT = size ‖ TPM2B integrity (32) ‖ encIdentity (2 + 16): 2 + 2 + 32 + 18
  assert.equal(cred.idObject.length, 54);
  assert.equal(credentialFile(cred).length, 320);
});

test('ECC EK: the ephemeral point and KDFe give the same seed to the EK holder', () => {
  const ek = ekPublic(ecc.publicKey);
  const secret = fromHex('0102030405060708090a0b0c0d0e0f10');
  const cred = makeCredential(ek, AK_NAME, secret);
  assert.deepEqual(activate(ek, ecc.privateKey, AK_NAME, cred), secret);
  // TPMS_ECC_POINT: 0020 ‖ x ‖ 0020 ‖ y
  assert.equal(cred.encryptedSecret.length, 2 + 2 + 32 + 2 + 32);
});

test('a credential made for one AK name fails its integrity check for another', () => {
  const ek = ekPublic(rsa.publicKey);
  const cred = makeCredential(ek, AK_NAME, fromHex('aa'.repeat(32)));
  assert.throws(() => activate(ek, rsa.privateKey, OTHER_NAME, cred), /INTEGRITY/);
});

test('every secret size from 1 to the digest size round-trips, each time with a fresh seed', () => {
  const ek = ekPublic(ecc.publicKey);
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 1, maxLength: 32 }), (secret) => {
      const a = makeCredential(ek, AK_NAME, secret);
      const b = makeCredential(ek, AK_NAME, secret);
      assert.notDeepEqual(a.encryptedSecret, b.encryptedSecret);
      assert.deepEqual(activate(ek, ecc.privateKey, AK_NAME, a), secret);
    }),
    { numRuns: 40 },
  );
});

test('the credential file round-trips through its parser', () => {
  const cred = makeCredential(ekPublic(rsa.publicKey), AK_NAME, fromHex('42'.repeat(20)));
  const file = credentialFile(cred);
  assert.deepEqual([...file.subarray(0, 8)], [0xba, 0xdc, 0xc0, 0xde, 0, 0, 0, 1]);
  assert.deepEqual(parseCredentialFile(file), cred);
});

test('secrets that are empty or longer than the EK name digest are refused', () => {
  const ek = ekPublic(rsa.publicKey);
  for (const size of [0, 33, 64]) {
    assert.throws(
      () => makeCredential(ek, AK_NAME, new Uint8Array(size)),
      (e) => hasCode(e, 'IMS_TPM_BAD_CREDENTIAL') && e.details.secretSize === size,
    );
  }
});

test('AK names that are handles, truncated or of an unknown algorithm are refused', () => {
  const ek = ekPublic(rsa.publicKey);
  const bad = [
    fromHex('81010002'),
    AK_NAME.subarray(0, 33),
    concat(u16be(0x0099), new Uint8Array(32)),
    new Uint8Array(),
  ];
  for (const name of bad) {
    assert.throws(
      () => makeCredential(ek, name, fromHex('01')),
      (e) => hasCode(e, 'IMS_TPM_BAD_CREDENTIAL'),
    );
  }
});

test('an EK without AES-CFB, or that is not a restricted decryption key, is refused', () => {
  const secret = fromHex('01');
  const nullSym = ekPublic(rsa.publicKey, { symmetric: u16be(0x0010) });
  assert.throws(
    () => makeCredential(nullSym, AK_NAME, secret),
    (e) => hasCode(e, 'IMS_TPM_UNSUPPORTED_ALG'),
  );
  const cbc = ekPublic(rsa.publicKey, { symmetric: concat(u16be(0x0006), u16be(128), u16be(0x0042)) });
  assert.throws(
    () => makeCredential(cbc, AK_NAME, secret),
    (e) => hasCode(e, 'IMS_TPM_UNSUPPORTED_ALG'),
  );
  const signing = ekPublic(rsa.publicKey, { attributes: 0x000500b2 });
  assert.throws(
    () => makeCredential(signing, AK_NAME, secret),
    (e) => hasCode(e, 'IMS_TPM_BAD_EK'),
  );
});

test('an ECC EK whose point is not on the curve is refused', () => {
  const ek = ekPublic(ecc.publicKey);
  if (ek.key.type !== 'ecc') throw new Error('not ECC');
  const y = ek.key.y.slice();
  y[31]! ^= 1;
  const off = { ...ek, key: { ...ek.key, y } };
  assert.throws(
    () => makeCredential(off, AK_NAME, fromHex('01')),
    (e) => hasCode(e, 'IMS_TPM_BAD_PUBLIC'),
  );
});

test('hostile credential files: wrong magic, wrong version, oversize, truncated, trailing', () => {
  const file = credentialFile(makeCredential(ekPublic(rsa.publicKey), AK_NAME, fromHex('01')));
  const cases: [Uint8Array, string][] = [
    [concat(u32be(0xbadcc0df), file.subarray(4)), 'IMS_TPM_BAD_CREDENTIAL'],
    [concat(u32be(0xbadcc0de), u32be(2), file.subarray(8)), 'IMS_TPM_BAD_CREDENTIAL'],
    [concat(file.subarray(0, 8), u16be(0xffff), file.subarray(10)), 'IMS_TPM_BAD_CREDENTIAL'],
    [file.subarray(0, file.length - 1), 'IMS_TPM_TRUNCATED'],
    [concat(file, Uint8Array.of(0)), 'IMS_TPM_TRAILING_BYTES'],
  ];
  for (const [bytes, code] of cases) {
    assert.throws(
      () => parseCredentialFile(bytes),
      (e) => hasCode(e, code as 'IMS_TPM_BAD_CREDENTIAL'),
    );
  }
});

test('random bytes never crash the credential file parser', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => {
      try {
        parseCredentialFile(concat(u32be(0xbadcc0de), u32be(1), bytes));
      } catch (e) {
        assert.ok(isImastreamError(e), String(e));
      }
    }),
    { numRuns: 300 },
  );
});
