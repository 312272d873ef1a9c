import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fromHex, toHex } from '../../../lib/bytes/hex.ts';
import { hasCode } from '../../../lib/errors.ts';
import { parseAttest } from '../../../lib/tpm/attest.ts';
import { concat } from '../../../lib/tpm/marshal.ts';
import { keylimeBundle } from './corpus.ts';

/** The DOMAIN §4.1 example quote, field by field (pcrDigest shortened to a fixed pattern). */
const HEADER = [
  'ff544347', // magic TPM_GENERATED_VALUE
  '8018', // type QUOTE
  `0022000b${'ab'.repeat(32)}`, // qualifiedSigner: TPM2B_NAME, SHA-256 name
  '00080011223344556677', // extraData: 8-byte nonce
  '0000000000003050', // clock
  '00000001', // resetCount
  '00000000', // restartCount
  '01', // safe
  '2019102300163636', // firmwareVersion
];
const QUOTE_INFO = [
  '00000002', // two banks
  '0004' + '03' + '000400', // sha1: PCR 10
  '000b' + '03' + '010400', // sha256: PCR 0, 10
  `0020${'cd'.repeat(32)}`, // pcrDigest
];
const example = (): Uint8Array => fromHex([...HEADER, ...QUOTE_INFO].join(''));

describe('parseAttest', () => {
  it('reads every field of a multi-bank quote', () => {
    const a = parseAttest(example());
    assert.equal(a.magic, 0xff544347);
    assert.equal(a.type, 0x8018);
    assert.equal(toHex(a.qualifiedSigner), `000b${'ab'.repeat(32)}`);
    assert.equal(toHex(a.extraData), '0011223344556677');
    assert.deepEqual(a.clockInfo, { clock: 0x3050n, resetCount: 1, restartCount: 0, safe: true });
    assert.equal(a.firmwareVersion, 0x2019102300163636n);
    assert.deepEqual(a.quote?.pcrSelection, [
      { bank: 'sha1', pcrs: [10] },
      { bank: 'sha256', pcrs: [0, 10] },
    ]);
    assert.equal(toHex(a.quote!.pcrDigest), 'cd'.repeat(32));
    assert.equal(a.attested, undefined);
  });

  it('keeps the header and raw attested bytes of other types', () => {
    const bytes = fromHex(
      [...HEADER.slice(0, 1), '8017', ...HEADER.slice(2), '0022', 'ee'.repeat(4)].join(''),
    );
    const a = parseAttest(bytes);
    assert.equal(a.type, 0x8017);
    assert.equal(a.quote, undefined);
    assert.equal(toHex(a.attested!), `0022${'ee'.repeat(4)}`);
  });

  it('parses a wrong magic as a field (the verifier reports it)', () => {
    const bytes = example();
    bytes[0] = 0;
    assert.equal(parseAttest(bytes).magic, 0x00544347);
  });

  it('rejects trailing bytes, truncation at every length, and oversized fields', () => {
    const ok = keylimeBundle().attest;
    assert.throws(
      () => parseAttest(concat(ok, Uint8Array.of(0))),
      (e) => hasCode(e, 'IMS_TPM_TRAILING_BYTES'),
    );
    for (let n = 0; n < ok.byteLength; n++) {
      assert.throws(
        () => parseAttest(ok.subarray(0, n)),
        (e) => hasCode(e, 'IMS_TPM_TRUNCATED'),
        `length ${n}`,
      );
    }
    const bigNonce = fromHex([...HEADER.slice(0, 3), `0041${'00'.repeat(65)}`].join(''));
    assert.throws(
      () => parseAttest(bigNonce),
      (e) => hasCode(e, 'IMS_TPM_BAD_ATTEST'),
    );
  });

  it('rejects a safe flag other than YES/NO and a selection over its caps', () => {
    const badSafe = fromHex([...HEADER.slice(0, 7), '02', ...HEADER.slice(8), ...QUOTE_INFO].join(''));
    assert.throws(
      () => parseAttest(badSafe),
      (e) => hasCode(e, 'IMS_TPM_BAD_ATTEST'),
    );
    const manyBanks = fromHex([...HEADER, '00000011'].join(''));
    assert.throws(
      () => parseAttest(manyBanks),
      (e) => hasCode(e, 'IMS_TPM_BAD_PCR_SELECTION'),
    );
    const wideSelect = fromHex([...HEADER, '00000001', '000b', '05', '0000000000', '0000'].join(''));
    assert.throws(
      () => parseAttest(wideSelect),
      (e) => hasCode(e, 'IMS_TPM_BAD_PCR_SELECTION'),
    );
  });
});
