import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ImastreamError } from '../../lib/errors.ts';
import type { HashAlg } from '../../lib/hash.ts';
import type { PcrValues } from '../../lib/pcr.ts';
import { parseSerializedPcrs } from '../../lib/tpm/pcr-file.ts';
import { TpmTools } from '../../services/agent/tpm.ts';

/**
 * A software TPM for tests: swtpm 0.7.1 + tpm2-tools 5.4 (Debian bookworm), driven through the
 * agent's tpm2-tools runner (services/agent/tpm.ts), so tests exercise the same tool plumbing as
 * the service. Pitfalls this harness works around (DOMAIN §5):
 *
 *  1. TCTI must be `swtpm:host=127.0.0.1,port=P` — `mssim:` fails against swtpm — and swtpm's
 *     control channel is implicitly P+1. Ports are picked free per instance, never 2321.
 *  2. No resource manager: every tool leaves transient objects and sessions loaded, and the
 *     fourth one fails with 0x902. The runner flushes (`tpm2_flushcontext -t`/`-s`) after each tool.
 *  3. DA lockout: libtpms allows 3 failures and unorderly resets count as failures, which locks
 *     the AK (0x921). setup() relaxes the parameters; stop() always runs `tpm2_shutdown -c`.
 *  4. A reset is `tpm2_shutdown -c`, `swtpm_ioctl -i`, `tpm2_startup -c`: resetCount+1, PCRs
 *     zeroed. `tpm2_startup` (STATE) after a CLEAR shutdown fails with 0x1C4.
 *  5. Saved transient contexts die with a reset (0x1DF): persist an AK that must survive one.
 *  6. tpm2_checkquote 5.4 cannot verify RSAPSS quotes; our verifier is the only oracle for PSS.
 *  7. tpm2_quote with a PSS AK needs `--scheme rsapss` (else 0x2D2).
 *  8. Nothing extends PCR 10 but the test: IMA logs are synthesised and extended by hand.
 */
export class Swtpm {
  readonly dir: string;
  readonly port: number;
  readonly tcti: string;
  readonly tools: TpmTools;
  private readonly child: ChildProcess;
  private stopped = false;
  private readonly killOnExit: () => void;

  private constructor(dir: string, port: number, child: ChildProcess) {
    this.dir = dir;
    this.port = port;
    this.tcti = `swtpm:host=127.0.0.1,port=${port}`;
    this.tools = new TpmTools(this.tcti, dir);
    this.child = child;
    // A test run that dies without stop() must not leave swtpm daemons behind.
    this.killOnExit = () => child.kill('SIGKILL');
    process.once('exit', this.killOnExit);
  }

  /** Starts swtpm on free loopback ports with its state in a fresh temp dir. */
  static async start(): Promise<Swtpm> {
    const dir = await mkdtemp(join(tmpdir(), 'imastream-swtpm-'));
    const port = await freePortPair();
    const child = spawn(
      'swtpm',
      [
        'socket',
        '--tpm2',
        '--tpmstate',
        `dir=${dir}`,
        '--server',
        `type=tcp,port=${port},bindaddr=127.0.0.1`,
        '--ctrl',
        `type=tcp,port=${port + 1},bindaddr=127.0.0.1`,
        '--flags',
        'not-need-init,startup-clear',
        '--log',
        `file=${join(dir, 'swtpm.log')},level=1`,
      ],
      { stdio: 'ignore' },
    );
    const tpm = new Swtpm(dir, port, child);
    try {
      await waitForPort(port, child);
      await tpm.setup();
    } catch (err) {
      await tpm.stop();
      throw err;
    }

    return tpm;
  }

  /** DA parameters that no test can trip: 1000 tries, 1 s recovery. */
  private async setup(): Promise<void> {
    await this.run('tpm2_dictionarylockout', ['-s', '-n', '1000', '-t', '1', '-l', '1']);
  }

  /** Runs one tpm2-tool against this TPM (serialised, transient objects flushed after). */
  run(tool: string, args: string[]): Promise<string> {
    return this.tools.exclusive(() => this.tools.tool(tool, args));
  }

  file(name: string): string {
    return join(this.dir, name);
  }

  /**
   * Creates the EK from the default template (deterministic: the same key after every reset)
   * and persists it at `handle`.
   */
  async createEk(opts: { alg?: 'rsa' | 'ecc'; handle?: string } = {}): Promise<EkHandle> {
    const alg = opts.alg ?? 'rsa';
    const handle = opts.handle ?? '0x81010001';
    const pubPath = this.file(`ek-${alg}-${handle}.pub`);
    await this.run('tpm2_createek', ['-c', handle, '-G', alg, '-u', pubPath]);

    return { handle, alg, pubPath, public: new Uint8Array(await readFile(pubPath)), tools: this.tools };
  }

  /**
   * Creates an AK under `ek` with tpm2_createak (endorsement hierarchy: clockInfo is not
   * obfuscated). `persist` moves it to a persistent handle so it survives reset().
   */
  async createAk(ek: EkHandle, opts: AkOptions): Promise<AkHandle> {
    const hashAlg = opts.hashAlg ?? 'sha256';
    const id = `ak-${opts.scheme}-${opts.keyAlg ?? ''}-${Math.random().toString(16).slice(2, 8)}`;
    const ctx = this.file(`${id}.ctx`);
    const paths = {
      pub: this.file(`${id}.pub`),
      name: this.file(`${id}.name`),
      qname: this.file(`${id}.qname`),
    };
    const keyAlg = opts.keyAlg ?? (opts.scheme === 'ecdsa' ? 'ecc' : 'rsa');
    await this.run('tpm2_createak', [
      ...['-C', ek.handle, '-c', ctx, '-G', keyAlg, '-g', hashAlg, '-s', opts.scheme],
      ...['-u', paths.pub, '-n', paths.name, '-q', paths.qname],
    ]);
    let context = ctx;
    if (opts.persist !== undefined) {
      await this.run('tpm2_evictcontrol', ['-C', 'o', '-c', ctx, opts.persist]);
      context = opts.persist;
    }
    const [pub, name, qname] = await Promise.all(
      [paths.pub, paths.name, paths.qname].map((p) => readFile(p)),
    );

    return {
      context,
      scheme: opts.scheme,
      hashAlg,
      pubPath: paths.pub,
      public: new Uint8Array(pub!),
      name: new Uint8Array(name!),
      qualifiedName: new Uint8Array(qname!),
    };
  }

  /** tpm2_pcrextend with one digest per bank, e.g. `{ sha1: hex, sha256: hex }`. */
  async pcrExtend(pcr: number, digests: Partial<Record<HashAlg, string | Uint8Array>>): Promise<void> {
    const parts = Object.entries(digests).map(
      ([bank, d]) => `${bank}=${typeof d === 'string' ? d : hex(d!)}`,
    );
    await this.run('tpm2_pcrextend', [`${pcr}:${parts.join(',')}`]);
  }

  /** PCR values for a tpm2-tools selection such as `sha1:10+sha256:0,10`. */
  async pcrRead(selection: string): Promise<PcrValues> {
    const out = this.file('pcrread.bin');
    await this.run('tpm2_pcrread', [selection, '-o', out, '-F', 'serialized']);

    return parseSerializedPcrs(new Uint8Array(await readFile(out)));
  }

  /**
   * TPM2_Quote with `ak` over `selection` (tpm2-tools syntax) and `nonce`, writing the message,
   * signature and PCR files into the state dir. The PCR file is `serialized` unless asked.
   */
  async quote(ak: AkHandle, opts: QuoteOptions): Promise<QuoteFiles> {
    const id = `quote-${++quoteCounter}`;
    const files = {
      attest: this.file(`${id}.msg`),
      signature: this.file(`${id}.sig`),
      pcrs: this.file(`${id}.pcrs`),
    };
    const args = ['-c', ak.context, '-l', opts.selection, '-g', opts.hashAlg ?? ak.hashAlg];
    if (opts.nonce !== undefined) args.push('-q', hex(opts.nonce));
    if ((opts.scheme ?? ak.scheme) === 'rsapss') args.push('--scheme', 'rsapss');
    args.push(
      '-m',
      files.attest,
      '-s',
      files.signature,
      '-o',
      files.pcrs,
      '-F',
      opts.pcrsFormat ?? 'serialized',
    );
    await this.run('tpm2_quote', args);
    const [attest, signature, pcrs] = await Promise.all(Object.values(files).map((p) => readFile(p)));

    return {
      attest: new Uint8Array(attest!),
      signature: new Uint8Array(signature!),
      pcrs: new Uint8Array(pcrs!),
      paths: { attest: files.attest, signature: files.signature, pcrs: files.pcrs },
    };
  }

  /** Writes bytes to a file in the state dir and returns its path. */
  async writeFile(name: string, bytes: Uint8Array | string): Promise<string> {
    const path = this.file(name);
    await writeFile(path, bytes);

    return path;
  }

  /** Simulates a reboot: orderly shutdown, TPM_Init, Startup(CLEAR). resetCount+1, PCRs zeroed. */
  async reset(): Promise<void> {
    await this.run('tpm2_shutdown', ['-c']);
    await execTool('swtpm_ioctl', ['--tcp', `127.0.0.1:${this.port + 1}`, '-i']);
    await this.run('tpm2_startup', ['-c']);
  }

  /**
   * Simulates suspend/resume (S3): Shutdown(STATE), TPM_Init, Startup(STATE). restartCount+1,
   * resetCount and PCRs kept.
   */
  async suspendResume(): Promise<void> {
    await this.run('tpm2_shutdown', []);
    await execTool('swtpm_ioctl', ['--tcp', `127.0.0.1:${this.port + 1}`, '-i']);
    await this.run('tpm2_startup', []);
  }

  /** Orderly shutdown (so the next start counts no DA failure), then SIGTERM; removes the state. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    process.off('exit', this.killOnExit);
    if (this.child.exitCode === null) {
      await this.run('tpm2_shutdown', ['-c']).catch(() => undefined);
      const exited = new Promise((resolve) => this.child.once('exit', resolve));
      this.child.kill('SIGTERM');
      await Promise.race([exited, sleep(5000)]);
      if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    }
    await rm(this.dir, { recursive: true, force: true });
  }
}

let quoteCounter = 0;

export interface EkHandle {
  handle: string;
  alg: 'rsa' | 'ecc';
  pubPath: string;
  /** TPM2B_PUBLIC of the EK. */
  public: Uint8Array;
  /** The TPM holding it, for credential activation (enrolment). */
  tools: TpmTools;
}

export interface AkOptions {
  scheme: 'rsassa' | 'rsapss' | 'ecdsa';
  /** tpm2-tools key algorithm: `rsa`, `rsa3072`, `ecc` (P-256), `ecc384`, … */
  keyAlg?: string;
  hashAlg?: HashAlg;
  /** Persistent handle such as `0x81010002`. */
  persist?: string;
}

export interface AkHandle {
  /** What `tpm2_quote -c` takes: a saved context file or a persistent handle. */
  context: string;
  scheme: AkOptions['scheme'];
  hashAlg: HashAlg;
  pubPath: string;
  /** TPM2B_PUBLIC (`-u`, tss format). */
  public: Uint8Array;
  /** Name (`-n`). */
  name: Uint8Array;
  /** Qualified name (`-q`). */
  qualifiedName: Uint8Array;
}

export interface QuoteOptions {
  selection: string;
  nonce?: Uint8Array;
  scheme?: AkOptions['scheme'];
  hashAlg?: HashAlg;
  pcrsFormat?: 'serialized' | 'values';
}

export interface QuoteFiles {
  attest: Uint8Array;
  signature: Uint8Array;
  pcrs: Uint8Array;
  paths: { attest: string; signature: string; pcrs: string };
}

function hex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}

/** Runs a tool that does not talk to the TPM through a TCTI. */
async function execTool(tool: string, args: string[]): Promise<string> {
  const runner = new TpmTools('none', tmpdir());

  return runner.raw(tool, args);
}

/** A port P with P+1 also free (swtpm's TCTI derives the control port from the server port). */
/** A free loopback port P with P+1 free too (swtpm's server and control ports). */
export async function freePortPair(): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = await freePort(0);
    if (
      port < 65535 &&
      (await freePort(port + 1).then(
        () => true,
        () => false,
      ))
    )
      return port;
  }
  throw new ImastreamError('IMS_TOOL_FAILED', 'no free loopback port pair for swtpm');
}

function freePort(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      const address = server.address();
      const chosen = typeof address === 'object' && address !== null ? address.port : port;
      server.close(() => resolve(chosen));
    });
  });
}

/** Waits until swtpm accepts connections on its server port, or fails if it exits first. */
export async function waitForPort(port: number, child: ChildProcess): Promise<void> {
  for (let attempt = 0; attempt < 100; attempt++) {
    if (child.exitCode !== null)
      throw new ImastreamError('IMS_TOOL_FAILED', `swtpm exited with ${child.exitCode}`);
    if (await canConnect(port)) return;
    await sleep(50);
  }
  throw new ImastreamError('IMS_TOOL_FAILED', `swtpm did not listen on ${port}`);
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket();
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
    socket.connect(port, '127.0.0.1');
  });
}
