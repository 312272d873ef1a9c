import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { toHex } from '../../../lib/bytes/hex.ts';
import { hasCode } from '../../../lib/errors.ts';
import {
  formatTextPcrs,
  parsePcrFile,
  parseSerializedPcrs,
  parseTextPcrs,
  parseValuesPcrs,
} from '../../../lib/tpm/pcr-file.ts';
import { keylimeBundle, rustKeylime } from './corpus.ts';

describe('serialized PCR files (tpm2_quote -o)', () => {
  it('reads keylime quotepcr.out: SHA-256 PCR 15, 16, 22', () => {
    const values = parseSerializedPcrs(keylimeBundle().pcrFile);
    const bank = values.get('sha256')!;
    assert.deepEqual([...bank.keys()], [15, 16, 22]);
    assert.equal(toHex(bank.get(15)!), '00'.repeat(32));
    assert.equal(toHex(bank.get(16)!), '9dbb22387e019c04da95477333546082ce313152c4a7f8a6e1d5f0c77f4fb6f0');
    assert.equal(toHex(bank.get(22)!), 'ff'.repeat(32));
  });

  it('reads the rust-keylime blob: SHA-1 PCR 16', () => {
    const values = parseSerializedPcrs(rustKeylime().pcrBlob);
    assert.equal(toHex(values.get('sha1')!.get(16)!), '1749fe7b66b2acb66838ba3612a72cacf8938b84');
  });

  it('rejects truncation, trailing bytes and a digest count that disagrees with the selection', () => {
    const file = keylimeBundle().pcrFile;
    for (const n of [0, 10, 131, 135, 140, file.byteLength - 1]) {
      assert.throws(
        () => parseSerializedPcrs(file.subarray(0, n)),
        (e) => hasCode(e, 'IMS_TPM_BAD_PCR_FILE'),
        `n=${n}`,
      );
    }
    assert.throws(
      () => parseSerializedPcrs(new Uint8Array([...file, 0])),
      (e) => hasCode(e, 'IMS_TPM_BAD_PCR_FILE'),
    );
    const fewer = file.slice();
    fewer[136] = 2; // TPML_DIGEST.count 2 for three selected PCRs
    assert.throws(
      () => parseSerializedPcrs(fewer),
      (e) => hasCode(e, 'IMS_TPM_BAD_PCR_FILE'),
    );
    const huge = file.slice();
    huge.set([0xff, 0xff, 0xff, 0xff], 132); // number of TPML_DIGEST
    assert.throws(
      () => parseSerializedPcrs(huge),
      (e) => hasCode(e, 'IMS_TPM_BAD_PCR_FILE'),
    );
  });
});

describe('values and text PCR files', () => {
  const selection = [
    { bank: 'sha1' as const, pcrs: [10] },
    { bank: 'sha256' as const, pcrs: [0, 10] },
  ];
  const bytes = new Uint8Array([
    ...new Uint8Array(20).fill(1),
    ...new Uint8Array(32).fill(2),
    ...new Uint8Array(32).fill(3),
  ]);

  it('values: cut by the selection; a wrong length is an error', () => {
    const values = parseValuesPcrs(bytes, selection);
    assert.equal(values.get('sha256')!.get(10)![0], 3);
    assert.throws(
      () => parseValuesPcrs(bytes.subarray(1), selection),
      (e) => hasCode(e, 'IMS_TPM_BAD_PCR_FILE'),
    );
    assert.throws(
      () => parsePcrFile(bytes, 'values'),
      (e) => hasCode(e, 'IMS_TPM_BAD_PCR_FILE'),
    );
  });

  it('text: round-trips, ignores comments, rejects duplicates and bad sizes', () => {
    const values = parseValuesPcrs(bytes, selection);
    const text = formatTextPcrs(values);
    assert.match(text, /^sha1:10=(01){20}\nsha256:0=(02){32}\nsha256:10=(03){32}\n$/);
    assert.deepEqual(parseTextPcrs(`# from tpm2_pcrread\n\n${text}`), values);
    assert.throws(
      () => parseTextPcrs(`${text}sha1:10=${'00'.repeat(20)}\n`),
      (e) => hasCode(e, 'IMS_TPM_BAD_PCR_FILE'),
    );
    assert.throws(
      () => parseTextPcrs(`sha1:10=${'00'.repeat(32)}`),
      (e) => hasCode(e, 'IMS_TPM_BAD_PCR_FILE'),
    );
    assert.throws(
      () => parseTextPcrs('md5:1=00'),
      (e) => hasCode(e, 'IMS_TPM_BAD_PCR_FILE'),
    );
  });
});
