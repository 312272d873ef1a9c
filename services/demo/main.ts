/**
 * `npm run demo`: a fleet of simulated hosts (real swtpm, real agents, real corpus logs) through
 * the real pipeline (Kafka, Redis, two replayers, a quote-checker, the nonce service). Honest
 * hosts must end attested; one host whose measurements are tampered with in flight must be
 * alerted. Prints a table per host (or one JSON document with --json) and exits 0 only then.
 * Progress goes to stderr; every process logs to .stack/demo/.
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { Fleet, type FleetHostSpec } from './fleet.ts';
import { REPO_DIR } from './host.ts';
import { CORPUS_LOGS, corpusLog, DEFAULT_CAP, type LogSource, loadLog, syntheticLog } from './logs.ts';
import { Observer } from './observer.ts';
import { Pipeline } from './pipeline.ts';
import { type HostRow, printTable, rowOf } from './report.ts';
import { crashed, type ServiceProcess } from './services.ts';
import {
  printShardTable,
  type ShardRow,
  shardRow,
  startArchiver,
  startsWithBootAggregate,
  waitForArchive,
} from './shards.ts';

const OPTIONS = {
  json: { type: 'boolean', default: false },
  hosts: { type: 'string', default: '4' },
  log: { type: 'string', multiple: true },
  cap: { type: 'string', default: String(DEFAULT_CAP) },
  timeout: { type: 'string', default: '300' },
  'quote-interval': { type: 'string', default: '2' },
  tamper: { type: 'string', default: 'change' },
  'export-shards': { type: 'string' },
  trim: { type: 'boolean', default: false },
  'cut-records': { type: 'string', default: '150' },
} as const;

interface DemoResult {
  ok: boolean;
  runId: string;
  stackStartMs: number | null;
  records: number;
  seconds: number;
  recordsPerSecond: number;
  hosts: HostRow[];
  /** Per host, with --export-shards: shards sealed, archived and re-verified. */
  shards?: Record<string, ShardRow>;
  problems: string[];
}

async function main(): Promise<number> {
  const { values: v } = parseArgs({ args: process.argv.slice(2), options: OPTIONS, strict: true });
  if (!['change', 'drop', 'lose', 'reorder', 'insert'].includes(v.tamper) || !(Number(v.hosts) >= 1)) {
    process.stderr.write('usage: demo [--json] [--hosts N] [--log FILE]... [--cap N] [--timeout S]\n');
    process.stderr.write('            [--quote-interval S] [--tamper change|drop|lose|reorder|insert]\n');
    process.stderr.write('            [--export-shards DIR] [--trim [--cut-records N]]\n');
    return 2;
  }
  const brokers = (process.env.IMASTREAM_KAFKA_BROKERS ?? '127.0.0.1:19092').split(',');
  const redisUrl = process.env.IMASTREAM_REDIS_URL ?? 'redis://127.0.0.1:6379';
  const runId = randomUUID().slice(0, 8);
  const logDir = join(REPO_DIR, '.stack/demo', runId);
  mkdirSync(logDir, { recursive: true });
  const say = (msg: string) => process.stderr.write(`demo: ${msg}\n`);

  const specs = fleetSpecs(runId, Number(v.hosts), v.log ?? [], Number(v.cap), v.tamper);
  if (v['export-shards'] !== undefined) {
    // A sealed chain is anchored at seq 0 by the boot's boot_aggregate (docs/shards.md); a corpus
    // test log without one would be refused by the archiver, rightly, so it is swapped out.
    specs.forEach((s, i) => {
      if (s.tamper !== undefined || startsWithBootAggregate(s.source)) return;
      say(`${s.hostId}: ${s.source.name} does not start with boot_aggregate; a generated log instead`);
      s.source = syntheticLog(Math.min(Number(v.cap), 1000), i, [3, 200]);
    });
  }
  if (v.trim) {
    // Both Linux 7.2 flavours across the fleet: even hosts stage all, odd hosts delete the oldest N.
    specs.forEach((s, i) => {
      s.trim = { mode: i % 2 === 0 ? 'stage' : 'delete', cutRecords: Number(v['cut-records']) };
    });
  }
  const env = { IMASTREAM_KAFKA_BROKERS: brokers.join(','), IMASTREAM_REDIS_URL: redisUrl };
  // Every host's TPM gets a certified EK, and the enroller requires one (docs/enrolment.md).
  const pipeline = await Pipeline.start(runId, logDir, brokers, {
    env,
    deadlineMs: 60_000,
    ekPolicy: 'certificate',
  });
  const exportShards = v['export-shards'];
  if (exportShards !== undefined) {
    // The archiver verifies every sealed shard and keeps the good ones in DIR (docs/shards.md).
    pipeline.services.push(await startArchiver(runId, exportShards, logDir, brokers, env));
  }
  const services = pipeline.services;
  say(`run ${runId}: ${services.length} pipeline processes, ${specs.length} hosts, logs in ${logDir}`);
  const observer = new Observer(
    brokers,
    specs.map((s) => s.hostId),
  );
  const redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 2 });
  let fleet: Fleet | undefined;
  const problems: string[] = [];
  let seconds = 0;
  try {
    await Promise.all([observer.start(), redis.connect()]);
    fleet = await Fleet.create(specs, {
      brokers,
      baseDir: join(logDir, 'hosts'),
      quoteIntervalS: Number(v['quote-interval']),
      writer: { batch: 100, pauseMs: 50 },
      agentEnv: env,
      manufacturer: pipeline.manufacturer,
    });
    await fleet.startAgents();
    say('agents ready; playing the logs');
    const t0 = Date.now();
    await fleet.play();
    say('logs written; waiting for verdicts');
    problems.push(...(await waitForOutcome(specs, observer, services, Number(v.timeout) * 1000, say)));
    seconds = (Date.now() - t0) / 1000;
    if (exportShards !== undefined && fleet !== undefined) {
      say(`waiting for the shard archive in ${exportShards}`);
      problems.push(...(await waitForArchive(fleet.hosts, exportShards, Number(v.timeout) * 1000)));
    }
  } catch (err) {
    problems.push(err instanceof Error ? err.message : String(err));
  }
  const rows = await Promise.all(specs.map((s) => rowOf(s, observer, redis)));
  const shards: Record<string, ShardRow> = {};
  if (exportShards !== undefined) {
    for (const host of fleet?.hosts ?? []) shards[host.hostId] = await shardRow(host, exportShards);
  }
  await fleet?.stop();
  await pipeline.stop();
  await observer.stop();
  redis.disconnect();
  const records = specs.reduce((n, s) => n + s.source.records.length, 0);
  const result: DemoResult = {
    ok: problems.length === 0 && rows.every((r) => r.ok),
    runId,
    stackStartMs: stackStartMs(),
    records,
    seconds,
    recordsPerSecond: seconds > 0 ? Math.round(records / seconds) : 0,
    hosts: rows,
    ...(exportShards === undefined ? {} : { shards }),
    problems,
  };
  if (v.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  else {
    printTable(result, (line) => process.stdout.write(`${line}\n`));
    if (exportShards !== undefined)
      printShardTable(exportShards, shards, (line) => process.stdout.write(`${line}\n`));
  }
  if (result.ok) rmSync(join(logDir, 'hosts'), { recursive: true, force: true });

  return result.ok ? 0 : 1;
}

/** Honest hosts on different corpus logs (or --log files), then one tampered host. */
function fleetSpecs(
  runId: string,
  honest: number,
  logs: string[],
  cap: number,
  tamper: string,
): FleetHostSpec[] {
  const sources: LogSource[] =
    logs.length > 0
      ? logs.map((path) => loadLog(path, undefined, cap))
      : Array.from({ length: honest }, (_, i) => {
          const l = CORPUS_LOGS[i];
          // More hosts than corpus logs: the rest play generated logs (with a few violations).
          return l === undefined
            ? syntheticLog(Math.min(cap, 1000), i, [3, 200])
            : corpusLog(l.path, l.digestAlg, cap);
        });
  const specs: FleetHostSpec[] = sources.map((source, i) => ({ hostId: `demo-${runId}-h${i + 1}`, source }));
  const victim = corpusLog(
    'kunpengsecl/ascii_runtime_measurements_ima-ng_sha1_orig',
    'sha1',
    Math.min(cap, 1500),
  );
  const seq = Math.floor(victim.records.length / 3);
  specs.push({ hostId: `demo-${runId}-tampered`, source: victim, tamper: { kind: tamper as 'change', seq } });

  return specs;
}

/** Waits until honest hosts are attested over their whole log and tampered hosts are alerted. */
async function waitForOutcome(
  specs: FleetHostSpec[],
  observer: Observer,
  services: ServiceProcess[],
  timeoutMs: number,
  say: (msg: string) => void,
): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  const pending = () =>
    specs.filter((s) =>
      s.tamper === undefined
        ? !observer.attested(s.hostId, s.source.records.length)
        : observer.alerts(s.hostId).length === 0,
    );
  let lastReport = 0;
  while (Date.now() < deadline) {
    const dead = crashed(services);
    if (dead.length > 0) return [`pipeline process exited: ${dead.join(', ')}`];
    const left = pending();
    if (left.length === 0) return [];
    if (Date.now() - lastReport > 10_000) {
      say(`waiting for ${left.map((s) => s.hostId).join(', ')}`);
      lastReport = Date.now();
    }
    await sleep(250);
  }

  return pending().map((s) => `${s.hostId}: ${s.tamper === undefined ? 'not attested' : 'no alert'} in time`);
}

function stackStartMs(): number | null {
  const ms = Number(process.env.IMASTREAM_DEMO_STACK_MS);
  return Number.isFinite(ms) && ms > 0 ? ms : null;
}

process.exitCode = await main();
