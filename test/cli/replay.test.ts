import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Options, replayChunks } from '../../cli/commands/replay.ts';
import { main } from '../../cli/main.ts';
import { toHex } from '../../lib/bytes/hex.ts';
import { formatAsciiLine } from '../../lib/ima/ascii.ts';
import { PcrReplay } from '../../lib/ima/replay.ts';
import { generateLog } from '../../lib/ima/synthetic.ts';

const CORPUS = new URL('../../../shared/corpus/', import.meta.url);
const corpus = (f: string) => new URL(f, CORPUS).pathname;

async function replay(...args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(['replay', ...args], { out: (l) => out.push(l), err: (l) => err.push(l) });
  return { code, out: out.join('\n'), err };
}

let dir = '';
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'imastream-replay-cli-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

const SIG_SHA256_BIN = 'tpm2-tss/sml-ima-sig-sha256.bin';

describe('imastream replay', () => {
  it('prints PCR values of both schemes, template counts and problems with offsets', async () => {
    const r = await replay(corpus(SIG_SHA256_BIN));
    assert.equal(r.code, 0);
    assert.match(r.out, /records: 9 \(ima-sig 9\)/);
    assert.match(r.out, /at byte 987: IMS_IMA_TRUNCATED/);
    assert.match(
      r.out,
      /PCR values \(perbank\):\n {2}sha1 {3}PCR10 b44019405884709ca410b0c30b48159d3a556622/,
    );
    assert.match(r.out, /sha256 PCR10 a7e76625386d3dc6248552e44a3b2b1bebb6f2ff3acc9bd220821ad22f7a9d6a/);
    assert.match(
      r.out,
      /PCR values \(padded\):[\s\S]*9795c7da414424d16efd3821f51d88fd39d64ec382ce36a28ca650a3e9f69c18/,
    );
  });

  it('--expect: exit 0 and the record count when every value matches', async () => {
    const file = corpus('kunpengsecl/ascii_runtime_measurements_ima-ng_sha256');
    const r = await replay(
      file,
      '--expect',
      'sha256:10=8274edea17220227f7f68c23ca5395578eab6c44bc1fd527c711821bfe3c7f2c',
      '--expect',
      'sha1:10=77c77ae47e27835dd49ccd1a92fbb36d1d61b447',
    );
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /expect sha256:10=8274\w+: matched after 2510 records \(perbank\)/);
  });

  it('--expect: a quote that lags the log matches at an earlier record count', async () => {
    const { records, bytes } = generateLog({ records: 30, seed: 51, violations: [3] });
    const log = join(dir, 'lag.bin');
    writeFileSync(log, bytes);
    const partial = new PcrReplay();
    for (const rec of records.slice(0, 17)) partial.extend(rec);
    const r = await replay(log, '--expect', `sha256:10=${toHex(partial.value('padded', 'sha256', 10))}`);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /matched after 17 records \(padded\)/);
  });

  it('--expect: exit 1 when a value never matches', async () => {
    const r = await replay(corpus(SIG_SHA256_BIN), '--expect', `sha1:10=${'12'.repeat(20)}`);
    assert.equal(r.code, 1);
    assert.match(r.out, /NOT matched/);
  });

  it('--json prints one document with violations, mismatches and PCRs', async () => {
    const r = await replay(corpus('tpm2-tss/sml-ima-sig-sha256-invalidated.bin'), '--json');
    assert.equal(r.code, 0);
    const doc = JSON.parse(r.out);
    assert.equal(doc.records, 2);
    assert.equal(doc.violations, 1);
    assert.equal(doc.digestMismatches.count, 0);
    assert.equal(
      doc.pcrs.perbank.sha256['10'],
      '338c5ec5cba3d64a886cc6f369f10e5209bf8f49db078635723bb1ed8091b2ba',
    );
  });

  it('takes the digest size from a _<alg> file name, and --digest-alg overrides it', async () => {
    const log = join(dir, 'binary_runtime_measurements_sha256');
    copyFileSync(corpus('global-trust-authority/ima.bin'), log);
    const byName = JSON.parse((await replay(log, '--json')).out);
    assert.equal(byName.digestAlg, 'sha256');
    assert.equal(
      byName.pcrs.perbank.sha256['10'],
      '8c4fb94d4d15f6069aad176dace62a2ec0720ae864473d6419978da5b168ce11',
    );
    const forced = await replay(log, '--digest-alg', 'sha1', '--json');
    assert.equal(forced.code, 2);
    assert.equal(forced.out, '');
    assert.equal(forced.err.length, 1);
    assert.match(forced.err[0]!, /IMS_IMA_BAD_TEMPLATE_NAME: .*no record could be read: at byte 0: /);
    assert.doesNotMatch(forced.err[0]!, /try --digest-alg/);
  });

  it('ignores a file-name suffix that is not a bank', async () => {
    for (const f of [
      'keylime/ascii_runtime_measurements_ima',
      'kunpengsecl/ascii_runtime_measurements_orig',
    ]) {
      const r = await replay(corpus(f), '--json');
      assert.equal(r.code, 0, r.err.join('\n'));
      assert.ok(JSON.parse(r.out).records > 0, f);
    }
    const log = join(dir, 'binary_runtime_measurements_ima');
    copyFileSync(corpus('tpm2-tss/sml-ima-sha1.bin'), log);
    const r = await replay(log, '--json');
    assert.equal(r.code, 0, r.err.join('\n'));
    assert.equal(JSON.parse(r.out).digestAlg, 'sha1');
  });

  it('a bank suffix on an ASCII log does not frame it: the column has its own length', async () => {
    const log = join(dir, 'ascii_runtime_measurements_sha256');
    copyFileSync(corpus('keylime/ascii_runtime_measurements_ima'), log);
    const named = JSON.parse((await replay(log, '--json')).out);
    const plain = JSON.parse((await replay(corpus('keylime/ascii_runtime_measurements_ima'), '--json')).out);
    assert.equal(named.records, plain.records);
    assert.deepEqual(named.problems, plain.problems);
  });

  it('reports digest mismatches and keeps replaying', async () => {
    const { records, bytes } = generateLog({ records: 5, seed: 52 });
    const bad = Uint8Array.from(bytes);
    bad[records[2]!.offset + 4]! ^= 0xff; // first byte of record 2's template digest
    const log = join(dir, 'mismatch.bin');
    writeFileSync(log, bad);
    const doc = JSON.parse((await replay(log, '--json')).out);
    assert.equal(doc.records, 5);
    assert.equal(doc.digestMismatches.count, 1);
    assert.equal(doc.digestMismatches.listed[0].offset, records[2]!.offset);
  });

  it('streams a log larger than its read size and agrees with the library replay', async () => {
    const { records, bytes } = generateLog({ records: 12_000, seed: 53, violations: [10, 9000] });
    assert.ok(bytes.byteLength > 1 << 20);
    const log = join(dir, 'big.bin');
    writeFileSync(log, bytes);
    const lib = new PcrReplay({ banks: ['sha1', 'sha384'] });
    for (const rec of records) lib.extend(rec);
    const doc = JSON.parse((await replay(log, '--banks', 'sha1,sha384', '--json')).out);
    assert.equal(doc.records, 12_000);
    assert.equal(doc.violations, 2);
    assert.deepEqual(doc.pcrs, lib.state().pcrs);
  });

  it('reads ASCII logs, sniffed or told', async () => {
    const { records } = generateLog({ records: 20, seed: 54 });
    const log = join(dir, 'ascii_runtime_measurements');
    writeFileSync(log, records.map((r) => formatAsciiLine(r)).join(''));
    const sniffed = JSON.parse((await replay(log, '--json')).out);
    assert.equal(sniffed.format, 'ascii');
    assert.equal(sniffed.records, 20);
    assert.equal((await replay(log, '--format', 'ascii')).code, 0);
  });

  it('counts every problem but lists only the first ones, with no summary posing as a problem', async () => {
    const { records } = generateLog({ records: 1, seed: 55 });
    const log = join(dir, 'many-bad-lines.log');
    writeFileSync(log, formatAsciiLine(records[0]!) + 'not a measurement\n'.repeat(1500));
    const doc = JSON.parse((await replay(log, '--format', 'ascii', '--json')).out);
    assert.equal(doc.records, 1);
    assert.equal(doc.problemsTotal, 1500);
    assert.equal(doc.problems.length, 1000);
    assert.ok(doc.problems.every((p: { message: string }) => !/more problems/.test(p.message)));
    assert.equal(doc.problems.at(-1).line, 1001);
    const text = await replay(log, '--format', 'ascii');
    assert.match(text.out, /parse problems: 1500 \(first 1000 listed\)/);
  });
});

describe('replayChunks', () => {
  const opts: Options = {
    path: 'chunks',
    format: 'auto',
    digestAlg: undefined,
    nameAlg: undefined,
    byteOrder: 'auto',
    banks: ['sha1'],
    expect: [],
    json: false,
  };

  /** `first`, then zero-filled chunks; counts how many were read and whether reading was closed. */
  function source(first: Uint8Array[]) {
    const seen = { pulled: 0, closed: false };
    async function* chunks() {
      try {
        for (const c of first) {
          seen.pulled++;
          yield c;
        }
        for (let i = 0; i < 50; i++) {
          seen.pulled++;
          yield new Uint8Array(4096);
        }
      } finally {
        seen.closed = true;
      }
    }
    return { seen, chunks: chunks() };
  }

  it('stops reading at a framing problem in the first record', async () => {
    const { seen, chunks } = source([]);
    await assert.rejects(replayChunks(chunks, opts), { code: 'IMS_IMA_BAD_TEMPLATE_NAME' });
    assert.equal(seen.pulled, 1);
    assert.ok(seen.closed);
  });

  it('stops reading at a framing problem after good records', async () => {
    const { bytes } = generateLog({ records: 4, seed: 56 });
    const { seen, chunks } = source([bytes]);
    const s = await replayChunks(chunks, opts);
    assert.equal(s.records, 4);
    assert.equal(seen.pulled, 2);
    assert.ok(seen.closed);
    assert.deepEqual(
      s.problems.map((p) => [p.code, p.offset]),
      [['IMS_IMA_BAD_TEMPLATE_NAME', bytes.byteLength]],
    );
  });
});

describe('imastream replay: unusable input exits 2 with one line', () => {
  const cases: [string, () => string[], RegExp][] = [
    ['missing file', () => [join(dir, 'nope')], /IMS_IO_READ_FAILED/],
    ['a directory', () => [dir], /IMS_IO_READ_FAILED/],
    ['not a log', () => [textFile()], /IMS_IMA_UNKNOWN_FORMAT/],
    ['bad --expect', () => [corpus(SIG_SHA256_BIN), '--expect', 'sha1:10=zz'], /IMS_REPLAY_BAD_EXPECTATION/],
    ['unknown bank', () => [corpus(SIG_SHA256_BIN), '--banks', 'sha1,md5'], /IMS_IMA_UNSUPPORTED_ALG/],
    ['bad --format', () => [corpus(SIG_SHA256_BIN), '--format', 'xml'], /IMS_CLI_USAGE/],
    ['no file', () => [], /IMS_CLI_USAGE/],
    ['unknown option', () => [corpus(SIG_SHA256_BIN), '--frobnicate'], /IMS_CLI_USAGE/],
  ];
  for (const [name, args, code] of cases) {
    it(name, async () => {
      const r = await replay(...args());
      assert.equal(r.code, 2);
      assert.equal(r.err.length, 1, r.err.join('\n'));
      assert.match(r.err[0]!, code);
    });
  }
});

describe('imastream replay: a log of which no record can be read is unusable', () => {
  const ZERO_SHA1 = `sha1:10=${'00'.repeat(20)}`;
  const SHA1_BIN = 'tpm2-tss/sml-ima-sha1.bin';
  const file = (name: string, bytes: Uint8Array | string) => {
    const path = join(dir, name);
    writeFileSync(path, bytes);
    return path;
  };
  const pcr99 = () => {
    const { bytes } = generateLog({ records: 3, seed: 57 });
    const bad = Uint8Array.from(bytes);
    new DataView(bad.buffer).setUint32(0, 99, true);
    return file('pcr99.bin', bad);
  };
  const cases: [string, () => string[], RegExp][] = [
    ['PCR 99 in the first record', () => [pcr99(), '--expect', ZERO_SHA1], /IMS_IMA_BAD_PCR: .*at byte 0: /],
    [
      'the wrong byte order',
      () => [corpus(SHA1_BIN), '--byte-order', 'be', '--expect', ZERO_SHA1],
      /IMS_IMA_BAD_PCR: .*at byte 0: /,
    ],
    [
      'a binary log read as ASCII',
      () => [corpus(SHA1_BIN), '--format', 'ascii', '--expect', ZERO_SHA1],
      /IMS_IMA_BAD_ASCII_LINE: .*no record could be read: line 2 \(byte 1\)/,
    ],
    [
      'one over-long ASCII line',
      () => [file('one-line.log', `10 ${'x'.repeat(300_000)}`), '--format', 'ascii'],
      /IMS_IMA_BAD_ASCII_LINE: .*line 1 \(byte 0\): line longer than/,
    ],
    ['an empty file', () => [file('empty.bin', '')], /IMS_IMA_NO_RECORDS: .*empty/],
    ['blank lines only', () => [file('blank.log', '\n \n'), '--format', 'ascii'], /IMS_IMA_NO_RECORDS/],
    [
      'a record cut short',
      () => [file('cut.bin', readFileSync(corpus(SHA1_BIN)).subarray(0, 30))],
      /IMS_IMA_TRUNCATED: .*at byte 0: /,
    ],
  ];
  for (const [name, args, code] of cases) {
    it(name, async () => {
      const r = await replay(...args());
      assert.equal(r.code, 2, r.out);
      assert.equal(r.out, '');
      assert.equal(r.err.length, 1, r.err.join('\n'));
      assert.match(r.err[0]!, code);
      assert.doesNotMatch(r.err[0]!, /try --digest-alg/);
    });
  }

  it('suggests --digest-alg only when that bank reads the first record', async () => {
    const log = file('per-bank.bin', readFileSync(corpus('global-trust-authority/ima.bin')));
    const r = await replay(log);
    assert.equal(r.code, 2);
    assert.equal(r.err.length, 1);
    assert.match(r.err[0]!, /at byte 0: .*\(a per-bank .* try --digest-alg sha256\)$/);
    assert.equal((await replay(log, '--digest-alg', 'sha256')).code, 0);
  });
});

function textFile(): string {
  const path = join(dir, 'notes.txt');
  writeFileSync(path, 'these are not measurements\n');
  return path;
}
