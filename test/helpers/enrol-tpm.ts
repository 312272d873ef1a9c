import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { TpmTools } from '../../services/agent/tpm.ts';
import { freePortPair, waitForPort } from './swtpm.ts';

/**
 * A swtpm for enrolment tests, manufactured like a real TPM: `swtpm_setup --create-ek-cert`
 * creates the EKs (RSA-2048 at 0x81010001, ECC P-384 at 0x81010016), signs their certificates
 * with a local CA and stores them in NV (0x01c00002 and 0x01c00016), as a vendor does.
 *
 * swtpm 0.7.1 on Debian 12 signs with /usr/bin/swtpm_localca, configured by
 * /etc/swtpm_setup.conf → /etc/swtpm-localca.conf (statedir /var/lib/swtpm-localca). We point
 * both at files in a temp dir, so swtpm_localca creates a fresh root ("swtpm-localca-rootca")
 * and intermediate ("swtpm-localca") there and nothing on the system is touched.
 *
 * The test/helpers/swtpm.ts harness starts blank TPMs only, hence this one; tools run through
 * the agent's TpmTools like there (flush after every tool: no resource manager).
 */
export class EnrolTpm {
  readonly tools: TpmTools;

  private constructor(
    readonly dir: string,
    readonly port: number,
    private readonly child: ChildProcess,
  ) {
    this.tools = new TpmTools(`swtpm:host=127.0.0.1,port=${port}`, dir);
  }

  /** Manufactures a TPM with EK certificates from a fresh local CA, and starts it. */
  static async manufactured(): Promise<EnrolTpm> {
    const dir = await mkdtemp(join(tmpdir(), 'imastream-enrol-'));
    await manufacture(dir);
    const port = await freePortPair();
    const child = spawn(
      'swtpm',
      [
        ...['socket', '--tpm2', '--tpmstate', `dir=${join(dir, 'state')}`],
        ...['--server', `type=tcp,port=${port},bindaddr=127.0.0.1`],
        ...['--ctrl', `type=tcp,port=${port + 1},bindaddr=127.0.0.1`],
        ...['--flags', 'not-need-init,startup-clear', '--log', `file=${join(dir, 'swtpm.log')},level=1`],
      ],
      { stdio: 'ignore' },
    );
    const tpm = new EnrolTpm(dir, port, child);
    try {
      await waitForPort(port, child);
      await tpm.run('tpm2_dictionarylockout', ['-s', '-n', '1000', '-t', '1', '-l', '1']);
    } catch (err) {
      await tpm.stop();
      throw err;
    }

    return tpm;
  }

  /** The local CA's root and intermediate certificates (PEM bytes), the manufacturer trust store. */
  async caCertificates(): Promise<Uint8Array[]> {
    const ca = join(this.dir, 'ca');
    const files = ['swtpm-localca-rootca-cert.pem', 'issuercert.pem'];

    return Promise.all(files.map(async (f) => new Uint8Array(await readFile(join(ca, f)))));
  }

  run(tool: string, args: string[]): Promise<string> {
    return this.tools.exclusive(() => this.tools.tool(tool, args));
  }

  file(name: string): string {
    return join(this.dir, name);
  }

  /** The EK certificate from its NV index, as an agent reads it (`tpm2_nvread`). */
  async ekCertificate(index: 'rsa' | 'ecc'): Promise<Uint8Array> {
    const out = this.file(`ek-${index}.crt`);
    await this.run('tpm2_nvread', [index === 'rsa' ? '0x01c00002' : '0x01c00016', '-o', out]);

    return new Uint8Array(await readFile(out));
  }

  /** TPM2B_PUBLIC of a loaded or persistent object (`tpm2_readpublic -f tss`). */
  async readPublic(handle: string): Promise<Uint8Array> {
    const out = this.file(`pub-${handle}.tss`);
    await this.run('tpm2_readpublic', ['-c', handle, '-f', 'tss', '-o', out]);

    return new Uint8Array(await readFile(out));
  }

  /** An AK under the EK at `ekHandle` (tpm2_createak; the tool satisfies the EK policy itself). */
  async createAk(
    ekHandle: string,
    keyAlg: 'rsa' | 'ecc' = 'ecc',
  ): Promise<{ context: string; public: Uint8Array }> {
    const id = `ak-${Math.random().toString(16).slice(2, 10)}`;
    const context = this.file(`${id}.ctx`);
    const pub = this.file(`${id}.pub`);
    const scheme = keyAlg === 'rsa' ? 'rsassa' : 'ecdsa';
    await this.run('tpm2_createak', [
      '-C',
      ekHandle,
      '-c',
      context,
      '-G',
      keyAlg,
      '-g',
      'sha256',
      '-s',
      scheme,
      '-u',
      pub,
    ]);

    return { context, public: new Uint8Array(await readFile(pub)) };
  }

  /** TPM2_ActivateCredential on this TPM; see {@link activateCredential}. */
  activate(ekHandle: string, akContext: string, credential: Uint8Array, auth: 'policy' | 'password') {
    return activateCredential(this.tools, ekHandle, akContext, credential, auth);
  }

  /** Orderly shutdown, SIGTERM, state removed. */
  async stop(): Promise<void> {
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

/**
 * TPM2_ActivateCredential with the EK at `ekHandle` and the AK context, as an agent would run
 * it. An EK from the TCG default template has only PolicySecret(endorsement) as its auth, so a
 * policy session is set up first (DOMAIN §4.7); `password` uses plain empty auth instead (the
 * P-384 EK swtpm_setup makes has userWithAuth). The session must live across three tools, so
 * they run raw and the flush comes at the end. Throws IMS_TOOL_FAILED when the TPM refuses.
 */
export async function activateCredential(
  tools: TpmTools,
  ekHandle: string,
  akContext: string,
  credential: Uint8Array,
  auth: 'policy' | 'password',
): Promise<Uint8Array> {
  const id = Math.random().toString(16).slice(2, 10);
  const [credPath, secretPath, session] = ['cred', 'secret', 'session'].map((n) =>
    tools.file(`activate-${id}.${n}`),
  );
  await writeFile(credPath!, credential);

  return tools.exclusive(async () => {
    try {
      const args = ['-c', akContext, '-C', ekHandle, '-i', credPath!, '-o', secretPath!];
      if (auth === 'policy') {
        await tools.raw('tpm2_startauthsession', ['--policy-session', '-S', session!]);
        await tools.raw('tpm2_policysecret', ['-S', session!, '-c', 'e']);
        args.push('-P', `session:${session}`);
      }
      await tools.raw('tpm2_activatecredential', args);
      return new Uint8Array(await readFile(secretPath!));
    } finally {
      await tools.raw('tpm2_flushcontext', ['-t']).catch(() => undefined);
      await tools.raw('tpm2_flushcontext', ['-s']).catch(() => undefined);
    }
  });
}

/** swtpm_setup with config files in `dir`: state in dir/state, the local CA in dir/ca. */
async function manufacture(dir: string): Promise<void> {
  const [state, ca] = [join(dir, 'state'), join(dir, 'ca')];
  await Promise.all([mkdir(state), mkdir(ca)]);
  const localca = join(dir, 'swtpm-localca.conf');
  const options = join(dir, 'swtpm-localca.options');
  const setup = join(dir, 'swtpm_setup.conf');
  await writeFile(
    localca,
    [
      `statedir = ${ca}`,
      `signingkey = ${ca}/signkey.pem`,
      `issuercert = ${ca}/issuercert.pem`,
      `certserial = ${ca}/certserial`,
      '',
    ].join('\n'),
  );
  await writeFile(
    options,
    '--platform-manufacturer imastream\n--platform-version 2.1\n--platform-model swtpm\n',
  );
  await writeFile(
    setup,
    [
      'create_certs_tool = /usr/bin/swtpm_localca',
      `create_certs_tool_config = ${localca}`,
      `create_certs_tool_options = ${options}`,
      'active_pcr_banks = sha1,sha256',
      '',
    ].join('\n'),
  );
  await exec('swtpm_setup', [
    ...['--tpm2', '--create-ek-cert', '--create-platform-cert', '--pcr-banks', 'sha1,sha256'],
    ...['--tpmstate', state, '--config', setup, '--logfile', join(dir, 'setup.log')],
  ]);
}

function exec(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: 60_000 }, (err, stdout, stderr) =>
      err === null ? resolve(stdout) : reject(new Error(`${cmd} failed: ${stderr || err.message}`)),
    );
  });
}
