import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { describe, it } from 'node:test';
import { fromHex, toHex } from '../../../lib/bytes/hex.ts';
import { hasCode } from '../../../lib/errors.ts';
import { publicFromPem, toJwk } from '../../../lib/tpm/key.ts';
import { concat } from '../../../lib/tpm/marshal.ts';
import { attributeNames, checkAkAttributes, parsePublic, parseTpmtPublic } from '../../../lib/tpm/public.ts';
import { goAttestation, keylimeBundle } from './corpus.ts';

/** An ECC P-256 AK public area as tpm2_createak -G ecc -s ecdsa writes it (TPMT_PUBLIC, no prefix). */
function eccAkTpmt(x = new Uint8Array(32).fill(0x11), y = new Uint8Array(32).fill(0x22)): Uint8Array {
  return concat(
    fromHex('0023'), // type ECC
    fromHex('000b'), // nameAlg SHA-256
    fromHex('00050072'), // fixedTPM fixedParent sensitiveDataOrigin userWithAuth restricted sign
    fromHex('0000'), // authPolicy: empty
    fromHex('0010'), // symmetric NULL
    fromHex('0018000b'), // scheme ECDSA / SHA-256
    fromHex('0003'), // curve NIST P-256
    fromHex('0010'), // kdf NULL
    fromHex('0020'),
    x,
    fromHex('0020'),
    y,
  );
}

describe('parsePublic', () => {
  it('reads the keylime AK (TPM2B_PUBLIC): RSA-2048, exponent 0 = 65537, RSASSA/SHA-256', () => {
    const k = keylimeBundle();
    const pub = parsePublic(k.akPub);
    assert.equal(pub.nameAlg, 'sha256');
    assert.equal(pub.objectAttributes, 0x00050072);
    assert.deepEqual(attributeNames(pub.objectAttributes), [
      'fixedTPM',
      'fixedParent',
      'sensitiveDataOrigin',
      'userWithAuth',
      'restricted',
      'sign',
    ]);
    assert.deepEqual(pub.scheme, { scheme: 0x0014, hashAlg: 'sha256' });
    assert.equal(pub.symmetric, null);
    assert.ok(pub.key.type === 'rsa' && pub.key.keyBits === 2048 && pub.key.exponent === 65537);
    assert.equal(pub.bytes.byteLength, k.akPub.byteLength - 2);
    assert.deepEqual(checkAkAttributes(pub), []);
  });

  it('the keylime AK and its PEM have the same JWK', () => {
    const k = keylimeBundle();
    assert.deepEqual(toJwk(parsePublic(k.akPub).key), toJwk(publicFromPem(k.akPem).key));
    assert.equal(toJwk(parsePublic(k.akPub).key).e, 'AQAB');
  });

  it('detects a TPMT_PUBLIC without the size prefix (go-attestation)', () => {
    const pub = parsePublic(goAttestation().akPublic);
    assert.equal(pub.key.type, 'rsa');
    assert.equal(pub.authPolicy.byteLength, 32);
    assert.deepEqual(pub.scheme, { scheme: 0x0014, hashAlg: 'sha1' });
    assert.deepEqual(checkAkAttributes(pub), []);
  });

  it('reads an ECC P-256 AK with and without a prefix', () => {
    const tpmt = eccAkTpmt();
    for (const bytes of [tpmt, concat(Uint8Array.of(0, tpmt.byteLength), tpmt)]) {
      const pub = parsePublic(bytes);
      assert.ok(pub.key.type === 'ecc' && pub.key.curveId === 3);
      assert.deepEqual(pub.scheme, { scheme: 0x0018, hashAlg: 'sha256' });
      assert.equal(pub.kdf, null);
      assert.equal(toHex(pub.bytes), toHex(tpmt));
    }
  });

  it('the PEM of a generated EC P-384 key round-trips through JWK', () => {
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-384' });
    const pem = publicKey.export({ type: 'spki', format: 'pem' }).toString();
    const ak = publicFromPem(pem);
    assert.ok(ak.key.type === 'ecc' && ak.key.curveId === 4);
    assert.deepEqual(toJwk(ak.key), publicKey.export({ format: 'jwk' }));
  });

  it('rejects truncation, trailing bytes, a wrong modulus size and non-asymmetric types with codes', () => {
    const akPub = keylimeBundle().akPub;
    assert.throws(
      () => parsePublic(akPub.subarray(0, 100)),
      (e) => hasCode(e, 'IMS_TPM_TRUNCATED'),
    );
    assert.throws(
      () => parseTpmtPublic(concat(akPub.subarray(2), Uint8Array.of(0))),
      (e) => hasCode(e, 'IMS_TPM_TRAILING_BYTES'),
    );
    const wrongBits = akPub.subarray(2).slice();
    wrongBits.set([0x04, 0x00], 16); // keyBits 1024 with a 256-byte modulus
    assert.throws(
      () => parseTpmtPublic(wrongBits),
      (e) => hasCode(e, 'IMS_TPM_BAD_PUBLIC'),
    );
    assert.throws(
      () => parseTpmtPublic(fromHex('0008000b00000000')),
      (e) => hasCode(e, 'IMS_TPM_UNSUPPORTED_ALG'),
    );
    assert.throws(
      () => publicFromPem('-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----'),
      (e) => hasCode(e, 'IMS_TPM_BAD_PUBLIC'),
    );
  });
});

describe('checkAkAttributes', () => {
  it('flags an EK-like key: decrypt, no sign, no scheme', () => {
    const tpmt = eccAkTpmt();
    tpmt.set(fromHex('000300b2'), 4); // default EK attributes: restricted decrypt, adminWithPolicy
    tpmt.set(fromHex('0010'), 12); // scheme NULL, so its hash goes
    const ek = concat(tpmt.subarray(0, 14), tpmt.subarray(16));
    const problems = checkAkAttributes(parseTpmtPublic(ek)).map((p) => p.code);
    assert.deepEqual(problems, ['AK_MISSING_ATTRIBUTE', 'AK_CAN_DECRYPT', 'AK_NO_SIGNING_SCHEME']);
  });

  it('flags a non-restricted key and an unapproved curve', () => {
    const tpmt = eccAkTpmt();
    tpmt.set(fromHex('00040072'), 4); // sign without restricted
    tpmt.set(fromHex('0001'), 16); // curve P-192
    const problems = checkAkAttributes(parseTpmtPublic(tpmt));
    assert.deepEqual(
      problems.map((p) => p.code),
      ['AK_MISSING_ATTRIBUTE', 'AK_UNAPPROVED_CURVE'],
    );
    assert.match(problems[0]!.message, /restricted/);
  });
});
