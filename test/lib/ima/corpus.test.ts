import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { parseBinaryLog } from '../../../lib/ima/binary.ts';
import { parseLog } from '../../../lib/ima/parse.ts';
import { CASES, CORPUS, runCase } from './corpus-cases.ts';

function corpus(file: string): Uint8Array {
  return readFileSync(new URL(file, CORPUS));
}

describe('corpus: every README value is reproduced', () => {
  for (const c of CASES) {
    it(c.file, (t) => {
      const r = runCase(c);
      t.diagnostic(JSON.stringify({ file: c.file, expected: c.expected, got: r.got }));
      assert.equal(r.records, c.records, 'records');
      assert.equal(r.violations, c.violations, 'violations');
      assert.deepEqual(r.problems, c.problems, 'problems');
      assert.equal(r.digestMismatches, c.digestMismatches, 'template digest mismatches');
      assert.deepEqual(r.got, c.expected, 'PCR 10 values');
      if (c.readmeRulePadded !== undefined) {
        // The README's padded value holds under its rule (violations as 0xFF × 32) …
        assert.equal(r.readmeRulePadded, c.readmeRulePadded, 'README padded value under its own rule');
        // … which is not the kernel's and evmctl's (0xFF × 20, then zeros): ours must differ.
        assert.notEqual(r.padded, c.readmeRulePadded);
      }
    });
  }
});

describe('corpus: parser details', () => {
  it('ibmtss: custom format strings and every built-in template, in log order', () => {
    const { records, problems } = parseBinaryLog(corpus('ibmtss/imatest.log'));
    assert.deepEqual(problems, []);
    assert.deepEqual(
      records.map((r) => r.templateName),
      [
        'd-ng|sig',
        'n-ng|d-ng',
        'n-ng|sig|d-ng',
        'n-ng|sig',
        'n',
        'sig',
        'ima',
        'ima-ng',
        'ima-sig',
        'ima-modsig',
        'ima-sig',
        'ima-sig',
        'ima-sigv2',
        'ima-buf',
        'evm-sig',
        'ima-ngv2',
        'ima-modsig',
      ],
    );
  });

  it('global-trust-authority ima.bin read with 20-byte digests is reported, not mis-replayed', () => {
    const { records, problems } = parseBinaryLog(corpus('global-trust-authority/ima.bin'));
    assert.equal(records.length, 0);
    assert.equal(problems.length, 1);
    assert.equal(problems[0]!.offset, 0);
    assert.equal(problems[0]!.code, 'IMS_IMA_BAD_TEMPLATE_NAME');
  });

  it('global-trust-authority: ASCII rebuild gives the binary template data byte for byte', () => {
    const bin = parseBinaryLog(corpus('global-trust-authority/ima.bin'), { digestAlg: 'sha256' }).records;
    const txt = parseLog(corpus('global-trust-authority/ima.log')).records;
    assert.equal(txt.length, bin.length);
    for (let i = 0; i < bin.length; i++) {
      assert.deepEqual(Uint8Array.from(txt[i]!.templateData), Uint8Array.from(bin[i]!.templateData));
      assert.deepEqual(Uint8Array.from(txt[i]!.templateDigest), Uint8Array.from(bin[i]!.templateDigest));
    }
  });

  it('tpm2-tss broken file: the overrun is reported at the record start with its PCR 13 intact', () => {
    const { records, problems } = parseBinaryLog(corpus('tpm2-tss/sml-ima-ng-sha1-invalidated.bin'));
    assert.equal(records.length, 0);
    assert.match(problems[0]!.message, /86 bytes after the last whole record \(the record needs 87\)/);
  });
});
