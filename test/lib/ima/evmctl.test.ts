import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { toHex } from '../../../lib/bytes/hex.ts';
import { parseBinaryLog } from '../../../lib/ima/binary.ts';
import { type ExtendScheme, PcrReplay } from '../../../lib/ima/replay.ts';
import { generateLog, type SyntheticOptions } from '../../../lib/ima/synthetic.ts';
import { CORPUS } from './corpus-cases.ts';

/*
 * Agreement with evmctl (ima-evm-utils 1.4 on Debian 12): imastream writes the PCR values its
 * replay computes into evmctl's `--pcrs` files (`PCR-NN: <hex>` per line) and evmctl must
 * accept them. `--ignore-violations` makes evmctl extend 0xFF like the kernel; without it evmctl
 * extends zeros on purpose so that any violation fails.
 */

const hasEvmctl = spawnSync('evmctl', ['--version'], { encoding: 'utf8' }).status === 0;

let dir = '';
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'imastream-evmctl-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

function pcrsFile(name: string, replay: PcrReplay, scheme: ExtendScheme, bank: 'sha1' | 'sha256'): string {
  const lines: string[] = [];
  for (let i = 0; i < 24; i++)
    lines.push(`PCR-${String(i).padStart(2, '0')}: ${toHex(replay.value(scheme, bank, i))}`);
  const path = join(dir, name);
  writeFileSync(path, `${lines.join('\n')}\n`);
  return path;
}

function evmctl(log: string, sha1: string, sha256: string, ignoreViolations = true) {
  const args = ['ima_measurement', ...(ignoreViolations ? ['--ignore-violations'] : [])];
  args.push('--pcrs', `sha1,${sha1}`, '--pcrs', `sha256,${sha256}`, log);
  const r = spawnSync('evmctl', args, { encoding: 'utf8', maxBuffer: 64 * 2 ** 20 });
  return { status: r.status, output: `${r.stdout}\n${r.stderr}` };
}

/** Replays `bytes` with imastream and writes both schemes' PCR files. */
function replayed(name: string, bytes: Uint8Array) {
  const log = join(dir, `${name}.log`);
  writeFileSync(log, bytes);
  const { records, problems } = parseBinaryLog(bytes);
  assert.deepEqual(problems, []);
  const replay = new PcrReplay({ banks: ['sha1', 'sha256'] });
  for (const rec of records) replay.extend(rec);
  const files = (scheme: ExtendScheme) => ({
    sha1: pcrsFile(`${name}-${scheme}-sha1`, replay, scheme, 'sha1'),
    sha256: pcrsFile(`${name}-${scheme}-sha256`, replay, scheme, 'sha256'),
  });
  return { log, replay, perbank: files('perbank'), padded: files('padded') };
}

const LOGS: [string, SyntheticOptions][] = [
  ['mixed templates with violations', { records: 400, seed: 11, violations: [0, 7, 250, 399] }],
  ['two PCR indexes', { records: 200, seed: 12, violations: [3], pcrs: [10, 11] }],
  ['legacy ima template', { records: 150, seed: 13, templates: ['ima'], violations: [20] }],
];

describe('evmctl ima_measurement agrees with imastream', {
  skip: hasEvmctl ? false : 'evmctl not installed',
}, () => {
  for (const [name, opts] of LOGS) {
    it(`${name}: per-bank values match in SHA-1 and SHA-256`, () => {
      const r = replayed(name.replace(/\W+/g, '-'), generateLog(opts).bytes);
      const { status, output } = evmctl(r.log, r.perbank.sha1, r.perbank.sha256);
      assert.equal(status, 0, output.slice(-500));
      assert.match(output, /Matched per TPM bank calculated digest/);
    });

    it(`${name}: padded values match`, () => {
      const r = replayed(`${name.replace(/\W+/g, '-')}-p`, generateLog(opts).bytes);
      const { status, output } = evmctl(r.log, r.padded.sha1, r.padded.sha256);
      assert.equal(status, 0, output.slice(-500));
      assert.match(output, /Matched SHA1 padded TPM digest/);
    });
  }

  it('a changed SHA-256 PCR value makes evmctl fail', () => {
    const r = replayed('negative', generateLog({ records: 100, seed: 14, violations: [9] }).bytes);
    const good = r.replay.value('perbank', 'sha256', 10);
    const bad = Uint8Array.from(good);
    bad[0]! ^= 1;
    const lines = Array.from(
      { length: 24 },
      (_, i) => `PCR-${String(i).padStart(2, '0')}: ${'00'.repeat(32)}`,
    );
    lines[10] = `PCR-10: ${toHex(bad)}`;
    const badFile = join(dir, 'negative-bad-sha256');
    writeFileSync(badFile, `${lines.join('\n')}\n`);
    const { status, output } = evmctl(r.log, r.perbank.sha1, badFile);
    assert.notEqual(status, 0);
    assert.match(output, /Failed to match/);
  });

  it('without --ignore-violations evmctl rejects a log with violations, as documented', () => {
    const r = replayed('strict', generateLog({ records: 50, seed: 15, violations: [4] }).bytes);
    const { status } = evmctl(r.log, r.perbank.sha1, r.perbank.sha256, false);
    assert.notEqual(status, 0);
  });

  for (const file of [
    'tpm2-tss/sml-ima-sig-sha256-invalidated.bin',
    'tpm2-tss/sml-ima-sha1-invalidated.bin',
  ]) {
    it(`${file}: evmctl accepts our padded value (violations as 0xFF×20, then zeros)`, () => {
      const name = file.replace(/\W+/g, '-');
      const log = join(dir, name);
      copyFileSync(new URL(file, CORPUS), log);
      const r = replayed(name, readFileSync(log));
      const { status, output } = evmctl(log, r.padded.sha1, r.padded.sha256);
      assert.equal(status, 0, output.slice(-500));
      assert.match(output, /Matched SHA1 padded TPM digest/);
    });
  }

  it("the tpm2-tss README's padded value (violations as 0xFF×32) is rejected by evmctl", () => {
    const file = 'tpm2-tss/sml-ima-sig-sha256-invalidated.bin';
    const log = join(dir, 'readme-rule');
    copyFileSync(new URL(file, CORPUS), log);
    const r = replayed('readme-rule', readFileSync(log));
    const lines = Array.from(
      { length: 24 },
      (_, i) => `PCR-${String(i).padStart(2, '0')}: ${'00'.repeat(32)}`,
    );
    lines[10] = 'PCR-10: a3f1c4ecc31e878ce24f1f51b59d2dc0780e1beee3411ef93677759f265c42f3';
    const readme = join(dir, 'readme-rule-sha256');
    writeFileSync(readme, `${lines.join('\n')}\n`);
    const { status, output } = evmctl(log, r.padded.sha1, readme);
    assert.notEqual(status, 0);
    assert.match(output, /Failed to match/);
  });
});
