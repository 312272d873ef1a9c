import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fromHex } from '../../../lib/bytes/hex.ts';
import { hasCode } from '../../../lib/errors.ts';
import { concat } from '../../../lib/tpm/marshal.ts';
import { parseSignature } from '../../../lib/tpm/signature.ts';
import { keylimeBundle, veraison } from './corpus.ts';

describe('parseSignature', () => {
  it('reads RSASSA (keylime) and ECDSA (veraison) signatures', () => {
    const rsa = parseSignature(keylimeBundle().signature);
    assert.ok(rsa.sigAlg === 'rsassa' && rsa.hashAlg === 'sha256' && rsa.sig.byteLength === 256);
    const ec = parseSignature(veraison().signature);
    assert.ok(
      ec.sigAlg === 'ecdsa' && ec.hashAlg === 'sha256' && ec.r.byteLength === 32 && ec.s.byteLength === 32,
    );
  });

  it('reads RSAPSS with the RSASSA layout', () => {
    const sig = keylimeBundle().signature.slice();
    sig[1] = 0x16;
    assert.equal(parseSignature(sig).sigAlg, 'rsapss');
  });

  it('recognises ECDAA, SM2, ECSCHNORR, HMAC and NULL and refuses them with a typed error', () => {
    for (const [id, name] of [
      ['001a', 'ecdaa'],
      ['001b', 'sm2'],
      ['001c', 'ecschnorr'],
      ['0005', 'hmac'],
      ['0010', 'null'],
    ] as const) {
      assert.throws(
        () => parseSignature(fromHex(`${id}000b0001010001`)),
        (e) => hasCode(e, 'IMS_TPM_UNSUPPORTED_ALG') && e.details.sigAlg === name,
      );
    }
  });

  it('rejects an unknown scheme, an unknown hash, oversize and trailing bytes', () => {
    assert.throws(
      () => parseSignature(fromHex('00990004')),
      (e) => hasCode(e, 'IMS_TPM_BAD_SIGNATURE_FORMAT'),
    );
    assert.throws(
      () => parseSignature(fromHex('001400270000')),
      (e) => hasCode(e, 'IMS_TPM_UNSUPPORTED_ALG'),
    );
    assert.throws(
      () => parseSignature(fromHex('0014000b0201')),
      (e) => hasCode(e, 'IMS_TPM_BAD_SIGNATURE_FORMAT'),
    );
    const sig = keylimeBundle().signature;
    assert.throws(
      () => parseSignature(concat(sig, Uint8Array.of(0))),
      (e) => hasCode(e, 'IMS_TPM_TRAILING_BYTES'),
    );
    assert.throws(
      () => parseSignature(sig.subarray(0, 100)),
      (e) => hasCode(e, 'IMS_TPM_TRUNCATED'),
    );
  });
});
