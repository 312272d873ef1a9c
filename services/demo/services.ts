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

/** The fleet side of the demo: two replayers, one quote-checker and the nonce service. */
export const PIPELINE_SERVICES: readonly { name: string; args: string[] }[] = [
  { name: 'nonces', args: ['nonces'] },
  { name: 'replayer-1', args: ['replayer'] },
  { name: 'replayer-2', args: ['replayer'] },
  { name: 'quote-checker', args: ['quote-checker'] },
];

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
