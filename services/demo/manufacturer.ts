import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ImastreamError } from '../../lib/errors.ts';

const run = promisify(execFile);

/** PCR banks the demo's TPMs have: the log writer extends all four (writer.ts SWTPM_BANKS). */
const BANKS = 'sha1,sha256,sha384,sha512';

/**
 * The demo's TPM manufacturer: a local CA (swtpm_localca's root and intermediate, created in a
 * folder of the run) that signs every simulated TPM's EK certificate, as a vendor does at the
 * factory. `swtpm_setup --create-ek-cert` creates the EKs (RSA-2048 at 0x81010001), has the CA
 * sign their certificates and stores them in NV (0x01c00002), where the agent reads them.
 *
 * swtpm_localca is pointed at config files in `dir`, so nothing on the system is touched. The
 * enroller's trust store (`trustDir`) holds the root and the intermediate: the operator's
 * "manufacturer roots from a directory".
 */
export class Manufacturer {
  private constructor(
    readonly dir: string,
    readonly trustDir: string,
    private readonly setupConfig: string,
  ) {}

  /** Creates the CA (by manufacturing one throw-away TPM) and the trust store directory. */
  static async create(dir: string): Promise<Manufacturer> {
    const ca = join(dir, 'ca');
    const trustDir = join(dir, 'trust-store');
    mkdirSync(ca, { recursive: true });
    mkdirSync(trustDir, { recursive: true });
    const localca = join(dir, 'swtpm-localca.conf');
    const options = join(dir, 'swtpm-localca.options');
    const setupConfig = join(dir, 'swtpm_setup.conf');
    writeFileSync(
      localca,
      [
        `statedir = ${ca}`,
        `signingkey = ${ca}/signkey.pem`,
        `issuercert = ${ca}/issuercert.pem`,
        `certserial = ${ca}/certserial`,
        '',
      ].join('\n'),
    );
    writeFileSync(
      options,
      '--platform-manufacturer imastream\n--platform-version 2.1\n--platform-model swtpm\n',
    );
    writeFileSync(
      setupConfig,
      [
        'create_certs_tool = /usr/bin/swtpm_localca',
        `create_certs_tool_config = ${localca}`,
        `create_certs_tool_options = ${options}`,
        `active_pcr_banks = ${BANKS}`,
        '',
      ].join('\n'),
    );
    const manufacturer = new Manufacturer(dir, trustDir, setupConfig);
    // swtpm_localca makes its root and intermediate on first use.
    await manufacturer.manufacture(join(dir, 'first-tpm'));
    copyFileSync(join(ca, 'swtpm-localca-rootca-cert.pem'), join(trustDir, 'root.pem'));
    copyFileSync(join(ca, 'issuercert.pem'), join(trustDir, 'intermediate.pem'));

    return manufacturer;
  }

  /** Makes a TPM state in `stateDir` with EKs and EK certificates in NV, ready for swtpm. */
  async manufacture(stateDir: string): Promise<void> {
    mkdirSync(stateDir, { recursive: true });
    const args = [
      ...['--tpm2', '--create-ek-cert', '--pcr-banks', BANKS, '--tpmstate', stateDir],
      ...['--config', this.setupConfig, '--logfile', join(stateDir, 'setup.log'), '--overwrite'],
    ];
    try {
      await run('swtpm_setup', args, { timeout: 120_000 });
    } catch (cause) {
      const stderr = (cause as { stderr?: string }).stderr ?? '';
      throw new ImastreamError('IMS_TOOL_FAILED', `swtpm_setup: ${stderr.trim().split('\n').at(-1)}`, {
        cause,
      });
    }
  }
}
