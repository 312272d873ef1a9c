import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { isAllZero } from '../../lib/bytes/hex.ts';
import { ImastreamError } from '../../lib/errors.ts';
import type { KernelStateView } from '../kernel-emulator/protocol.ts';
import { SocketKernelLog } from '../kernel-emulator/socket-log.ts';
import type { LogSource } from './logs.ts';
import type { WriterOptions } from './writer.ts';

/** How a demo host cuts its log (`npm run demo -- --trim`): the agent's --cut flags. */
export interface TrimSpec {
  /** `stage`: A to _staged, read it, D. `delete`: N to the original file. */
  mode: 'stage' | 'delete';
  /** The agent cuts when the kernel holds this many records. */
  cutRecords: number;
}

const REPO_DIR = fileURLToPath(new URL('../../', import.meta.url));
const EMULATOR = join(REPO_DIR, 'services/kernel-emulator/main.ts');
const START_TIMEOUT_MS = 30_000;

/**
 * One host's Linux 7.2 kernel for the demo: the kernel emulator in its own process
 * (services/kernel-emulator/main.ts), serving the staging interface on a Unix socket and
 * extending the host's swtpm as the kernel would. The agent reads and cuts the list through that
 * socket (`--kernel socket:PATH`), the same code path as on securityfs; the demo's writer plays the
 * log into it with `measureMany`, standing in for the kernel's own measuring.
 */
export class EmulatedKernelProcess {
  readonly socketPath: string;
  readonly logFile: string;

  private readonly child: ChildProcess;
  private readonly exited: Promise<number | null>;
  private control: SocketKernelLog | undefined;

  private constructor(child: ChildProcess, dir: string) {
    this.child = child;
    this.socketPath = join(dir, 'ima.sock');
    this.logFile = join(dir, 'kernel-emulator.log');

    this.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
  }

  /** Starts the emulator for the host in `dir`, extending the TPM at `tcti`; waits until it listens. */
  static async start(dir: string, tcti: string): Promise<EmulatedKernelProcess> {
    const socketPath = join(dir, 'ima.sock');
    const logFile = join(dir, 'kernel-emulator.log');
    const out = openSync(logFile, 'a');
    // sha256 as a second list, so hosts playing a _sha256 log read their own bank's file.
    // No --dir mirror: the demo has no reader for it, and its renames race under concurrent changes.
    const args = ['--import', 'tsx', EMULATOR, '--socket', socketPath];
    args.push('--banks', 'sha256', '--tcti', tcti);
    const child = spawn(process.execPath, args, { stdio: ['ignore', out, out], cwd: REPO_DIR });
    closeSync(out);
    const kernel = new EmulatedKernelProcess(child, dir);
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (!kernel.listening()) {
      if (child.exitCode !== null || Date.now() > deadline) {
        const tail = existsSync(logFile)
          ? readFileSync(logFile, 'utf8').split('\n').slice(-3).join('\n')
          : '';
        child.kill('SIGKILL');
        throw new ImastreamError('IMS_TOOL_FAILED', `kernel emulator did not start\n${tail}`);
      }
      await sleep(100);
    }
    kernel.control = await SocketKernelLog.connect(socketPath);

    return kernel;
  }

  /** A writer that plays `source` into this kernel. */
  writer(source: LogSource): KernelWriter {
    return new KernelWriter(this, source);
  }

  /** Counters of the emulated kernel (records held, staged, freed so far). */
  async state(): Promise<KernelStateView> {
    return this.connection().state();
  }

  async measureMany(records: LogSource['records']): Promise<void> {
    // A record logged with an all-zero digest is a violation; the kernel extends 0xFF for it.
    await this.connection().measureMany(
      records.map((r) => ({
        pcr: r.pcr,
        templateName: r.templateName,
        templateData: r.templateData,
        violation: isAllZero(r.templateDigest),
      })),
    );
  }

  async stop(): Promise<void> {
    await this.control?.close().catch(() => undefined);
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    await Promise.race([this.exited, sleep(10_000)]);
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }

  private connection(): SocketKernelLog {
    if (this.control === undefined)
      throw new ImastreamError('IMS_TOOL_FAILED', 'kernel emulator not started');
    return this.control;
  }

  private listening(): boolean {
    if (!existsSync(this.logFile)) return false;
    return readFileSync(this.logFile, 'utf8').includes('"kernel emulator up"');
  }
}

/**
 * The demo's writer for a trimming host: like LogWriter, but the records go into the emulated
 * kernel's list (which extends the TPM itself) instead of a file.
 */
export class KernelWriter {
  /** The emulator's socket: the list lives there (the agent reads it through the socket). */
  readonly path: string;
  private readonly kernel: EmulatedKernelProcess;
  private readonly source: LogSource;
  private next = 0;

  constructor(kernel: EmulatedKernelProcess, source: LogSource) {
    this.kernel = kernel;
    this.source = source;
    this.path = kernel.socketPath;
  }

  get written(): number {
    return this.next;
  }

  get total(): number {
    return this.source.records.length;
  }

  /** Measures the next `n` records (at most 1000 a request: the channel's batch limit). */
  async writeNext(n: number): Promise<number> {
    const records = this.source.records.slice(this.next, this.next + n);
    for (let i = 0; i < records.length; i += 1000) await this.kernel.measureMany(records.slice(i, i + 1000));
    this.next += records.length;

    return records.length;
  }

  async writeAll(opts: WriterOptions, stopped: () => boolean = () => false): Promise<void> {
    while (!stopped() && (await this.writeNext(opts.batch)) > 0) await sleep(opts.pauseMs);
  }
}
