import assert from 'node:assert/strict';
import { constants, generateKeyPairSync, type KeyObject, sign } from 'node:crypto';
import { describe, it } from 'node:test';
import { fromHex } from '../../../lib/bytes/hex.ts';
import { publicFromPem } from '../../../lib/tpm/key.ts';
import { concat, u16be } from '../../../lib/tpm/marshal.ts';
import { verifyQuote } from '../../../lib/tpm/quote.ts';

/**
 * Signatures made here with node:crypto keys over a fixed TPMS_ATTEST, to reach the paths no
 * corpus quote exercises: RSA-PSS with the maximum salt (older firmware TPMs), ECDSA r/s shorter
 * than the curve size, P-384 and P-521.
 */
const ATTEST = fromHex(
  [
    'ff544347', // magic
    '8018', // quote
    '0000', // qualifiedSigner: empty
    '00080011223344556677', // extraData
    '0000000000003030' + '00000001' + '00000000' + '00', // clock, resetCount, restartCount, safe = NO
    '0000000000000001', // firmwareVersion
    '00000001000b03000400', // sha256: PCR 10
    `0020${'00'.repeat(32)}`, // pcrDigest
  ].join(''),
);
const pem = (k: KeyObject) => k.export({ type: 'spki', format: 'pem' }).toString();
const tpm2b = (b: Uint8Array) => concat(u16be(b.byteLength), b);
const rsaSig = (alg: number, sig: Uint8Array) => concat(u16be(alg), fromHex('000b'), tpm2b(sig));

describe('verifyQuote with node:crypto signatures', () => {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });

  it('RSA-PSS verifies with salt = hash length and with the maximum salt, not with another', async () => {
    const akPublic = publicFromPem(pem(rsa.publicKey));
    for (const [saltLength, ok] of [
      [32, true],
      [constants.RSA_PSS_SALTLEN_MAX_SIGN, true],
      [20, false],
    ] as const) {
      const sig = sign('sha256', ATTEST, {
        key: rsa.privateKey,
        padding: constants.RSA_PKCS1_PSS_PADDING,
        saltLength,
      });
      const v = await verifyQuote({ attest: ATTEST, signature: rsaSig(0x0016, sig), akPublic });
      assert.equal(v.ok, ok, `salt ${saltLength}`);
      if (!ok)
        assert.deepEqual(
          v.failures.map((f) => f.code),
          ['QUOTE_BAD_SIGNATURE'],
        );
    }
  });

  it('RSA-PSS with a key too small for the hash is a bad signature, not an exception', async () => {
    // 512-bit key, SHA-512: emLen 64 < hLen 64 + 2, so no salt fits; WebCrypto would throw.
    const small = generateKeyPairSync('rsa', { modulusLength: 512 });
    const akPublic = publicFromPem(pem(small.publicKey));
    const signature = concat(u16be(0x0016), fromHex('000d'), tpm2b(new Uint8Array(64).fill(1)));
    const v = await verifyQuote({ attest: ATTEST, signature, akPublic });
    assert.deepEqual(
      v.failures.map((f) => f.code),
      ['QUOTE_BAD_SIGNATURE'],
    );
  });

  it('RSASSA over the same message verifies; as RSAPSS it does not', async () => {
    const akPublic = publicFromPem(pem(rsa.publicKey));
    const sig = sign('sha256', ATTEST, rsa.privateKey);
    assert.equal((await verifyQuote({ attest: ATTEST, signature: rsaSig(0x0014, sig), akPublic })).ok, true);
    assert.equal((await verifyQuote({ attest: ATTEST, signature: rsaSig(0x0016, sig), akPublic })).ok, false);
  });

  for (const [curve, size, hash, hashId] of [
    ['P-256', 32, 'sha256', '000b'],
    ['P-384', 48, 'sha384', '000c'],
    ['P-521', 66, 'sha512', '000d'],
  ] as const) {
    it(`ECDSA ${curve}: an r one byte short of ${size} is left-padded`, async () => {
      const ec = generateKeyPairSync('ec', { namedCurve: curve });
      const akPublic = publicFromPem(pem(ec.publicKey));
      // Find a signature whose r has a leading zero byte, as a TPM2B r then may be one byte short.
      for (let i = 0; i < 2000; i++) {
        const raw = sign(hash, ATTEST, { key: ec.privateKey, dsaEncoding: 'ieee-p1363' });
        const r = raw.subarray(0, size);
        if (i < 1999 && r[0] !== 0) continue;
        const short = r[0] === 0 ? r.subarray(1) : r;
        const tpmSig = concat(fromHex(`0018${hashId}`), tpm2b(short), tpm2b(raw.subarray(size)));
        const v = await verifyQuote({ attest: ATTEST, signature: tpmSig, akPublic });
        assert.deepEqual(v.failures, []);
        return;
      }
    });
  }
});
