import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { ImastreamError } from '../../lib/errors.ts';
import type { LogSource } from './logs.ts';
import type { Manufacturer } from './manufacturer.ts';
import { Swtpm } from './swtpm.ts';
import { EmulatedKernelProcess, type KernelWriter, type TrimSpec } from './trim.ts';
import { LogWriter, type WriterOptions } from './writer.ts';

export const REPO_DIR = fileURLToPath(new URL('../../', import.meta.url));
export const CLI = join(REPO_DIR, 'bin/imastream.js');

export interface HostSpec {
  hostId: string;
  source: LogSource;
  /** Where the agent produces measurements (an intercept topic for a tampered host). */
  measurementsTopic?: string;
  /** Where the agent sends its sealed shards (default ima.shards). */
  shardsTopic?: string;
  /** The host cuts its log through the kernel emulator (demo --trim); default: a plain log file. */
  trim?: TrimSpec;
  quoteIntervalS?: number;
  akAlg?: 'rsa' | 'rsapss' | 'ecc';
  brokers: string;
  /** Extra environment for the agent (log level). */
  env?: NodeJS.ProcessEnv;
  /** Further agent flags (tests), after the ones the spec sets. */
  agentArgs?: string[];
}

/**
 * A simulated host: its own swtpm, a writer playing a real IMA log into a log file and into the
 * TPM's PCRs, and a real agent process (`imastream agent`) following that file. Nothing is mocked:
 * the agent talks to the TPM through tpm2-tools and to Kafka like on a real host.
 */
export class SimHost {
  readonly spec: HostSpec;
  readonly dir: string;
  readonly tpm: Swtpm;
  readonly writer: LogWriter | KernelWriter;
  /** The emulated Linux 7.2 kernel of a trimming host. */
  readonly kernel: EmulatedKernelProcess | undefined;
  readonly hostBootId = randomUUID();
  private agent: ChildProcess | undefined;
  private agentExit: Promise<number | null> | undefined;
  private agentStarts = 0;

  private constructor(spec: HostSpec, dir: string, tpm: Swtpm, kernel?: EmulatedKernelProcess) {
    this.spec = spec;
    this.dir = dir;
    this.tpm = tpm;
    this.kernel = kernel;
    this.writer =
      kernel === undefined
        ? new LogWriter(tpm, join(dir, 'binary_runtime_measurements'), spec.source)
        : kernel.writer(spec.source);
  }

  static async start(spec: HostSpec, baseDir: string, manufacturer?: Manufacturer): Promise<SimHost> {
    const dir = join(baseDir, spec.hostId);
    mkdirSync(dir, { recursive: true });
    const tpm = await Swtpm.start(join(dir, 'tpm'), manufacturer);
    const kernel = spec.trim === undefined ? undefined : await EmulatedKernelProcess.start(dir, tpm.tcti);

    return new SimHost(spec, dir, tpm, kernel);
  }

  get hostId(): string {
    return this.spec.hostId;
  }

  /** The agent's JSON log of its latest start. */
  get agentLog(): string {
    return join(this.dir, `agent-${this.agentStarts}.log`);
  }

  /** Starts the agent and waits until it says it is ready (AK enrolled, consumers joined). */
  async startAgent(timeoutMs = 60_000): Promise<void> {
    this.agentStarts++;
    const out = openSync(this.agentLog, 'w');
    const child = spawn(process.execPath, [CLI, 'agent', ...this.agentArgs()], {
      stdio: ['ignore', out, out],
      env: { ...process.env, ...this.spec.env },
    });
    closeSync(out);
    this.agent = child;
    this.agentExit = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
    await this.waitForLog('agent ready', timeoutMs);
  }

  /** Stops the agent with `signal` (SIGTERM = clean stop, SIGKILL = crash); resolves its exit code. */
  async stopAgent(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    const child = this.agent;
    if (child === undefined || this.agentExit === undefined) return null;
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    const code = await this.agentExit;
    this.agent = undefined;

    return code;
  }

  /** Plays the whole log into the file and the TPM. */
  async play(opts: WriterOptions, stopped?: () => boolean): Promise<void> {
    await this.writer.writeAll(opts, stopped);
  }

  async stop(): Promise<void> {
    await this.stopAgent('SIGTERM');
    await this.kernel?.stop();
    await this.tpm.stop();
  }

  /** Waits for a JSON log line of the current agent with `msg`; fails early if the agent exits. */
  async waitForLog(msg: string, timeoutMs: number): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const line = this.findLog(msg);
      if (line !== undefined) return line;
      if (this.agent !== undefined && this.agent.exitCode !== null) break;
      await sleep(100);
    }
    const tail = existsSync(this.agentLog)
      ? readFileSync(this.agentLog, 'utf8').split('\n').slice(-5).join('\n')
      : '';
    throw new ImastreamError('IMS_TOOL_FAILED', `${this.hostId}: agent did not log '${msg}'\n${tail}`);
  }

  /** The agent's log lines of its latest start, parsed. */
  agentLines(): Record<string, unknown>[] {
    if (!existsSync(this.agentLog)) return [];
    return readFileSync(this.agentLog, 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  }

  private findLog(msg: string): Record<string, unknown> | undefined {
    return this.agentLines().find((l) => l.msg === msg);
  }

  private agentArgs(): string[] {
    const s = this.spec;
    const args = [
      '--host-id',
      s.hostId,
      '--log',
      this.writer.path,
      '--digest-alg',
      s.source.digestAlg,
      '--state-dir',
      join(this.dir, 'agent-state'),
      '--tcti',
      this.tpm.tcti,
      '--quote-interval',
      String(s.quoteIntervalS ?? 2),
      '--brokers',
      s.brokers,
      '--boot-id',
      this.hostBootId,
      '--poll-ms',
      '100',
      '--ak-alg',
      s.akAlg ?? 'rsa',
    ];
    if (s.measurementsTopic !== undefined) args.push('--measurements-topic', s.measurementsTopic);
    if (s.shardsTopic !== undefined) args.push('--shards-topic', s.shardsTopic);
    if (s.trim !== undefined && this.kernel !== undefined) {
      args.push('--kernel', `socket:${this.kernel.socketPath}`);
      args.push('--cut', s.trim.mode, '--cut-records', String(s.trim.cutRecords));
    }
    args.push(...(s.agentArgs ?? []));

    return args;
  }
}
