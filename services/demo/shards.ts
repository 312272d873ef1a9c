import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Kafka, logLevel } from 'kafkajs';
import { eventName } from '../../lib/shard/records.ts';
import { verifyShardChain } from '../../lib/shard/verify.ts';
import { ShardStore, safeName } from '../shard-archiver/store.ts';
import { TOPIC } from '../shared/topics.ts';
import type { SimHost } from './host.ts';
import type { LogSource } from './logs.ts';
import { type ServiceProcess, startService } from './services.ts';

/** The demo's shard figures for one host (`--export-shards`). */
export interface ShardRow {
  /** Shards the host's agent sealed (its 'shard sealed' log lines). */
  sealed: number;
  /** Shard files the archiver verified and stored. */
  archived: number;
  /** Highest seq the archived chain covers contiguously from seq 0. */
  archivedTo: number;
  /** `imastream verify-shard` over the archived chain, re-run here: ok or the first failure. */
  chain: 'ok' | 'none' | string;
  /** With --trim: records the emulated kernel freed (cut from its list) and still holds. */
  kernel?: { freed: number; held: number };
}

/**
 * Starts the shard archiver (`imastream shard-archiver --out DIR`) for a demo run, in a group of
 * its own that starts at the current end of ima.shards, so earlier runs' shards stay out of DIR.
 */
export async function startArchiver(
  runId: string,
  outDir: string,
  logDir: string,
  brokers: string[],
  env: NodeJS.ProcessEnv,
): Promise<ServiceProcess> {
  const groupId = `imastream-shard-archiver-${runId}`;
  const admin = new Kafka({ clientId: 'imastream-demo-admin', brokers, logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    const ends = await admin.fetchTopicOffsets(TOPIC.shards);
    const partitions = ends.map((p) => ({ partition: p.partition, offset: p.high }));
    await admin.setOffsets({ groupId, topic: TOPIC.shards, partitions });
  } finally {
    await admin.disconnect();
  }

  // Only this run's hosts: other runs and tests may be sending shards on ima.shards right now.
  const args = ['shard-archiver', '--out', outDir, '--group-id', groupId, '--host-prefix', `demo-${runId}-`];

  return startService('shard-archiver', args, logDir, env);
}

/** Whether a log's first record is a boot_aggregate (what anchors a sealed chain at seq 0). */
export function startsWithBootAggregate(source: LogSource): boolean {
  const first = source.records[0];
  return first !== undefined && eventName(first, true) === 'boot_aggregate';
}

/** What the archive holds for a host, re-verified offline from the files. */
export async function shardRow(host: SimHost, outDir: string): Promise<ShardRow> {
  const row = await archivedRow(host, outDir);
  if (host.kernel === undefined) return row;
  const state = await host.kernel.state();

  return { ...row, kernel: { freed: state.freed, held: state.count } };
}

async function archivedRow(host: SimHost, outDir: string): Promise<ShardRow> {
  const sealed = host.agentLines().filter((l) => l.msg === 'shard sealed').length;
  const store = new ShardStore(outDir);
  let boots: string[] = [];
  try {
    boots = readdirSync(join(outDir, safeName(host.hostId)));
  } catch {
    return { sealed, archived: 0, archivedTo: 0, chain: 'none' };
  }
  let archived = 0;
  let archivedTo = 0;
  let chain: ShardRow['chain'] = 'none';
  for (const boot of boots) {
    const files = store.list(host.hostId, decodeURIComponent(boot));
    archived += files.length;
    let to = 0;
    for (const f of files) if (f.startSeq === to) to = f.endSeq;
    archivedTo = Math.max(archivedTo, to);
    if (files.length === 0) continue;
    const verdict = await verifyShardChain(files.map((f) => store.read(f.path)));
    const bad = verdict.shards.find((s) => !s.ok);
    if (bad !== undefined)
      chain = `${bad.shardId ?? bad.index}: ${bad.failures.map((f) => f.code).join(',')}`;
    else if (chain === 'none') chain = 'ok';
  }

  return { sealed, archived, archivedTo, chain };
}

/**
 * Waits until every host's archived chain covers its whole log (the quote that attests the end of
 * the log also closes the last shard). Returns one problem per host that is short at the timeout.
 */
export async function waitForArchive(
  hosts: readonly SimHost[],
  outDir: string,
  timeoutMs: number,
): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  const short = async () => {
    const out: string[] = [];
    for (const host of hosts) {
      const row = await shardRow(host, outDir);
      const records = host.spec.source.records.length;
      if (row.archivedTo < records)
        out.push(`${host.hostId}: archived shards cover ${row.archivedTo} of ${records} records`);
      else if (row.chain !== 'ok') out.push(`${host.hostId}: archived chain fails: ${row.chain}`);
    }
    return out;
  };
  let problems = await short();
  while (problems.length > 0 && Date.now() < deadline) {
    await sleep(1000);
    problems = await short();
  }

  return problems;
}

/** The shard part of the demo report. */
export function printShardTable(
  outDir: string,
  rows: Record<string, ShardRow>,
  out: (line: string) => void,
): void {
  const head = [
    'host',
    'shards sealed',
    'archived',
    'archived to seq',
    'chain (verify-shard)',
    'kernel freed/held',
  ];
  const body = Object.entries(rows).map(([hostId, r]) => [
    hostId,
    String(r.sealed),
    String(r.archived),
    String(r.archivedTo),
    r.chain,
    r.kernel === undefined ? '- (no cuts)' : `${r.kernel.freed}/${r.kernel.held}`,
  ]);
  const widths = head.map((_, i) => Math.max(head[i]!.length, ...body.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ');
  out('');
  out(`sealed shards, verified and archived in ${outDir}:`);
  out(line(head));
  out(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const r of body) out(line(r));
}
