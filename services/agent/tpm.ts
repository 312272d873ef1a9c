import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ImastreamError } from '../../lib/errors.ts';
import type { HashAlg } from '../../lib/hash.ts';
import { digestSize } from '../../lib/hash.ts';
import type { PcrValues } from '../../lib/pcr.ts';
import type { PcrSelection } from '../../lib/tpm/pcr-selection.ts';
import { formatSelectionSpec } from '../../lib/tpm/pcr-selection.ts';

/** AK key types the agent can create, with the tpm2-tools spelling of each. */
export const AK_ALGS = {
  rsa: { keyAlg: 'rsa', sigScheme: 'rsassa' },
  rsapss: { keyAlg: 'rsa', sigScheme: 'rsapss' },
  ecc: { keyAlg: 'ecc', sigScheme: 'ecdsa' },
} as const;
export type AkAlg = keyof typeof AK_ALGS;

const TOOL_TIMEOUT_MS = 30_000;

/**
 * tpm2-tools driven through one TCTI, one command at a time. There is no resource manager in
 * front of swtpm (or of /dev/tpm0), so transient objects and sessions a tool leaves loaded are
 * flushed after every tool, and calls are serialised: two tools interleaving on one TPM could
 * each flush the other's objects.
 */
export class TpmTools {
  readonly tcti: string;
  /** Scratch folder for the tools' output files. */
  readonly workDir: string;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(tcti: string, workDir: string) {
    this.tcti = tcti;
    this.workDir = workDir;
  }

  /** Runs `fn` with exclusive use of the TPM. */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);

    return next;
  }

  /** Runs one tool, then flushes transient objects and saved sessions it may have left. */
  async tool(name: string, args: string[]): Promise<string> {
    try {
      return await this.raw(name, args);
    } finally {
      await this.raw('tpm2_flushcontext', ['-t']).catch(() => undefined);
      await this.raw('tpm2_flushcontext', ['-s']).catch(() => undefined);
    }
  }

  raw(name: string, args: string[]): Promise<string> {
    const env = { ...process.env, TPM2TOOLS_TCTI: this.tcti };
    return new Promise((resolve, reject) => {
      execFile(name, args, { env, timeout: TOOL_TIMEOUT_MS, maxBuffer: 1 << 22 }, (err, stdout, stderr) => {
        if (err === null) return resolve(stdout);
        const message = `${name} failed: ${String(stderr).trim().split('\n').slice(-2).join(' | ')}`;
        reject(
          new ImastreamError('IMS_TOOL_FAILED', message, {
            cause: err,
            details: { tool: name },
            canRetry: true,
          }),
        );
      });
    });
  }

  file(name: string): string {
    return join(this.workDir, name);
  }

  async readOut(name: string): Promise<Uint8Array> {
    return new Uint8Array(await readFile(this.file(name)));
  }
}

/** What a quote returns: both parts exactly as the TPM produced them (untrusted until verified). */
export interface RawQuote {
  /** TPMS_ATTEST (`tpm2_quote -m`). */
  attest: Uint8Array;
  /** TPMT_SIGNATURE (`tpm2_quote -s`, tss format). */
  signature: Uint8Array;
}

export interface QuoteRequest {
  akHandle: string;
  akAlg: AkAlg;
  selection: PcrSelection;
  nonce: Uint8Array;
  /** Signing hash; it is also the hash of the quote's pcrDigest. */
  hashAlg: HashAlg;
}

/**
 * TPM2_Quote over `selection` with `nonce` as qualifyingData. No `-o`: tpm2_quote re-reads the
 * PCRs after quoting and fails when IMA extended in between (tpm2-tools #2376); the agent gets
 * the values from its own replay instead.
 */
export async function takeQuote(tpm: TpmTools, req: QuoteRequest): Promise<RawQuote> {
  return tpm.exclusive(async () => {
    const args = ['-c', req.akHandle, '-l', formatSelectionSpec(req.selection), '-q', hexOf(req.nonce)];
    args.push('-g', req.hashAlg, '-m', tpm.file('quote.msg'), '-s', tpm.file('quote.sig'));
    if (req.akAlg === 'rsapss') args.push('--scheme', 'rsapss');
    await tpm.tool('tpm2_quote', args);

    return { attest: await tpm.readOut('quote.msg'), signature: await tpm.readOut('quote.sig') };
  });
}

/**
 * Reads PCR values with TPM2_PCR_Read (unsigned: a fallback only, for when the replay matches no
 * quote). `values` format = digests concatenated in selection order, PCRs ascending.
 */
export async function readPcrs(tpm: TpmTools, selection: PcrSelection): Promise<PcrValues> {
  return tpm.exclusive(async () => {
    await tpm.tool('tpm2_pcrread', [
      formatSelectionSpec(selection),
      '-o',
      tpm.file('pcrs.bin'),
      '-F',
      'values',
    ]);
    const bytes = await tpm.readOut('pcrs.bin');
    const out: PcrValues = new Map();
    let at = 0;
    for (const { bank, pcrs } of selection) {
      if (typeof bank === 'number') continue;
      const size = digestSize(bank);
      const values = out.get(bank) ?? new Map<number, Uint8Array>();
      for (const pcr of [...pcrs].sort((a, b) => a - b)) {
        if (at + size > bytes.byteLength)
          throw new ImastreamError('IMS_TPM_BAD_PCR_FILE', 'PCR values file is short');
        values.set(pcr, bytes.slice(at, at + size));
        at += size;
      }
      out.set(bank, values);
    }

    return out;
  });
}

/** The AK's public parts, as read back from the TPM. */
export interface AkInfo {
  /** TPM2B_PUBLIC of the AK. */
  akPublic: Uint8Array;
  /** Name of the AK. */
  akName: Uint8Array;
  /** TPM2B_PUBLIC of the EK (default RSA template, deterministic across resets). */
  ekPublic: Uint8Array;
  /** Whether this call created the AK. */
  created: boolean;
}

/**
 * Loads the AK at the persistent handle `akHandle`, or creates one under the EK (endorsement
 * hierarchy, so clockInfo counters in its quotes are not obfuscated) and persists it there, so it
 * survives TPM Reset (saved transient contexts do not: 0x1DF).
 */
export async function ensureAk(tpm: TpmTools, akHandle: string, akAlg: AkAlg): Promise<AkInfo> {
  return tpm.exclusive(async () => {
    await tpm.tool('tpm2_createek', ['-c', tpm.file('ek.ctx'), '-G', 'rsa', '-u', tpm.file('ek.pub')]);
    const ekPublic = await tpm.readOut('ek.pub');
    let created = false;
    if (!(await hasHandle(tpm, akHandle))) {
      await createPersistentAk(tpm, akHandle, akAlg);
      created = true;
    }
    await tpm.tool('tpm2_readpublic', ['-c', akHandle, '-o', tpm.file('ak.pub'), '-n', tpm.file('ak.name')]);

    return { akPublic: await tpm.readOut('ak.pub'), akName: await tpm.readOut('ak.name'), ekPublic, created };
  });
}

async function hasHandle(tpm: TpmTools, handle: string): Promise<boolean> {
  const out = await tpm.tool('tpm2_getcap', ['handles-persistent']);
  const wanted = Number.parseInt(handle, 16);

  return out.split('\n').some((line) => Number.parseInt(line.replace(/^\s*-\s*/, ''), 16) === wanted);
}

async function createPersistentAk(tpm: TpmTools, akHandle: string, akAlg: AkAlg): Promise<void> {
  const { keyAlg, sigScheme } = AK_ALGS[akAlg];
  // Each tool loads what it needs from the saved context files and is flushed after, so no more
  // than two objects are ever loaded at once (swtpm has three slots: 0x902 otherwise).
  await tpm.tool('tpm2_createek', ['-c', tpm.file('ek.ctx'), '-G', 'rsa', '-u', tpm.file('ek.pub')]);
  const keys = ['-G', keyAlg, '-g', 'sha256', '-s', sigScheme];
  const files = ['-C', tpm.file('ek.ctx'), '-c', tpm.file('ak.ctx'), '-u', tpm.file('ak.tmp.pub')];
  await tpm.tool('tpm2_createak', [...files, ...keys, '-n', tpm.file('ak.tmp.name')]);
  await tpm.tool('tpm2_evictcontrol', ['-C', 'o', '-c', tpm.file('ak.ctx'), akHandle]);
}

export function hexOf(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}

/** Persistent handle of the RSA EK (TCG EK Credential Profile) and its certificate's NV index. */
export const EK_HANDLE = '0x81010001';
export const EK_CERT_NV_INDEX = '0x01c00002';
/** Bound on an EK certificate read from NV; real ones are 1-2 KiB. */
const MAX_EK_CERT_BYTES = 16 * 1024;

/** What the agent sends about its EK; none of it is trusted by the agent or the enroller. */
export interface EkInfo {
  /** TPM2B_PUBLIC of the EK. */
  ekPublic: Uint8Array;
  /** The EK certificate from NV as stored (DER, maybe zero-padded), or null when the TPM has none. */
  ekCertificate: Uint8Array | null;
  /** What tpm2_activatecredential -C takes: the persistent handle, or a saved context. */
  ekRef: string;
}

/**
 * The RSA EK: the persistent one at {@link EK_HANDLE} when the manufacturer (or swtpm_setup)
 * made it, else one recreated from the default template (the same key: it derives from the
 * endorsement seed). Its certificate is read from NV when the index exists.
 */
export async function readEk(tpm: TpmTools): Promise<EkInfo> {
  return tpm.exclusive(async () => {
    let ekRef: string;
    if (await hasHandle(tpm, EK_HANDLE)) {
      ekRef = EK_HANDLE;
      await tpm.tool('tpm2_readpublic', ['-c', EK_HANDLE, '-f', 'tss', '-o', tpm.file('ek.pub')]);
    } else {
      ekRef = tpm.file('ek.ctx');
      await tpm.tool('tpm2_createek', ['-c', ekRef, '-G', 'rsa', '-u', tpm.file('ek.pub')]);
    }
    const ekPublic = await tpm.readOut('ek.pub');
    const nv = await tpm.tool('tpm2_getcap', ['handles-nv-index']);
    const wanted = Number.parseInt(EK_CERT_NV_INDEX, 16);
    const present = nv.split('\n').some((l) => Number.parseInt(l.replace(/^\s*-\s*/, ''), 16) === wanted);
    let ekCertificate: Uint8Array | null = null;
    if (present) {
      await tpm.tool('tpm2_nvread', [EK_CERT_NV_INDEX, '-o', tpm.file('ek.crt')]);
      ekCertificate = await tpm.readOut('ek.crt');
      if (ekCertificate.byteLength > MAX_EK_CERT_BYTES) {
        throw new ImastreamError(
          'IMS_TOOL_FAILED',
          `EK certificate in NV is ${ekCertificate.byteLength} bytes`,
        );
      }
    }

    return { ekPublic, ekCertificate, ekRef };
  });
}

/**
 * TPM2_ActivateCredential: the secret comes out only if this TPM holds the EK's private key and
 * the object at `akRef` has the Name the credential was made for. The TCG default EK's only
 * authorisation is PolicySecret(endorsement), so a policy session is started and satisfied
 * first (DOMAIN §4.7). The session must survive three tools, so they run raw and everything is
 * flushed at the end. Throws IMS_ENROL_ACTIVATION_FAILED when the TPM refuses.
 */
export async function activateCredential(
  tpm: TpmTools,
  ekRef: string,
  akRef: string,
  credentialFile: Uint8Array,
): Promise<Uint8Array> {
  return tpm.exclusive(async () => {
    const [cred, secret, session] = ['enrol.cred', 'enrol.secret', 'enrol.session'].map((n) => tpm.file(n));
    await writeFile(cred!, credentialFile);
    try {
      await tpm.raw('tpm2_startauthsession', ['--policy-session', '-S', session!]);
      await tpm.raw('tpm2_policysecret', ['-S', session!, '-c', 'e']);
      await tpm.raw('tpm2_activatecredential', [
        ...['-c', akRef, '-C', ekRef, '-i', cred!, '-o', secret!],
        ...['-P', `session:${session}`],
      ]);
    } catch (cause) {
      throw new ImastreamError('IMS_ENROL_ACTIVATION_FAILED', 'the TPM refused to activate the credential', {
        cause,
      });
    } finally {
      await tpm.raw('tpm2_flushcontext', ['-t']).catch(() => undefined);
      await tpm.raw('tpm2_flushcontext', ['-s']).catch(() => undefined);
    }

    return tpm.readOut('enrol.secret');
  });
}
