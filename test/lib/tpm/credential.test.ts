import assert from 'node:assert/strict';
import {
  constants,
  createDecipheriv,
  createECDH,
  createHmac,
  generateKeyPairSync,
  type KeyObject,
  privateDecrypt,
} from 'node:crypto';
import { test } from 'node:test';
import fc from 'fast-check';
import { bytesEqual, fromHex } from '../../../lib/bytes/hex.ts';
import { hasCode, isImastreamError } from '../../../lib/errors.ts';
import { digestSize, type HashAlg, hash } from '../../../lib/hash.ts';
import {
  type Credential,
  credentialFile,
  makeCredential,
  parseCredentialFile,
} from '../../../lib/tpm/credential.ts';
import { kdfA, kdfE } from '../../../lib/tpm/kdf.ts';
import { concat, u16be, u32be } from '../../../lib/tpm/marshal.ts';
import { parsePublic, type TpmPublic } from '../../../lib/tpm/public.ts';

/*
 * Unit tests open each credential again in software with the EK's private key, following TCG
 * Part 1, 24 step by step. The TPM itself is the oracle in test/integration/enrol-credential.test.ts.
 */

/** TCG default EK policy: PolicySecret(TPM_RH_ENDORSEMENT). */
const EK_POLICY = fromHex('837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa');
const EK_ATTRIBUTES = 0x000300b2;
const AES_128_CFB = concat(u16be(0x0006), u16be(128), u16be(0x0043));

/*
 * A TPMT_PUBLIC in the TCG EK template shape:
 *   type ‖ nameAlg ‖ attributes u32 ‖ TPM2B authPolicy ‖ symmetric (AES-128-CFB) ‖ scheme NULL ‖
 *   RSA: keyBits ‖ exponent 0 ‖ TPM2B modulus        ECC: curve ‖ kdf NULL ‖ TPM2B x ‖ TPM2B y
 */
function ekPublic(key: KeyObject, opts: { attributes?: number; symmetric?: Uint8Array } = {}): TpmPublic {
  const jwk = key.export({ format: 'jwk' });
  const head = (type: number) =>
    concat(u16be(type), u16be(0x000b), u32be(opts.attributes ?? EK_ATTRIBUTES), u16be(32), EK_POLICY);
  const sym = opts.symmetric ?? AES_128_CFB;
  if (jwk.kty === 'RSA') {
    const n = b64u(jwk.n!);
    return parsePublic(
      concat(head(0x0001), sym, u16be(0x0010), u16be(n.length * 8), u32be(0), u16be(n.length), n),
    );
  }
  const curve = jwk.crv === 'P-256' ? 0x0003 : 0x0004;
  const x = b64u(jwk.x!);
  const y = b64u(jwk.y!);
  return parsePublic(
    concat(
      head(0x0023),
      sym,
      u16be(0x0010),
      u16be(curve),
      u16be(0x0010),
      u16be(x.length),
      x,
      u16be(y.length),
      y,
    ),
  );
}

function b64u(s: string): Uint8Array {
  return new Uint8Array(Buffer.from(s, 'base64url'));
}

/** TPM2_ActivateCredential in software (Part 1, 24.4-24.5); returns the secret or throws. */
function activate(ek: TpmPublic, ekPrivate: KeyObject, akName: Uint8Array, cred: Credential): Uint8Array {
  const alg = ek.nameAlg;
  const encSeed = cred.encryptedSecret.subarray(2);
  const seed =
    ek.key.type === 'rsa' ? rsaSeed(alg, ekPrivate, encSeed) : eccSeed(ek, alg, ekPrivate, encSeed);
  const id = cred.idObject.subarray(2);
  const integritySize = (id[0]! << 8) | id[1]!;
  const integrity = id.subarray(2, 2 + integritySize);
  const encIdentity = id.subarray(2 + integritySize);
  const hmacKey = kdfA(alg, seed, 'INTEGRITY', new Uint8Array(), new Uint8Array(), 8 * digestSize(alg));
  const expected = createHmac(alg, hmacKey).update(encIdentity).update(akName).digest();
  if (!bytesEqual(expected, integrity)) throw new Error('integrity check failed');
  const symKey = kdfA(alg, seed, 'STORAGE', akName, new Uint8Array(), 128);
  const d = createDecipheriv('aes-128-cfb', symKey, Buffer.alloc(16));
  const plain = concat(d.update(encIdentity), d.final());
  const size = (plain[0]! << 8) | plain[1]!;
  assert.equal(plain.length, 2 + size);
  return plain.subarray(2);
}

function rsaSeed(alg: HashAlg, key: KeyObject, encSeed: Uint8Array): Uint8Array {
  const label = Buffer.from('IDENTITY\0');
  return privateDecrypt(
    { key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: alg, oaepLabel: label },
    encSeed,
  );
}

function eccSeed(ek: TpmPublic, alg: HashAlg, key: KeyObject, encSeed: Uint8Array): Uint8Array {
  if (ek.key.type !== 'ecc') throw new Error('not ECC');
  const size = (encSeed[0]! << 8) | encSeed[1]!;
  const x = encSeed.subarray(2, 2 + size);
  const y = encSeed.subarray(4 + size);
  const ecdh = createECDH('prime256v1');
  ecdh.setPrivateKey(b64u(key.export({ format: 'jwk' }).d!));
  const z = ecdh.computeSecret(concat(Uint8Array.of(4), x, y));
  return kdfE(alg, z, 'IDENTITY', x, ek.key.x, 8 * digestSize(alg));
}

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const ecc = generateKeyPairSync('ec', { namedCurve: 'P-256' });
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
  assert.throws(() => activate(ek, rsa.privateKey, OTHER_NAME, cred), /integrity/);
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
