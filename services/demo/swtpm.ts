import { execFile, spawn } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { ImastreamError } from '../../lib/errors.ts';
import type { Manufacturer } from './manufacturer.ts';

const run = promisify(execFile);

/**
 * One software TPM (swtpm 0.7, DOMAIN.md §5) for a simulated host: its own state folder and a
 * free pair of loopback ports (server P, control P+1). Started with startup-clear, so it is ready
 * for tpm2-tools at once; stopped orderly (TPM2_Shutdown, then SIGTERM) so the dictionary-attack
 * counter never grows from unorderly resets.
 */
export class Swtpm {
  readonly dir: string;
  readonly port: number;
  private pid: number | undefined;

  private constructor(dir: string, port: number) {
    this.dir = dir;
    this.port = port;
  }

  /** TCTI string for tpm2-tools (`swtpm:`; `mssim:` does not work with swtpm 0.7). */
  get tcti(): string {
    return `swtpm:host=127.0.0.1,port=${this.port}`;
  }

  /** With a manufacturer, the TPM gets EKs and EK certificates first (./manufacturer.ts). */
  static async start(dir: string, manufacturer?: Manufacturer): Promise<Swtpm> {
    mkdirSync(dir, { recursive: true });
    await manufacturer?.manufacture(dir);
    const port = await freePortPair();
    const tpm = new Swtpm(dir, port);
    await tpm.launch();

    return tpm;
  }

  /** Runs a tpm2-tools command against this TPM. */
  async tool(name: string, args: string[]): Promise<string> {
    try {
      const { stdout } = await run(name, args, {
        env: { ...process.env, TPM2TOOLS_TCTI: this.tcti },
        maxBuffer: 1 << 24,
        timeout: 60_000,
      });
      return stdout;
    } catch (err) {
      const stderr = (err as { stderr?: string }).stderr ?? '';
      throw new ImastreamError('IMS_TOOL_FAILED', `${name}: ${stderr.trim().split('\n').at(-1)}`, {
        cause: err,
      });
    }
  }

  /** Orderly stop: TPM2_Shutdown(CLEAR), then SIGTERM. */
  async stop(): Promise<void> {
    if (this.pid === undefined) return;
    await this.tool('tpm2_shutdown', ['-c']).catch(() => undefined);
    try {
      process.kill(this.pid, 'SIGTERM');
    } catch {
      // already gone
    }
    for (let i = 0; i < 50 && alive(this.pid); i++) await sleep(20);
    this.pid = undefined;
  }

  private async launch(): Promise<void> {
    const pidFile = join(this.dir, 'swtpm.pid');
    const args = [
      'socket',
      '--tpm2',
      '--tpmstate',
      `dir=${this.dir}`,
      '--server',
      `type=tcp,port=${this.port},bindaddr=127.0.0.1`,
      '--ctrl',
      `type=tcp,port=${this.port + 1},bindaddr=127.0.0.1`,
      '--flags',
      'not-need-init,startup-clear',
      '--daemon',
      '--pid',
      `file=${pidFile}`,
      '--log',
      `file=${join(this.dir, 'swtpm.log')},level=1`,
    ];
    await new Promise<void>((resolve, reject) => {
      const child = spawn('swtpm', args, { stdio: 'ignore' });
      child.on('error', reject);
      child.on('exit', (code) =>
        code === 0 ? resolve() : reject(new ImastreamError('IMS_TOOL_FAILED', `swtpm exit ${code}`)),
      );
    });
    this.pid = Number(readFileSync(pidFile, 'utf8').trim());
    // Three unorderly resets would lock the AK out (DA lockout): make the lockout harmless.
    await this.tool('tpm2_dictionarylockout', ['-s', '-n', '1000', '-t', '1', '-l', '1']);
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A port P such that P and P+1 are both free on 127.0.0.1. */
async function freePortPair(): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const port = 20_000 + Math.floor(Math.random() * 20_000) * 2;
    if ((await isFree(port)) && (await isFree(port + 1))) return port;
  }
  throw new ImastreamError('IMS_TOOL_FAILED', 'no free port pair for swtpm');
}

function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}
