/**
 * A simulated Linux 7.2 host for the cut tests: its own swtpm, the kernel emulator as a separate
 * process (services/kernel-emulator/main.ts) that logs measurements and extends them into the
 * swtpm like the kernel does, and real agent processes reading it through the socket. Nothing is
 * mocked: the agent uses tpm2-tools, the real broker and its real state directory.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { toHex } from '../../lib/bytes/hex.ts';
import type { ImaRecord } from '../../lib/ima/record.ts';
import { ensureAk, TpmTools } from '../../services/agent/tpm.ts';
import { Swtpm } from '../../services/demo/swtpm.ts';
import { SocketKernelLog } from '../../services/kernel-emulator/socket-log.ts';

export const REPO = new URL('../../', import.meta.url).pathname;
const CLI = join(REPO, 'bin/imastream.js');
const EMULATOR = join(REPO, 'services/kernel-emulator/main.ts');
export const AK_HANDLE = '0x81010002';

export interface StagingHostSpec {
  hostId: string;
  brokers: string;
  topic: string;
  /** Agent flags for the cut (e.g. ['--cut', 'stage', '--cut-records', '30']). */
  cutArgs: string[];
  /** Follow this plain file (`--log`) instead of the emulator (`--kernel socket:`). */
  logFile?: string;
  /** Read the emulator's mirrored files as securityfs (`--kernel securityfs:DIR`). */
  securityfs?: boolean;
}

export class StagingHost {
  readonly hostBootId: string;
  private agent: ChildProcess | undefined;
  private agentExit: Promise<{ code: number | null; signal: NodeJS.Signals | null }> | undefined;
  private starts = 0;
  private emulator: ChildProcess | undefined;
  control!: SocketKernelLog;

  /** tpm2-tools against this host's swtpm (AK, PCR extends, reads), flushed after each tool. */
  readonly tools: TpmTools;

  private constructor(
    readonly spec: StagingHostSpec,
    readonly dir: string,
    readonly tpm: Swtpm,
  ) {
    this.hostBootId = randomUUID();
    const work = join(dir, 'tpm-tools');
    mkdirSync(work, { recursive: true });
    this.tools = new TpmTools(tpm.tcti, work);
  }

  static async start(spec: StagingHostSpec, base: string): Promise<StagingHost> {
    const dir = join(base, spec.hostId);
    mkdirSync(dir, { recursive: true });
    // The demo's swtpm runner: it picks its port pair outside the ephemeral range, where the
    // broker connections of a busy test machine do not crowd it.
    const host = new StagingHost(spec, dir, await Swtpm.start(join(dir, 'tpm')));
    await host.preEnrol();
    await host.startEmulator();

    return host;
  }

  /**
   * Creates the AK the way the agent does and writes the agent's "already enrolled" marker, so
   * the cut tests need no enroller running (enrolment has its own tests: enrol-*.test.ts). The
   * marker only skips a round trip; it is what the agent itself writes after enrolling.
   */
  private async preEnrol(): Promise<void> {
    const ak = await ensureAk(this.tools, AK_HANDLE, 'rsa');
    const stateDir = join(this.dir, 'agent-state');
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    writeFileSync(
      join(stateDir, 'enrolled-ak.json'),
      JSON.stringify({ akName: toHex(ak.akName), at: Date.now() }),
    );
  }

  get socket(): string {
    return join(this.dir, 'ima.sock');
  }

  get agentLog(): string {
    return join(this.dir, `agent-${this.starts}.log`);
  }

  private async startEmulator(): Promise<void> {
    const out = openSync(join(this.dir, 'emulator.log'), 'w');
    this.emulator = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        EMULATOR,
        '--socket',
        this.socket,
        '--tcti',
        this.tpm.tcti,
        '--dir',
        this.mirrorDir,
      ],
      { stdio: ['ignore', out, out], cwd: REPO },
    );
    closeSync(out);
    const deadline = Date.now() + 60_000;
    for (;;) {
      try {
        this.control = await SocketKernelLog.connect(this.socket);
        return;
      } catch (err) {
        if (Date.now() > deadline || this.emulator.exitCode !== null) throw err;
        await sleep(100);
      }
    }
  }

  /** The emulated kernel measures these records (appended, then extended into the swtpm). */
  async measure(records: readonly ImaRecord[]): Promise<void> {
    await this.control.measureMany(records);
  }

  /** Starts an agent process; `crashAt` sets the test-only fault injection hook. */
  async startAgent(opts: { crashAt?: string; bootId?: string } = {}): Promise<void> {
    this.starts++;
    const out = openSync(this.agentLog, 'w');
    const env: NodeJS.ProcessEnv = { ...process.env, IMASTREAM_LOG_LEVEL: 'info' };
    delete env.IMASTREAM_AGENT_CRASH_AT;
    if (opts.crashAt !== undefined) env.IMASTREAM_AGENT_CRASH_AT = opts.crashAt;
    const s = this.spec;
    const args = [
      CLI,
      'agent',
      '--host-id',
      s.hostId,
      ...this.kernelArgs(),
      '--digest-alg',
      'sha1',
      '--state-dir',
      join(this.dir, 'agent-state'),
      '--tcti',
      this.tpm.tcti,
      '--ak-ctx',
      AK_HANDLE,
      '--quote-interval',
      '3600',
      '--brokers',
      s.brokers,
      '--boot-id',
      opts.bootId ?? this.hostBootId,
      '--poll-ms',
      '100',
      '--measurements-topic',
      s.topic,
      ...s.cutArgs,
    ];
    const child = spawn(process.execPath, args, { stdio: ['ignore', out, out], env });
    closeSync(out);
    this.agent = child;
    this.agentExit = new Promise((resolve) =>
      child.once('exit', (code, signal) => resolve({ code, signal })),
    );
    await this.waitForLog('agent ready', 120_000);
  }

  /** The emulator's files, mirrored after every change (written to a temp name, then renamed). */
  get mirrorDir(): string {
    return join(this.dir, 'securityfs');
  }

  private kernelArgs(): string[] {
    if (this.spec.logFile !== undefined) return ['--log', this.spec.logFile];
    if (this.spec.securityfs === true) return ['--kernel', `securityfs:${this.mirrorDir}`];
    return ['--kernel', `socket:${this.socket}`];
  }

  /** Whether the agent process has exited. */
  get agentRunning(): boolean {
    return this.agent !== undefined && this.agent.exitCode === null && this.agent.signalCode === null;
  }

  /** Waits for the agent to exit by itself (the injected crash). */
  async agentExited(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    const exit = (await this.agentExit) ?? { code: null, signal: null };
    this.agent = undefined;
    return exit;
  }

  async stopAgent(
    signal: NodeJS.Signals = 'SIGTERM',
  ): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.agent === undefined) return { code: null, signal: null };
    if (this.agentRunning) this.agent.kill(signal);
    return this.agentExited();
  }

  agentLines(): Record<string, unknown>[] {
    if (!existsSync(this.agentLog)) return [];
    return readFileSync(this.agentLog, 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  }

  async waitForLog(msg: string, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.agentLines().some((l) => l.msg === msg)) return;
      if (!this.agentRunning) break;
      await sleep(100);
    }
    const tail = existsSync(this.agentLog)
      ? readFileSync(this.agentLog, 'utf8').split('\n').slice(-6).join('\n')
      : '';
    throw new Error(`${this.spec.hostId}: agent did not log '${msg}'\n${tail}`);
  }

  /** The AK public area (TPM2B_PUBLIC) the agent persisted. */
  async akPublic(): Promise<Uint8Array> {
    const file = this.tools.file('ak-test.pub');
    await this.tools.exclusive(() => this.tools.tool('tpm2_readpublic', ['-c', AK_HANDLE, '-o', file]));
    return new Uint8Array(await readFile(file));
  }

  async stop(): Promise<void> {
    await this.stopAgent('SIGTERM').catch(() => undefined);
    await this.control?.close().catch(() => undefined);
    this.emulator?.kill('SIGTERM');
    await this.tpm.stop();
  }
}
