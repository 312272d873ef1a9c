import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { hasCode } from '../../../lib/errors.ts';
import { AsciiLogParser, formatAsciiLine, parseAsciiLog } from '../../../lib/ima/ascii.ts';
import { BinaryLogParser, parseBinaryLog } from '../../../lib/ima/binary.ts';
import { parseLog } from '../../../lib/ima/parse.ts';
import type { ImaRecord } from '../../../lib/ima/record.ts';
import { PcrReplay } from '../../../lib/ima/replay.ts';
import { generateLog } from '../../../lib/ima/synthetic.ts';
import { CORPUS } from './corpus-cases.ts';

/*
 * Property tests: damaged logs (cut anywhere, bits flipped, random bytes) never make a
 * top-level parse throw or loop, every record stays inside the input, and chunked parsing gives
 * the records of one-shot parsing. Sizes are kept small so the file runs in seconds.
 */

const corpus = (f: string) => new Uint8Array(readFileSync(new URL(f, CORPUS)));
const BINARY_SEEDS = [
  corpus('ibmtss/imatest.log'),
  corpus('tpm2-tss/sml-ima-sig-sha256.bin'),
  corpus('tpm2-tss/sml-ima-sha1.bin'),
  generateLog({ records: 25, seed: 31, violations: [3] }).bytes,
  generateLog({ records: 10, seed: 32, byteOrder: 'be' }).bytes,
];
const asciiOf = (n: number, seed: number) =>
  new TextEncoder().encode(
    generateLog({ records: n, seed })
      .records.map((r) => formatAsciiLine(r))
      .join(''),
  );
const ASCII_SEEDS = [
  corpus('keylime/ima-log-sha256'),
  corpus('global-trust-authority/ima.log'),
  asciiOf(15, 33),
];

/** A seed log, cut at a random point and with a few random bit flips. */
function damaged(seeds: Uint8Array[]) {
  return fc
    .record({
      seed: fc.integer({ min: 0, max: seeds.length - 1 }),
      cut: fc.double({ min: 0, max: 1, noNaN: true }),
      flips: fc.array(fc.tuple(fc.double({ min: 0, max: 1, noNaN: true }), fc.integer({ min: 0, max: 7 })), {
        maxLength: 6,
      }),
    })
    .map(({ seed, cut, flips }) => {
      const src = seeds[seed]!;
      const out = src.slice(0, Math.floor(src.byteLength * cut));
      for (const [at, bit] of flips) {
        if (out.byteLength > 0) out[Math.floor(at * out.byteLength) % out.byteLength]! ^= 1 << bit;
      }
      return out;
    });
}

const chunkSizes = fc.array(fc.integer({ min: 1, max: 300 }), { minLength: 1, maxLength: 20 });

function pushInChunks(parser: { push(c: Uint8Array): ImaRecord[] }, bytes: Uint8Array, sizes: number[]) {
  const out: ImaRecord[] = [];
  let at = 0;
  for (let i = 0; at < bytes.byteLength; i++) {
    const n = sizes[i % sizes.length]!;
    out.push(...parser.push(bytes.subarray(at, at + n)));
    at += n;
  }
  return out;
}

const plain = (r: ImaRecord) => [
  r.pcr,
  r.offset,
  r.templateName,
  Buffer.from(r.templateDigest).toString('hex'),
  Buffer.from(r.templateData).toString('hex'),
];

/** Every record's bytes lie inside the input: the parser cannot have invented or copied more. */
function inside(records: ImaRecord[], size: number): boolean {
  return records.every((r) => r.offset >= 0 && r.offset + r.templateData.byteLength <= size);
}

/** A hang fails the test instead of stalling the suite. */
const bounded = { timeout: 120_000 };

describe('fuzz: binary parser', bounded, () => {
  it('damaged logs: no throw, records inside the input, chunked = one-shot', () => {
    fc.assert(
      fc.property(damaged(BINARY_SEEDS), chunkSizes, (bytes, sizes) => {
        const whole = parseBinaryLog(bytes);
        assert.ok(inside(whole.records, bytes.byteLength));
        const parser = new BinaryLogParser();
        const chunked = pushInChunks(parser, bytes, sizes);
        assert.deepEqual(chunked.map(plain), whole.records.map(plain));
        assert.deepEqual(
          parser.finish().map((p) => [p.code, p.offset]),
          whole.problems.map((p) => [p.code, p.offset]),
        );
      }),
      { numRuns: 300 },
    );
  });

  it('random bytes: no throw, in every digest size and byte order', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 600 }),
        fc.constantFrom('sha1', 'sha256', 'sha512'),
        fc.constantFrom('le', 'be', 'auto'),
        (bytes, digestAlg, byteOrder) => {
          const { records } = parseBinaryLog(bytes, { digestAlg, byteOrder });
          assert.ok(inside(records, bytes.byteLength));
        },
      ),
      { numRuns: 300 },
    );
  });

  it('declared lengths near 2^32 are refused without allocating them', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0x1_0000, max: 0xffff_ffff }), (len) => {
        // u32 pcr 10 | digest[20] | u32 6 | "ima-ng" | u32 data_len = len, and no data
        const bytes = new Uint8Array(38);
        const v = new DataView(bytes.buffer);
        v.setUint32(0, 10, true);
        v.setUint32(24, 6, true);
        bytes.set(Buffer.from('ima-ng'), 28);
        v.setUint32(34, len, true);
        const before = process.memoryUsage().arrayBuffers;
        const { problems } = parseBinaryLog(bytes);
        assert.ok(process.memoryUsage().arrayBuffers - before < 1 << 20);
        assert.equal(problems[0]!.code, len > 65536 ? 'IMS_IMA_BAD_TEMPLATE_DATA' : 'IMS_IMA_TRUNCATED');
      }),
      { numRuns: 200 },
    );
  });

  it('with the data cap lifted, a parser waiting for 4 GiB holds only what it was given', () => {
    const parser = new BinaryLogParser({ limits: { maxTemplateData: 0xffff_ffff } });
    const head = generateLog({ records: 1, seed: 1 }).bytes.slice(0, 34);
    const bytes = new Uint8Array(38);
    bytes.set(head);
    new DataView(bytes.buffer).setUint32(34, 0xffff_fff0, true);
    const before = process.memoryUsage().arrayBuffers;
    assert.deepEqual(parser.push(bytes), []);
    for (let i = 0; i < 100; i++) parser.push(new Uint8Array(1024));
    assert.ok(process.memoryUsage().arrayBuffers - before < 4 << 20);
    assert.equal(parser.finish()[0]!.code, 'IMS_IMA_TRUNCATED');
  });
});

describe('fuzz: ASCII parser and format sniffing', bounded, () => {
  it('damaged logs: no throw, chunked = one-shot', () => {
    fc.assert(
      fc.property(damaged(ASCII_SEEDS), chunkSizes, (bytes, sizes) => {
        const whole = parseAsciiLog(bytes);
        assert.ok(whole.records.every((r) => r.offset < bytes.byteLength));
        const parser = new AsciiLogParser();
        assert.deepEqual(pushInChunks(parser, bytes, sizes).map(plain), whole.records.map(plain));
        assert.equal(parser.finish().length, whole.problems.length);
      }),
      { numRuns: 300 },
    );
  });

  it('random text and bytes: parseLog never throws and every record replays', () => {
    const line = fc
      .array(
        fc.constantFrom(
          '10 ',
          ' 7 ',
          'ima-ng ',
          'ima ',
          'sha1:',
          'ab',
          '00'.repeat(20),
          ' ',
          '/x',
          '\n',
          '|',
        ),
        {
          maxLength: 40,
        },
      )
      .map((parts) => new TextEncoder().encode(parts.join('')));
    fc.assert(
      fc.property(fc.oneof(line, fc.uint8Array({ maxLength: 400 })), (bytes) => {
        const { records } = parseLog(bytes);
        const replay = new PcrReplay();
        for (const r of records) replay.extend(r);
      }),
      { numRuns: 400 },
    );
  });
});

describe('fuzz: replay state', bounded, () => {
  it('fromState() on anything either works or throws IMS_REPLAY_BAD_STATE', () => {
    fc.assert(
      fc.property(fc.anything(), (state) => {
        try {
          PcrReplay.fromState(state);
        } catch (err) {
          assert.ok(hasCode(err, 'IMS_REPLAY_BAD_STATE'), String(err));
        }
      }),
      { numRuns: 300 },
    );
  });
});
