import { accessSync, constants, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ImastreamError } from '../../lib/errors.ts';
import { type HashAlg, isHashAlg } from '../../lib/hash.ts';
import type { ExtendScheme } from '../../lib/ima/replay.ts';
import { type PcrSelection, parseSelectionSpec } from '../../lib/tpm/pcr-selection.ts';
import { SECURITYFS_IMA_DIR } from '../kernel-emulator/securityfs-log.ts';
import { type KernelSpec, parseKernelSpec } from './kernel-source.ts';
import { MAX_SHIPPED_SHARD_BYTES } from './shard-sealer.ts';
import { AK_ALGS, type AkAlg } from './tpm.ts';

/** Everything the agent runs with, checked once at start. */
export interface AgentConfig {
  hostId: string;
  logPath: string;
  /** Bank of the log's template-digest field: sha1 for the legacy file, else the `_<alg>` file's. */
  digestAlg: HashAlg;
  stateDir: string;
  tcti: string;
  /** Persistent handle of the AK (created there on first start when empty). */
  akHandle: string;
  akAlg: AkAlg;
  quoteIntervalMs: number;
  selection: PcrSelection;
  /** Extend scheme of the host's kernel, for matching quotes (perbank on ≥ 5.8). */
  scheme: ExtendScheme;
  brokers: string[];
  hostBootId: string;
  measurementsTopic: string;
  /** Where sealed shards go (ima.shards; a test's own topic in tests). */
  shardsTopic: string;
  pollMs: number;
  batchSize: number;
  /** Where the list is read: securityfs, the emulator's socket, or the plain file `logPath`. */
  kernel: KernelSpec;
  /** Log cuts: `stage` (A, read _staged, D), `delete` (write N), or none. */
  cut: CutMode;
  /** Cut when the kernel holds this many records (0: no record threshold). */
  cutRecords: number;
  /** Cut when the current list holds this many bytes (0: no size threshold). */
  cutBytes: number;
  /** Virtual shards (kernels that cannot cut): quote every N records (0: off). */
  shardRecords: number;
  /** Virtual shards: quote every T ms when records arrived (0: off). */
  shardMs: number;
  /** Quote once the records since the last sealed shard reach this many bytes. */
  shardMaxBytes: number;
}

export type CutMode = 'stage' | 'delete' | 'none';

export const DEFAULT_LOG = '/sys/kernel/security/ima/binary_runtime_measurements';
/**
 * Records' bytes per sealed shard before the agent quotes (--shard-max-bytes): three quarters of
 * what ima.shards carries, leaving room for the records read in the same poll, the per-record
 * framing and the closing quote. A backlog read in one go is still sealed whole by the next quote
 * (a quote covers what the TPM holds), and a shard over the limit stays on the host.
 */
export const DEFAULT_SHARD_MAX_BYTES = Math.floor((MAX_SHIPPED_SHARD_BYTES * 3) / 4);
const BOOT_ID_FILE = '/proc/sys/kernel/random/boot_id';

const OPTIONS = {
  'host-id': { type: 'string' },
  log: { type: 'string', default: DEFAULT_LOG },
  'digest-alg': { type: 'string', default: 'sha1' },
  'state-dir': { type: 'string' },
  tcti: { type: 'string' },
  'ak-ctx': { type: 'string', default: '0x81010002' },
  'ak-alg': { type: 'string', default: 'rsa' },
  'quote-interval': { type: 'string', default: '30' },
  pcrs: { type: 'string', default: 'sha1:10+sha256:10' },
  scheme: { type: 'string', default: 'perbank' },
  brokers: { type: 'string' },
  'boot-id': { type: 'string' },
  'measurements-topic': { type: 'string', default: 'ima.measurements' },
  'shards-topic': { type: 'string', default: 'ima.shards' },
  'poll-ms': { type: 'string', default: '200' },
  batch: { type: 'string', default: '500' },
  kernel: { type: 'string' },
  cut: { type: 'string', default: 'none' },
  'cut-records': { type: 'string', default: '0' },
  'cut-bytes': { type: 'string', default: '0' },
  'shard-records': { type: 'string', default: '0' },
  'shard-seconds': { type: 'string', default: '0' },
  'shard-max-bytes': { type: 'string', default: String(DEFAULT_SHARD_MAX_BYTES) },
  help: { type: 'boolean', default: false },
} as const;

export const USAGE = `usage: imastream agent --host-id H --state-dir DIR [options]
  --log PATH               binary IMA log to follow (default ${DEFAULT_LOG})
  --digest-alg ALG         bank of the log's template digests: sha1 (legacy file) or the _<alg> file's
  --tcti SPEC              tpm2-tools TCTI, e.g. swtpm:host=127.0.0.1,port=2321 (default $TPM2TOOLS_TCTI)
  --ak-ctx HANDLE          persistent AK handle; created under the EK on first start (default 0x81010002)
  --ak-alg rsa|rsapss|ecc  AK key type when creating it (default rsa)
  --quote-interval S       seconds between quotes (default 30)
  --pcrs SPEC              quoted selection (default sha1:10+sha256:10)
  --scheme perbank|padded  the kernel's extend scheme (default perbank, kernels >= 5.8)
  --brokers LIST           Kafka brokers (default $IMASTREAM_KAFKA_BROKERS or 127.0.0.1:19092)
  --boot-id ID             host boot id (default ${BOOT_ID_FILE})
  --measurements-topic T   topic for LogRecord/BootEvent/QuoteTaken (default ima.measurements)
  --shards-topic T         topic for SealedShard (default ima.shards)
  --poll-ms MS             log poll interval (default 200)
  --batch N                most records per produce call (default 500)
  --kernel SPEC            securityfs[:DIR] (Linux 7.2 files) or socket:PATH (kernel emulator);
                           without it the agent follows the plain file --log
  --cut stage|delete|none  log cuts: stage all (A, read _staged, D) or delete the oldest N (default none)
  --cut-records N          cut when the kernel holds N records (0: off)
  --cut-bytes B            cut when the current list holds B bytes (0: off)
  --shard-records N        virtual shards: a quote and SnapshotEvent VIRTUAL every N records (0: off)
  --shard-seconds T        virtual shards: the same every T seconds when records arrived (0: off)
  --shard-max-bytes B      quote once the records since the last sealed shard reach B bytes, so
                           every shard fits on ima.shards (default ${DEFAULT_SHARD_MAX_BYTES})`;

/** Parses and checks the agent's flags; every problem is reported at once, in one message. */
export function parseAgentConfig(argv: string[], env: NodeJS.ProcessEnv = process.env): AgentConfig | 'help' {
  const { values: v } = parseArgs({ args: argv, options: OPTIONS, strict: true, allowPositionals: false });
  if (v.help) return 'help';
  const problems: string[] = [];
  const need = (name: string, value: string | undefined): string => {
    if (value === undefined || value.trim() === '') problems.push(`--${name} is required`);
    return value ?? '';
  };
  const hostId = need('host-id', v['host-id']);
  if (hostId !== '' && !/^[\x21-\x7e]{1,255}$/.test(hostId))
    problems.push('--host-id must be 1-255 printable characters');
  const stateDir = need('state-dir', v['state-dir']);
  const tcti = need('tcti', v.tcti ?? env.TPM2TOOLS_TCTI);
  const config: AgentConfig = {
    hostId,
    logPath: v.log,
    digestAlg: checkBank(v['digest-alg'], problems),
    stateDir,
    tcti,
    akHandle: checkHandle(v['ak-ctx'], problems),
    akAlg: checkAkAlg(v['ak-alg'], problems),
    quoteIntervalMs: checkNumber('quote-interval', v['quote-interval'], 0.05, 86_400, problems) * 1000,
    selection: checkSelection(v.pcrs, problems),
    scheme: checkScheme(v.scheme, problems),
    brokers: (v.brokers ?? env.IMASTREAM_KAFKA_BROKERS ?? '127.0.0.1:19092').split(',').map((b) => b.trim()),
    hostBootId: v['boot-id'] ?? readBootId(problems),
    measurementsTopic: v['measurements-topic'],
    shardsTopic: v['shards-topic'],
    pollMs: checkNumber('poll-ms', v['poll-ms'], 10, 60_000, problems),
    batchSize: checkNumber('batch', v.batch, 1, 10_000, problems),
    kernel: checkKernel(v.kernel, v.log, problems),
    cut: checkCut(v.cut, problems),
    cutRecords: checkNumber('cut-records', v['cut-records'], 0, 1e12, problems),
    cutBytes: checkNumber('cut-bytes', v['cut-bytes'], 0, 1e15, problems),
    shardRecords: checkNumber('shard-records', v['shard-records'], 0, 1e12, problems),
    shardMs: checkNumber('shard-seconds', v['shard-seconds'], 0, 86_400 * 365, problems) * 1000,
    shardMaxBytes: checkNumber(
      'shard-max-bytes',
      v['shard-max-bytes'],
      4096,
      DEFAULT_SHARD_MAX_BYTES,
      problems,
    ),
  };
  if (config.cut !== 'none' && config.kernel.kind === 'file')
    problems.push('--cut needs --kernel: a plain file cannot be cut');
  if (config.cut !== 'none' && config.cutRecords === 0 && config.cutBytes === 0)
    problems.push('--cut needs --cut-records or --cut-bytes');
  checkPaths(config, problems);
  if (problems.length > 0) {
    throw new ImastreamError('IMS_CONFIG_INVALID', problems.join('; '), { details: { problems } });
  }

  return config;
}

function checkKernel(text: string | undefined, log: string, problems: string[]): KernelSpec {
  if (text === undefined) return { kind: 'file', path: log };
  const spec = parseKernelSpec(text);
  if (spec === undefined) {
    problems.push(`--kernel ${text}: expected securityfs, securityfs:DIR or socket:PATH`);
    return { kind: 'file', path: log };
  }
  return spec;
}

function checkCut(text: string, problems: string[]): CutMode {
  if (text !== 'stage' && text !== 'delete' && text !== 'none')
    problems.push('--cut must be stage, delete or none');
  return text as CutMode;
}

function checkBank(name: string, problems: string[]): HashAlg {
  if (!isHashAlg(name)) problems.push(`--digest-alg ${name} is not a known bank`);
  return name as HashAlg;
}

function checkHandle(handle: string, problems: string[]): string {
  if (!/^0x81[0-9a-fA-F]{6}$/.test(handle))
    problems.push(`--ak-ctx ${handle} is not a persistent handle (0x81xxxxxx)`);
  return handle;
}

function checkAkAlg(alg: string, problems: string[]): AkAlg {
  if (!Object.hasOwn(AK_ALGS, alg))
    problems.push(`--ak-alg must be one of ${Object.keys(AK_ALGS).join(', ')}`);
  return alg as AkAlg;
}

function checkScheme(scheme: string, problems: string[]): ExtendScheme {
  if (scheme !== 'perbank' && scheme !== 'padded') problems.push('--scheme must be perbank or padded');
  return scheme as ExtendScheme;
}

function checkNumber(name: string, text: string, min: number, max: number, problems: string[]): number {
  const n = Number(text);
  if (!Number.isFinite(n) || n < min || n > max)
    problems.push(`--${name} must be a number in [${min}, ${max}]`);
  return n;
}

function checkSelection(spec: string, problems: string[]): PcrSelection {
  try {
    const selection = parseSelectionSpec(spec);
    if (selection.some((s) => s.pcrs.length === 0)) problems.push('--pcrs selects no PCR in some bank');
    return selection;
  } catch (err) {
    problems.push(`--pcrs: ${(err as Error).message}`);
    return [];
  }
}

/** The file that must be readable at start: the plain log, or the securityfs list of the bank. */
function kernelFile(config: AgentConfig): string {
  if (config.kernel.kind === 'file') return config.kernel.path;
  if (config.kernel.kind === 'securityfs') {
    const dir = config.kernel.dir ?? SECURITYFS_IMA_DIR;
    const base =
      config.digestAlg === 'sha1'
        ? 'binary_runtime_measurements'
        : `binary_runtime_measurements_${config.digestAlg}`;
    return join(dir, base);
  }
  return config.kernel.path;
}

function readBootId(problems: string[]): string {
  try {
    return readFileSync(BOOT_ID_FILE, 'utf8').trim();
  } catch {
    problems.push(`cannot read ${BOOT_ID_FILE}: pass --boot-id`);
    return '';
  }
}

function checkPaths(config: AgentConfig, problems: string[]): void {
  const readable = config.kernel.kind === 'socket' ? undefined : kernelFile(config);
  try {
    if (readable !== undefined) accessSync(readable, constants.R_OK);
  } catch {
    problems.push(`cannot read the log ${readable}`);
  }
  if (config.stateDir === '') return;
  try {
    mkdirSync(config.stateDir, { recursive: true, mode: 0o700 });
    accessSync(config.stateDir, constants.W_OK);
  } catch {
    problems.push(`cannot write the state directory ${config.stateDir}`);
  }
}
