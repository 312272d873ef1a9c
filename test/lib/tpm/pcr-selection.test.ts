import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fromHex, toHex } from '../../../lib/bytes/hex.ts';
import { Reader } from '../../../lib/bytes/reader.ts';
import { hasCode } from '../../../lib/errors.ts';
import {
  encodePcrSelection,
  formatSelectionSpec,
  parseSelectionSpec,
  readPcrSelection,
  unknownBanks,
} from '../../../lib/tpm/pcr-selection.ts';

describe('TPML_PCR_SELECTION', () => {
  it('encodes the DOMAIN §4.1 example byte for byte and reads it back', () => {
    const selection = parseSelectionSpec('sha1:10+sha256:0,10');
    const bytes = encodePcrSelection(selection);
    assert.equal(toHex(bytes), '00000002' + '000403000400' + '000b03010400');
    assert.deepEqual(readPcrSelection(new Reader(bytes)), selection);
  });

  it('keeps an unknown bank as its algorithm id and flags it', () => {
    const sel = readPcrSelection(new Reader(fromHex('00000002' + '002703000400' + '000b03ffffff')));
    assert.deepEqual(sel[0], { bank: 0x27, pcrs: [10] });
    assert.deepEqual(sel[1]?.pcrs, [...Array(24).keys()]);
    assert.deepEqual(unknownBanks(sel), [0x27]);
    assert.equal(toHex(encodePcrSelection(sel)), '00000002002703000400000b03ffffff');
  });

  it('accepts sizeofSelect 0..4 (PCR 31 at most) and rejects 5', () => {
    assert.deepEqual(readPcrSelection(new Reader(fromHex('00000001000b00')))[0]?.pcrs, []);
    assert.deepEqual(readPcrSelection(new Reader(fromHex('00000001000b0400000080')))[0]?.pcrs, [31]);
    assert.throws(
      () => readPcrSelection(new Reader(fromHex('00000001000b050000000000'))),
      (e) => hasCode(e, 'IMS_TPM_BAD_PCR_SELECTION'),
    );
    assert.throws(
      () => encodePcrSelection([{ bank: 'sha1', pcrs: [32] }]),
      (e) => hasCode(e, 'IMS_TPM_BAD_PCR_SELECTION'),
    );
  });

  it('caps the bank count at 16 before reading any bank', () => {
    assert.throws(
      () => readPcrSelection(new Reader(fromHex('ffffffff'))),
      (e) => hasCode(e, 'IMS_TPM_BAD_PCR_SELECTION'),
    );
  });
});

describe('selection specs', () => {
  it('parses ranges, sorts and dedupes, and formats back', () => {
    const sel = parseSelectionSpec('sha256:10,0-2,1+sha384:10');
    assert.deepEqual(sel, [
      { bank: 'sha256', pcrs: [0, 1, 2, 10] },
      { bank: 'sha384', pcrs: [10] },
    ]);
    assert.equal(formatSelectionSpec(sel), 'sha256:0,1,2,10+sha384:10');
  });

  it('rejects unknown banks and bad PCR lists', () => {
    for (const spec of ['md5:1', 'sha1', 'sha1:x', 'sha1:5-2', 'sha1:40', 'sha1:1:2']) {
      assert.throws(
        () => parseSelectionSpec(spec),
        (e) => hasCode(e, 'IMS_TPM_BAD_PCR_SELECTION'),
        spec,
      );
    }
  });
});
