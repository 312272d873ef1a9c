import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { toHex } from '../../../lib/bytes/hex.ts';
import { hasCode } from '../../../lib/errors.ts';
import {
  hierarchyQualifiedName,
  objectName,
  qualifiedName,
  qualifiedNameOfChain,
} from '../../../lib/tpm/name.ts';
import { parsePublic } from '../../../lib/tpm/public.ts';
import { keylimeBundle } from './corpus.ts';

describe('names', () => {
  it('the keylime AK Name is 000b ‖ SHA-256(TPMT_PUBLIC) = ak.name', () => {
    const k = keylimeBundle();
    const pub = parsePublic(k.akPub);
    assert.equal(toHex(objectName(pub.bytes, pub.nameAlg)), toHex(k.akName));
  });

  it('qualified names chain hierarchy handle → EK → AK', () => {
    const ek = new Uint8Array([0x00, 0x0b, ...new Uint8Array(32).fill(1)]);
    const ak = new Uint8Array([0x00, 0x0b, ...new Uint8Array(32).fill(2)]);
    assert.equal(toHex(hierarchyQualifiedName('endorsement')), '4000000b');
    const qnEk = qualifiedName(hierarchyQualifiedName('endorsement'), ek);
    const expectedEk = createHash('sha256').update(Buffer.from('4000000b', 'hex')).update(ek).digest('hex');
    assert.equal(toHex(qnEk), `000b${expectedEk}`);
    const expectedAk = createHash('sha256').update(qnEk).update(ak).digest('hex');
    assert.equal(toHex(qualifiedNameOfChain('endorsement', [ek, ak])), `000b${expectedAk}`);
  });

  it('refuses something that is not a Name', () => {
    assert.throws(
      () => qualifiedName(new Uint8Array(4), new Uint8Array(10)),
      (e) => hasCode(e, 'IMS_TPM_BAD_PUBLIC'),
    );
  });
});
