import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  AsciiLogParser,
  formatAsciiLine,
  parseAsciiLog,
  rebuildTemplateData,
} from '../../../lib/ima/ascii.ts';
import { parseLog, sniffFormat } from '../../../lib/ima/parse.ts';
import type { ImaRecord } from '../../../lib/ima/record.ts';
import { generateLog } from '../../../lib/ima/synthetic.ts';

const text = (s: string) => new Uint8Array(Buffer.from(s, 'utf8'));
const plain = (r: ImaRecord) => ({
  pcr: r.pcr,
  templateName: r.templateName,
  templateDigest: Uint8Array.from(r.templateDigest),
  templateData: Uint8Array.from(r.templateData),
});

describe('ASCII log parser', () => {
  it('rebuilds the binary template data of every generated record from its line', () => {
    const { records } = generateLog({ records: 300, seed: 21, violations: [2, 50] });
    const ascii = records.map((r) => formatAsciiLine(r)).join('');
    const parsed = parseAsciiLog(text(ascii));
    assert.deepEqual(parsed.problems, []);
    assert.deepEqual(parsed.records.map(plain), records.map(plain));
  });

  it('rebuilds legacy ima lines, names with spaces included', () => {
    const { records } = generateLog({ records: 20, seed: 22, templates: ['ima'] });
    const lines = records.map((r) => formatAsciiLine(r)).join('');
    assert.deepEqual(parseAsciiLog(text(lines)).records.map(plain), records.map(plain));
    const deleted = parseAsciiLog(
      text(`10 ${'ab'.repeat(20)} ima ${'cd'.repeat(20)} /tmp/#17634599 (deleted)\n`),
    );
    assert.equal(
      Buffer.from(deleted.records[0]!.templateData.subarray(24)).toString(),
      '/tmp/#17634599 (deleted)',
    );
  });

  it('gives the same records for any chunking', () => {
    const { records } = generateLog({ records: 30, seed: 23 });
    const bytes = text(records.map((r) => formatAsciiLine(r)).join(''));
    const whole = parseAsciiLog(bytes).records.map(plain);
    for (const size of [1, 3, 100]) {
      const parser = new AsciiLogParser();
      const got: ImaRecord[] = [];
      for (let at = 0; at < bytes.byteLength; at += size)
        got.push(...parser.push(bytes.subarray(at, at + size)));
      assert.deepEqual(parser.finish(), []);
      assert.deepEqual(got.map(plain), whole);
    }
  });

  it('reports a bad line with its number and offset, and goes on', () => {
    const good = `10 ${'11'.repeat(20)} ima-ng sha1:${'22'.repeat(20)} /a\n`;
    const lines = [
      good,
      'garbage\n',
      `10 ${'11'.repeat(20)} ima-ng sha1:zz /b\n`,
      `99 ${'11'.repeat(20)} ima-ng sha1:${'22'.repeat(20)} /c\n`,
      `10 ${'11'.repeat(20)} weird-template 00\n`,
      `10 ${'11'.repeat(19)} ima-ng sha1:${'22'.repeat(20)} /d\n`,
      good,
    ];
    const { records, problems } = parseAsciiLog(text(lines.join('')));
    assert.equal(records.length, 2);
    assert.deepEqual(
      problems.map((p) => [p.code, p.line]),
      [2, 3, 4, 5, 6].map((line) => ['IMS_IMA_BAD_ASCII_LINE', line]),
    );
    assert.equal(problems[0]!.offset, good.length);
    assert.equal(records[1]!.offset, lines.slice(0, 6).join('').length);
  });

  it('reads PCRs below 10 (leading space), CRLF and the trailing space of an empty sig', () => {
    const line = ` 7 ${'11'.repeat(20)} ima-sig sha256:${'22'.repeat(32)} /bin/x \r\n`;
    const { records, problems } = parseAsciiLog(text(line));
    assert.deepEqual(problems, []);
    assert.equal(records[0]!.pcr, 7);
    // d-ng (4 + 40) + n-ng (4 + 7) + empty sig (4)
    assert.equal(records[0]!.templateData.byteLength, 44 + 11 + 4);
  });

  it('skips lines longer than the limit and resumes after them', () => {
    const good = `10 ${'11'.repeat(20)} ima-ng sha1:${'22'.repeat(20)} /a\n`;
    const long = `10 ${'11'.repeat(20)} ima-ng sha1:${'22'.repeat(20)} /${'x'.repeat(500)}\n`;
    const parser = new AsciiLogParser({ limits: { maxLine: 200 } });
    const got = [
      ...parser.push(text(good + long.slice(0, 100))),
      ...parser.push(text(long.slice(100) + good)),
    ];
    assert.equal(got.length, 2);
    assert.deepEqual(
      parser.finish().map((p) => [p.line, p.offset]),
      [[2, good.length]],
    );
    assert.equal(got[1]!.offset, good.length + long.length);
  });

  it('reports an over-long line at its first byte, however it was chunked', () => {
    const good = `10 ${'11'.repeat(20)} ima-ng sha1:${'22'.repeat(20)} /a\n`;
    const bytes = text(`${good}${'x'.repeat(5000)}\n${good}`);
    for (const size of [64, 1000, bytes.byteLength]) {
      const parser = new AsciiLogParser({ limits: { maxLine: 200 } });
      const got: ImaRecord[] = [];
      for (let at = 0; at < bytes.byteLength; at += size)
        got.push(...parser.push(bytes.subarray(at, at + size)));
      const problems = parser.finish();
      assert.deepEqual(
        problems.map((p) => [p.line, p.offset]),
        [[2, good.length]],
        `chunks of ${size}`,
      );
      assert.equal(got[1]!.offset, good.length + 5001);
    }
    const unterminated = new AsciiLogParser({ limits: { maxLine: 200 } });
    unterminated.push(text(good));
    for (let i = 0; i < 10; i++) unterminated.push(text('y'.repeat(100)));
    assert.deepEqual(
      unterminated.finish().map((p) => [p.line, p.offset]),
      [[2, good.length]],
    );
  });

  it('lists at most maxProblems problems and counts them all', () => {
    const parser = new AsciiLogParser({ limits: { maxProblems: 3 } });
    parser.push(text('bad\n'.repeat(10)));
    const listed = parser.finish();
    assert.deepEqual(
      listed.map((p) => p.line),
      [1, 2, 3],
    );
    assert.equal(parser.problemCount, 10);
    assert.equal(parseAsciiLog(text('bad\n'.repeat(1200))).problemsTotal, 1200);
  });

  it('rebuilds evm-sig and ima-ngv2 fields', () => {
    const ngv2 = rebuildTemplateData('ima-ngv2', [text(`verity:sha256:${'ab'.repeat(32)}`), text('/f')]);
    assert.ok(ngv2 instanceof Uint8Array);
    assert.equal(Buffer.from(ngv2.subarray(4, 19)).toString('latin1'), 'verity:sha256:\0');
    const evm = rebuildTemplateData(
      'evm-sig',
      ['sha256:00', '/f', '', 'security.ima', '04000000', 'aabbccdd', '0', '1000', '33188'].map(text),
    );
    assert.ok(evm instanceof Uint8Array);
    // imode 33188 = 0o100644, rebuilt as u16 little-endian at the very end
    assert.deepEqual([...evm.subarray(-2)], [0xa4, 0x81]);
    assert.equal(typeof rebuildTemplateData('evm-sig', ['sha256:00', '/f'].map(text)), 'string');
  });
});

describe('format sniffing', () => {
  it('tells binary from ASCII and reports anything else', () => {
    const { bytes, records } = generateLog({ records: 3, seed: 24 });
    assert.equal(sniffFormat(bytes), 'binary');
    assert.equal(sniffFormat(text(formatAsciiLine(records[0]!))), 'ascii');
    assert.equal(sniffFormat(text('hello world, not a log\n')), undefined);
    const bad = parseLog(text('hello world\n'));
    assert.equal(bad.format, undefined);
    assert.equal(bad.problems[0]!.code, 'IMS_IMA_UNKNOWN_FORMAT');
    assert.equal(parseLog(new Uint8Array(0)).records.length, 0);
    assert.equal(parseLog(bytes).records.length, 3);
    assert.equal(parseLog(text(records.map((r) => formatAsciiLine(r)).join(''))).format, 'ascii');
  });
});
