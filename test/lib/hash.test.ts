import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { hasCode } from '../../lib/errors.ts';
import {
  canHash,
  DEFAULT_BANKS,
  digestSize,
  HASH_ALGS,
  hash,
  hashAlgFromKernelName,
  hashAlgFromTpm,
  isHashAlg,
  tpmAlgId,
  webcryptoName,
} from '../../lib/hash.ts';

describe('hash algorithms', () => {
  it('sizes and TPM ids follow the TCG algorithm registry', () => {
    assert.deepEqual(
      HASH_ALGS.map((a) => [a, digestSize(a), tpmAlgId(a)]),
      [
        ['sha1', 20, 0x0004],
        ['sha256', 32, 0x000b],
        ['sha384', 48, 0x000c],
        ['sha512', 64, 0x000d],
        ['sm3', 32, 0x0012],
      ],
    );
    for (const alg of HASH_ALGS) assert.equal(hashAlgFromTpm(tpmAlgId(alg)), alg);
    assert.equal(hashAlgFromTpm(0x0027), undefined); // SHA3-256: not hashed by imastream
  });

  it('kernel names include the retired sm3-256 spelling and nothing outside the table', () => {
    assert.equal(hashAlgFromKernelName('sm3-256'), 'sm3');
    assert.equal(hashAlgFromKernelName('sha256'), 'sha256');
    assert.equal(hashAlgFromKernelName('md5'), undefined);
    assert.equal(hashAlgFromKernelName('__proto__'), undefined);
    assert.equal(isHashAlg('toString'), false);
  });

  it('hash() digests the concatenation of its parts', () => {
    const a = Uint8Array.of(1, 2);
    const b = Uint8Array.of(3);
    for (const alg of ['sha1', 'sha256', 'sha384', 'sha512'] as const) {
      const expected = createHash(alg)
        .update(Uint8Array.of(1, 2, 3))
        .digest();
      assert.deepEqual(Buffer.from(hash(alg, a, b)), expected);
      assert.equal(hash(alg).byteLength, digestSize(alg));
    }
  });

  it('WebCrypto names exist for the SHA family only', () => {
    assert.equal(webcryptoName('sha256'), 'SHA-256');
    assert.throws(
      () => webcryptoName('sm3'),
      (e) => hasCode(e, 'IMS_TPM_UNSUPPORTED_ALG'),
    );
  });

  it('the default banks can be hashed on this Node build', () => {
    assert.deepEqual(DEFAULT_BANKS, ['sha1', 'sha256']);
    for (const alg of DEFAULT_BANKS) assert.equal(canHash(alg), true);
  });
});
