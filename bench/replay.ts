/**
 * Benchmark: offline replay of a 200,000-record binary IMA log in two banks (sha1, sha256), by
 * `imastream replay` (in process, streaming the file) and by `evmctl ima_measurement` on the same
 * file in the same run. Both do the same work: parse, check each SHA-1 template digest, extend
 * per-bank and padded chains for both banks, and compare with the expected PCR values.
 *
 * Wall time and CPU time (user + system) are both printed: on a shared machine wall time depends
 * on the load, CPU time much less. Run: npm run bench [-- --records N --runs R].
 * Prints figures; asserts nothing about time.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { run } from '../cli/commands/replay.ts';
import { toHex } from '../lib/bytes/hex.ts';
import { PcrReplay } from '../lib/ima/replay.ts';
import { generateLog } from '../lib/ima/synthetic.ts';

const { values } = parseArgs({
  options: { records: { type: 'string', default: '200000' }, runs: { type: 'string', default: '5' } },
});
const RECORDS = Number(values.records);
const RUNS = Number(values.runs);

/** One timed run: wall and CPU milliseconds. */
interface Timing {
  wall: number;
  cpu: number;
}

function pcrsFile(replay: PcrReplay, bank: 'sha1' | 'sha256'): string {
  const lines: string[] = [];
  for (let i = 0; i < 24; i++) {
    lines.push(`PCR-${String(i).padStart(2, '0')}: ${toHex(replay.value('perbank', bank, i))}`);
  }
  return `${lines.join('\n')}\n`;
}

/** The run with the least CPU time (the least disturbed by other load). */
function best(times: Timing[]): Timing {
  return times.reduce((a, b) => (b.cpu < a.cpu ? b : a));
}

/** One in-process `imastream replay` run. */
async function timeImastream(log: string, expect: string[]): Promise<Timing> {
  const io = { out: () => {}, err: (l: string) => console.error(l) };
  const args = [log, '--banks', 'sha1,sha256', ...expect.flatMap((e) => ['--expect', e])];
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const code = await run(args, io);
  const wall = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  if (code !== 0) throw new Error(`imastream replay exited ${code}`);

  return { wall, cpu: (cpu.user + cpu.system) / 1000 };
}

/**
 * evmctl run under bash's `time` for its CPU time. --ignore-violations: without it evmctl extends
 * zeros for violations on purpose and can never match. Its output (a line per ima-sig record whose
 * file it cannot stat) goes to /dev/null; only the exit status counts.
 */
function timeEvmctl(log: string, sha1: string, sha256: string): Timing | string {
  const cmd =
    `TIMEFORMAT='%U %S'; time evmctl ima_measurement --ignore-violations ` +
    `--pcrs sha1,${sha1} --pcrs sha256,${sha256} ${log} >/dev/null 2>&1`;
  const t0 = performance.now();
  const r = spawnSync('bash', ['-c', `${cmd}; echo "rc=$?" >&2`], { encoding: 'utf8' });
  const wall = performance.now() - t0;
  const m = /([\d.]+) ([\d.]+)\s+rc=(\d+)/.exec(r.stderr);
  if (m === null) return `evmctl not runnable: ${r.stderr.trim()}`;
  if (m[3] !== '0') return `evmctl exited ${m[3]} (no match)`;

  return { wall, cpu: (Number(m[1]) + Number(m[2])) * 1000 };
}

function line(who: string, t: Timing): string {
  const rate = (ms: number) => Math.round((RECORDS / ms) * 1000).toLocaleString('en');
  const wall = `wall ${t.wall.toFixed(0)} ms (${rate(t.wall)} records/s)`;
  return `${who}: ${wall}, cpu ${t.cpu.toFixed(0)} ms (${rate(t.cpu)} records/s)`;
}

const LOG = 'binary_runtime_measurements';

/**
 * Writes the log and the evmctl PCR files into `dir`; returns the --expect arguments. A function
 * of its own so that the 200,000 generated records are garbage before anything is timed: kept
 * alive, they make every collection during the timed runs slower.
 */
function writeLog(dir: string): string[] {
  const t0 = performance.now();
  const { records, bytes } = generateLog({ records: RECORDS, seed: 42, violations: [1000, 50_000, 150_000] });
  writeFileSync(join(dir, LOG), bytes);
  const reference = new PcrReplay({ banks: ['sha1', 'sha256'] });
  for (const rec of records) reference.extend(rec);
  writeFileSync(join(dir, 'sha1.pcrs'), pcrsFile(reference, 'sha1'));
  writeFileSync(join(dir, 'sha256.pcrs'), pcrsFile(reference, 'sha256'));
  const mib = (bytes.byteLength / 2 ** 20).toFixed(1);
  console.log(`log: ${RECORDS} records, ${mib} MiB, generated in ${(performance.now() - t0).toFixed(0)} ms`);

  return [
    `sha1:10=${toHex(reference.value('perbank', 'sha1', 10))}`,
    `sha256:10=${toHex(reference.value('perbank', 'sha256', 10))}`,
  ];
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'imastream-bench-'));
  try {
    const expect = writeLog(dir);

    // Interleaved, so that both see the same swings of load on a shared machine.
    const oursAll: Timing[] = [];
    const theirsAll: Timing[] = [];
    for (let i = 0; i < RUNS; i++) {
      oursAll.push(await timeImastream(join(dir, LOG), expect));
      const evm = timeEvmctl(join(dir, LOG), join(dir, 'sha1.pcrs'), join(dir, 'sha256.pcrs'));
      if (typeof evm === 'string') {
        console.log(line(`imastream replay (best of ${i + 1})`, best(oursAll)));
        console.log(`evmctl: ${evm}`);
        return;
      }
      theirsAll.push(evm);
    }
    const ours = best(oursAll);
    const theirs = best(theirsAll);
    console.log(line(`imastream replay (best of ${RUNS})`, ours));
    console.log(line(`evmctl ima_measurement (best of ${RUNS})`, theirs));
    const ratio = (a: number, b: number) => (a / b).toFixed(2);
    console.log(
      `imastream/evmctl records/s ratio: wall ${ratio(theirs.wall, ours.wall)}, ` +
        `cpu ${ratio(theirs.cpu, ours.cpu)}`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
