import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Kafka, logLevel } from 'kafkajs';
import { CLI } from './host.ts';

/** One pipeline process the demo runs (`imastream <command>`), its output in a log file. */
export interface ServiceProcess {
  name: string;
  child: ChildProcess;
  logFile: string;
}

/** Consumer groups of one run's pipeline: fresh per run, so runs never share partitions. */
export function pipelineGroups(runId: string) {
  return {
    replayer: `imastream-replayer-${runId}`,
    checker: `imastream-qc-${runId}`,
    checkerRefs: `imastream-qc-refs-${runId}`,
    enroller: `imastream-enroller-${runId}`,
  };
}

export interface PipelineOptions {
  /** Time between nonce epochs (the nonce service's --interval). */
  nonceInterval?: string;
  /** The quote-checker's --deadline-ms: an unjoined quote or checkpoint older than this alerts. */
  deadlineMs?: number;
  /** The enroller's manufacturer roots (--trust-store); none: no EK certificate is trusted. */
  trustStore?: string;
  /** The enroller's --ek-policy for EKs without a certificate (default tofu). */
  ekPolicy?: 'certificate' | 'tofu';
}

/** The fleet side of the demo: the nonce service, two replayers (one group) and a quote-checker. */
export function pipelineServices(
  runId: string,
  opts: PipelineOptions = {},
): { name: string; args: string[] }[] {
  const groups = pipelineGroups(runId);
  const replayer = ['replayer', '--group-id', groups.replayer];
  const checker = ['quote-checker', '--group-id', groups.checker, '--refs-group-id', groups.checkerRefs];
  if (opts.deadlineMs !== undefined) checker.push('--deadline-ms', String(opts.deadlineMs));
  const enroller = ['enroller', '--group-id', groups.enroller, '--ek-policy', opts.ekPolicy ?? 'tofu'];
  if (opts.trustStore !== undefined) enroller.push('--trust-store', opts.trustStore);
  return [
    { name: 'nonces', args: ['nonces', '--interval', opts.nonceInterval ?? '10s'] },
    { name: 'replayer-1', args: replayer },
    { name: 'replayer-2', args: replayer },
    { name: 'quote-checker', args: checker },
    { name: 'enroller', args: enroller },
  ];
}

/** Topics whose history a fresh pipeline must not re-read (other runs' hosts). */
const STREAM_TOPICS = ['ima.measurements', 'ima.quotes', 'ima.checkpoints'];

/**
 * Commits the current end of the stream topics for each group before it first joins: a new group
 * would otherwise start from the earliest offset and work through every earlier run's traffic
 * first (the shared adapter's default), with quotes whose nonces have long expired.
 */
export async function startGroupsAtEnd(
  brokers: string[],
  groupIds: readonly string[],
  topics: readonly string[] = STREAM_TOPICS,
): Promise<void> {
  const admin = new Kafka({ clientId: 'imastream-demo-admin', brokers, logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    for (const topic of topics) {
      const ends = await admin.fetchTopicOffsets(topic);
      const partitions = ends.map((p) => ({ partition: p.partition, offset: p.high }));
      for (const groupId of groupIds) await admin.setOffsets({ groupId, topic, partitions });
    }
  } finally {
    await admin.disconnect();
  }
}

/** Starts `imastream <args>` with its stdout and stderr in `<logDir>/<name>.log`. */
export function startService(
  name: string,
  args: string[],
  logDir: string,
  env: NodeJS.ProcessEnv,
): ServiceProcess {
  mkdirSync(logDir, { recursive: true });
  const logFile = join(logDir, `${name}.log`);
  const out = openSync(logFile, 'a');
  const child = spawn(process.execPath, [CLI, ...args], {
    stdio: ['ignore', out, out],
    env: { ...process.env, ...env },
  });
  closeSync(out);

  return { name, child, logFile };
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves the exit codes by name. */
export async function stopServices(
  services: readonly ServiceProcess[],
  graceMs = 15_000,
): Promise<Record<string, number | null>> {
  const codes: Record<string, number | null> = {};
  await Promise.all(
    services.map(async ({ name, child }) => {
      if (child.exitCode !== null || child.signalCode !== null) {
        codes[name] = child.exitCode;
        return;
      }
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      child.kill('SIGTERM');
      const code = await Promise.race([exited, sleep(graceMs).then(() => 'timeout' as const)]);
      if (code === 'timeout') {
        child.kill('SIGKILL');
        codes[name] = await exited;
      } else codes[name] = code;
    }),
  );

  return codes;
}

/** Names of services that exited on their own (a crash), for an early, clear failure. */
export function crashed(services: readonly ServiceProcess[]): string[] {
  return services.filter((s) => s.child.exitCode !== null).map((s) => `${s.name} (exit ${s.child.exitCode})`);
}
