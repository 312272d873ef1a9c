import type { Redis } from 'ioredis';
import type { FleetHostSpec } from './fleet.ts';
import type { Observer } from './observer.ts';

/** One host's line in the demo report. */
export interface HostRow {
  hostId: string;
  log: string;
  role: 'honest' | 'tampered';
  records: number;
  /** Records the replayer applied for the host's boot (Redis nextSeq). */
  replayed: number | null;
  replayStatus: string | null;
  quotesVerified: number;
  shardsClosed: number;
  /** Highest seq covered by a closed shard. */
  attestedTo: number;
  alerts: { kind: string; seq: number | null; bank: string | null; message: string }[];
  /** Honest: attested over the whole log with no alert. Tampered: alerted. */
  ok: boolean;
}

export async function rowOf(spec: FleetHostSpec, observer: Observer, redis: Redis): Promise<HostRow> {
  const closed = observer.closed(spec.hostId);
  const alerts = observer.alerts(spec.hostId);
  const replay = await readReplay(redis, spec.hostId);
  const records = spec.source.records.length;
  const role = spec.tamper === undefined ? 'honest' : 'tampered';
  const attestedTo = closed.reduce((m, v) => Math.max(m, v.endSeq ?? 0), 0);

  return {
    hostId: spec.hostId,
    log: spec.source.name,
    role,
    records,
    replayed: replay?.nextSeq ?? null,
    replayStatus: replay?.status ?? null,
    quotesVerified: new Set(closed.map((v) => v.quoteId)).size,
    shardsClosed: closed.length,
    attestedTo,
    alerts: alerts.map((a) => ({ kind: a.kind, seq: a.seq, bank: a.bank, message: a.message })),
    ok: role === 'honest' ? attestedTo >= records && alerts.length === 0 : alerts.length > 0,
  };
}

async function readReplay(
  redis: Redis,
  hostId: string,
): Promise<{ nextSeq: number; status: string } | undefined> {
  try {
    const text = await redis.get(`h:{${hostId}}:replay`);
    return text === null ? undefined : (JSON.parse(text) as { nextSeq: number; status: string });
  } catch {
    return undefined;
  }
}

interface Summary {
  ok: boolean;
  stackStartMs: number | null;
  records: number;
  seconds: number;
  recordsPerSecond: number;
  hosts: HostRow[];
  problems: string[];
}

/** The human report: one line per host, then the figures. */
export function printTable(s: Summary, out: (line: string) => void): void {
  const head = ['host', 'role', 'log', 'records', 'replayed', 'quotes ok', 'shards', 'alerts', 'result'];
  const rows = s.hosts.map((h) => [
    h.hostId,
    h.role,
    h.log,
    String(h.records),
    h.replayed === null ? '-' : String(h.replayed),
    String(h.quotesVerified),
    String(h.shardsClosed),
    alertText(h),
    h.ok ? 'OK' : 'FAIL',
  ]);
  const widths = head.map((_, i) => Math.max(head[i]!.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ');
  out(line(head));
  out(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const r of rows) out(line(r));
  out('');
  out(
    `stack start: ${s.stackStartMs === null ? 'already running' : `${(s.stackStartMs / 1000).toFixed(1)} s`}`,
  );
  out(
    `throughput: ${s.records} records in ${s.seconds.toFixed(1)} s = ${s.recordsPerSecond} records/s (log written → all verdicts)`,
  );
  for (const p of s.problems) out(`problem: ${p}`);
  out(s.ok ? 'demo: OK' : 'demo: FAILED');
}

function alertText(h: HostRow): string {
  if (h.alerts.length === 0) return '0';
  const first = h.alerts[0]!;
  return `${h.alerts.length} (${first.kind} seq ${first.seq ?? '-'}${first.bank === null ? '' : ` ${first.bank}`})`;
}
