import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CLI } from './host.ts';

/** One pipeline process the demo runs (`imastream <command>`), its output in a log file. */
export interface ServiceProcess {
  name: string;
  child: ChildProcess;
  logFile: string;
}

/**
 * The fleet side of the demo: the nonce service, two replayers (one consumer group) and a
 * quote-checker. Group ids carry the run id, so a demo never shares partitions with other
 * processes that happen to use the same broker.
 */
export function pipelineServices(runId: string, nonceInterval = '5s'): { name: string; args: string[] }[] {
  const replayer = ['replayer', '--group-id', `imastream-replayer-${runId}`];
  return [
    { name: 'nonces', args: ['nonces', '--interval', nonceInterval] },
    { name: 'replayer-1', args: replayer },
    { name: 'replayer-2', args: replayer },
    {
      name: 'quote-checker',
      args: [
        'quote-checker',
        '--group-id',
        `imastream-qc-${runId}`,
        '--refs-group-id',
        `imastream-qc-refs-${runId}`,
      ],
    },
  ];
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
