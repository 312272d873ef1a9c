import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import {
  BinaryLogParser,
  buildImaBuf,
  buildImaNg,
  buildImaSig,
  encodeBinaryRecord,
  parseBinaryLog,
} from '../../../lib/ima/binary.ts';
import { checkTemplateDigest } from '../../../lib/ima/check.ts';
import { decodePrefixedDigest, decodeSignatureHeader, nameBytes } from '../../../lib/ima/fields.ts';
import type { ImaRecord } from '../../../lib/ima/record.ts';
import { generateLog } from '../../../lib/ima/synthetic.ts';
import { splitFields } from '../../../lib/ima/templates.ts';
import { CORPUS } from './corpus-cases.ts';

const plain = (r: ImaRecord) => ({
  ...r,
  templateDigest: Uint8Array.from(r.templateDigest),
  templateData: Uint8Array.from(r.templateData),
});

/** Record header for hand-made hostile input: u32 pcr | digest[20] | u32 name_len | name. */
function header(pcr: number, name: string, nameLen = name.length): Uint8Array {
  const out = new Uint8Array(4 + 20 + 4 + name.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, pcr, true);
  out.fill(0x5a, 4, 24);
  v.setUint32(24, nameLen, true);
  out.set(Buffer.from(name, 'latin1'), 28);
  return out;
}
const u32le = (n: number) => new Uint8Array(new Uint32Array([n]).buffer);
const cat = (...parts: Uint8Array[]) => new Uint8Array(Buffer.concat(parts));

describe('binary log parser', () => {
  it('parses what the encoder writes, offsets included', () => {
    const { records, bytes } = generateLog({ records: 200, seed: 3, violations: [5] });
    const parsed = parseBinaryLog(bytes);
    assert.deepEqual(parsed.problems, []);
    assert.equal(parsed.byteOrder, 'le');
    assert.deepEqual(parsed.records.map(plain), records.map(plain));
    for (const r of parsed.records) assert.equal(checkTemplateDigest(r, 'sha1'), undefined);
  });

  it('gives the same records whatever the chunk sizes, down to one byte', () => {
    const { bytes } = generateLog({ records: 40, seed: 9 });
    const whole = parseBinaryLog(bytes).records.map(plain);
    for (const size of [1, 2, 7, 64, 1000]) {
      const parser = new BinaryLogParser();
      const got: ImaRecord[] = [];
      for (let at = 0; at < bytes.byteLength; at += size)
        got.push(...parser.push(bytes.subarray(at, at + size)));
      assert.deepEqual(parser.finish(), []);
      assert.deepEqual(got.map(plain), whole, `chunks of ${size}`);
    }
  });

  it('reads big-endian logs, sniffed or told', () => {
    const { records, bytes } = generateLog({ records: 30, seed: 4, byteOrder: 'be' });
    const sniffed = parseBinaryLog(bytes);
    assert.equal(sniffed.byteOrder, 'be');
    assert.deepEqual(sniffed.problems, []);
    assert.deepEqual(sniffed.records.map(plain), records.map(plain));
    assert.deepEqual(parseBinaryLog(bytes, { byteOrder: 'be' }).records.length, 30);
    // read as LE it stops at once
    const wrong = parseBinaryLog(bytes, { byteOrder: 'le' });
    assert.equal(wrong.records.length, 0);
    assert.equal(wrong.problems[0]!.code, 'IMS_IMA_BAD_PCR');
  });

  it('reads per-bank files with the bank digest size', () => {
    const { records, bytes } = generateLog({ records: 10, seed: 5, digestAlg: 'sha384' });
    const parsed = parseBinaryLog(bytes, { digestAlg: 'sha384' });
    assert.deepEqual(parsed.problems, []);
    assert.equal(parsed.records[3]!.templateDigest.byteLength, 48);
    assert.deepEqual(parsed.records.map(plain), records.map(plain));
  });

  it('builds ima-ng, ima-sig and ima-buf data the field decoders read back', () => {
    const digest = new Uint8Array(32).fill(7);
    const sig = cat(Uint8Array.of(3, 2, 4, 0xde, 0xad, 0xbe, 0xef, 0, 2), Uint8Array.of(1, 2));
    const ngFields = splitFields(
      buildImaNg({ alg: 'sha256', digest, name: '/bin/sh' }),
      2,
      true,
    ) as Uint8Array[];
    assert.deepEqual(decodePrefixedDigest(ngFields[0]!), { alg: 'sha256', digest });
    assert.equal(Buffer.from(nameBytes(ngFields[1]!)).toString(), '/bin/sh');
    const sigFields = splitFields(
      buildImaSig({ alg: 'sha256', digest, name: 'x', sig }),
      3,
      true,
    ) as Uint8Array[];
    assert.deepEqual(decodeSignatureHeader(sigFields[2]!), {
      type: 3,
      version: 2,
      hashAlgo: 4,
      keyId: 0xdeadbeef,
      sigSize: 2,
    });
    const buf = Buffer.from('6.1.0');
    const bufFields = splitFields(
      buildImaBuf({ alg: 'sha256', digest, name: 'kernel_version', buf }),
      3,
      true,
    );
    assert.deepEqual((bufFields as Uint8Array[])[2], Uint8Array.from(buf));
  });
});

describe('binary log parser: hostile input stops with a problem at its offset', () => {
  const good = generateLog({ records: 3, seed: 1 });
  const end = good.bytes.byteLength;
  const cases: [string, Uint8Array, string][] = [
    ['PCR index 24', header(24, 'ima-ng'), 'IMS_IMA_BAD_PCR'],
    ['empty template name', header(10, '', 0), 'IMS_IMA_BAD_TEMPLATE_NAME'],
    ['template name length 256', header(10, 'x', 256), 'IMS_IMA_BAD_TEMPLATE_NAME'],
    ['template name length near 2^32', header(10, 'x', 0xffff_fff0), 'IMS_IMA_BAD_TEMPLATE_NAME'],
    ['template name with a space', header(10, 'ima ng'), 'IMS_IMA_BAD_TEMPLATE_NAME'],
    [
      'template data length near 2^32',
      cat(header(10, 'ima-ng'), u32le(0xffff_fff0)),
      'IMS_IMA_BAD_TEMPLATE_DATA',
    ],
    ['template data length 64 KiB + 1', cat(header(10, 'ima-ng'), u32le(65537)), 'IMS_IMA_BAD_TEMPLATE_DATA'],
    ['legacy name length 256', cat(header(10, 'ima'), new Uint8Array(20), u32le(256)), 'IMS_IMA_BAD_FIELD'],
    ['record cut short', cat(header(10, 'ima-ng'), u32le(100), new Uint8Array(10)), 'IMS_IMA_TRUNCATED'],
  ];
  for (const [name, tail, code] of cases) {
    it(name, () => {
      const { records, problems } = parseBinaryLog(cat(good.bytes, tail), { byteOrder: 'le' });
      assert.equal(records.length, 3, 'records before the problem are kept');
      assert.equal(problems.length, 1);
      assert.equal(problems[0]!.code, code);
      assert.equal(problems[0]!.offset, end);
    });
  }

  it('a huge declared length is refused before the bytes arrive, and nothing more is accepted', () => {
    const parser = new BinaryLogParser();
    assert.deepEqual(parser.push(cat(header(10, 'ima-ng'), u32le(0xffff_ffff))), []);
    assert.equal(parser.hasStopped, true);
    assert.deepEqual(parser.push(good.bytes), []);
    assert.equal(parser.finish()[0]!.code, 'IMS_IMA_BAD_TEMPLATE_DATA');
  });

  it('limits can be set', () => {
    const big = generateLog({ records: 2, seed: 2, pcrs: [16] });
    assert.equal(parseBinaryLog(big.bytes).problems.length, 0);
    const strict = parseBinaryLog(big.bytes, { limits: { maxPcr: 15 } });
    assert.equal(strict.problems[0]!.code, 'IMS_IMA_BAD_PCR');
    const small = parseBinaryLog(good.bytes, { limits: { maxTemplateData: 16 } });
    assert.equal(small.problems[0]!.code, 'IMS_IMA_BAD_TEMPLATE_DATA');
  });
});

describe('binary log parser: problems inside a record are reported and the record kept', () => {
  const rec = (templateName: string, templateData: Uint8Array): Uint8Array =>
    encodeBinaryRecord({ pcr: 10, templateDigest: new Uint8Array(20).fill(1), templateName, templateData });

  it('fields that do not fill the template data', () => {
    // a well-formed d-ng field, then one stray byte where the n-ng length should be
    const data = cat(u32le(28), Buffer.from('sha1:\0', 'latin1'), new Uint8Array(20), Uint8Array.of(9));
    const { records, problems } = parseBinaryLog(rec('ima-ng', data));
    assert.equal(records.length, 1);
    assert.equal(problems[0]!.code, 'IMS_IMA_BAD_TEMPLATE_DATA');
    assert.equal(problems[0]!.offset, 0);
  });

  it('a d-ng field with an unknown algorithm or a wrong digest size', () => {
    const field = (s: string, n: number) =>
      cat(u32le(s.length + n), Buffer.from(s, 'latin1'), new Uint8Array(n));
    const name = cat(u32le(2), Uint8Array.of(0x78, 0));
    for (const [prefix, n] of [
      ['md6:\0', 16],
      ['sha256:\0', 20],
    ] as const) {
      const { records, problems } = parseBinaryLog(rec('ima-ng', cat(field(prefix, n), name)));
      assert.equal(records.length, 1);
      assert.equal(problems[0]!.code, 'IMS_IMA_BAD_FIELD', prefix);
    }
  });

  it('an unknown template is replayable and flagged once', () => {
    const bytes = cat(rec('my-template', Uint8Array.of(1, 2, 3)), rec('my-template', Uint8Array.of(4)));
    const { records, problems } = parseBinaryLog(bytes);
    assert.equal(records.length, 2);
    assert.deepEqual(
      problems.map((p) => p.code),
      ['IMS_IMA_UNKNOWN_TEMPLATE'],
    );
  });

  it('tpm2-tss: a stray trailing byte is reported as a cut-off record', () => {
    const bytes = readFileSync(new URL('tpm2-tss/sml-ima-sha1.bin', CORPUS));
    const parser = new BinaryLogParser();
    let n = 0;
    for (const b of bytes) n += parser.push(Uint8Array.of(b)).length;
    assert.equal(n, 12);
    assert.deepEqual(
      parser.finish().map((p) => [p.code, p.offset]),
      [['IMS_IMA_TRUNCATED', 916]],
    );
  });
});
