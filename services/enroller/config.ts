import { readFile } from 'node:fs/promises';
import type { EkPolicy } from '../../lib/enrol/ek-policy.ts';
import { ImastreamError } from '../../lib/errors.ts';
import { COMMON_SETTINGS, type ConfigOf, parsers, type Settings } from '../shared/config.ts';
import { loadTrustStore } from './trust-store.ts';

/**
 * --ek-policy names what an EK without a certificate needs: `certificate` (one is required:
 * lib/enrol's `reject`), `allow-list` or `tofu`. An EK with a certificate always needs its chain.
 */
const EK_POLICIES = { certificate: 'reject', 'allow-list': 'allow-list', tofu: 'tofu' } as const;
type WithoutCertificate = (typeof EK_POLICIES)[keyof typeof EK_POLICIES];

/** An optional path: empty means not configured. */
const optionalPath = (text: string): string => text;

/** Settings of the enroller process (flags win over environment, which wins over defaults). */
export const ENROLLER_SETTINGS = {
  // The enroller keeps no state in Redis: pending challenges are in memory, enrolments on Kafka.
  kafkaBrokers: COMMON_SETTINGS.kafkaBrokers,
  logLevel: COMMON_SETTINGS.logLevel,
  trustDir: {
    flag: 'trust-store',
    env: 'IMASTREAM_EK_TRUST_STORE',
    default: '',
    parse: optionalPath,
    doc: 'directory of EK manufacturer root and intermediate certificates (PEM/DER); empty: none',
  },
  withoutCertificate: {
    flag: 'ek-policy',
    env: 'IMASTREAM_EK_POLICY',
    default: 'certificate',
    parse: (text: string): WithoutCertificate => {
      if (!Object.hasOwn(EK_POLICIES, text)) {
        throw new Error(`"${text}" is not one of ${Object.keys(EK_POLICIES).join('|')}`);
      }
      return EK_POLICIES[text as keyof typeof EK_POLICIES];
    },
    doc: 'EKs without a certificate: certificate (refused) | allow-list | tofu (trust on first use)',
  },
  allowListFile: {
    flag: 'allow-list',
    env: 'IMASTREAM_EK_ALLOW_LIST',
    default: '',
    parse: optionalPath,
    doc: 'file of allowed EK key hashes (SHA-256 of the DER SubjectPublicKeyInfo, hex, one per line)',
  },
  rebindFile: {
    flag: 'ek-rebind',
    env: 'IMASTREAM_EK_REBIND',
    default: '',
    parse: optionalPath,
    doc: 'file of "<hostId> <EK key hash>" lines: hosts that may move to that EK (a replaced TPM) or come back from revoked',
  },
  challengeTtlMs: {
    flag: 'challenge-ttl-ms',
    env: 'IMASTREAM_ENROL_CHALLENGE_TTL_MS',
    default: '300000',
    parse: parsers.int(1000, 3_600_000),
    doc: 'how long an enrolment challenge may be answered, ms',
  },
  groupId: {
    flag: 'group-id',
    default: 'imastream-enroller',
    parse: parsers.string,
    doc: 'consumer group on ima.enrol-requests',
  },
} satisfies Settings;

export type EnrollerConfig = ConfigOf<typeof ENROLLER_SETTINGS>;

/** The EK policy the configuration describes, with its files read and checked. */
export async function loadEkPolicy(config: EnrollerConfig): Promise<EkPolicy> {
  const trustStore = config.trustDir === '' ? null : await loadTrustStore(config.trustDir);
  const allowList =
    config.allowListFile === '' ? new Set<string>() : await loadAllowList(config.allowListFile);
  if (config.withoutCertificate === 'allow-list' && allowList.size === 0) {
    throw new ImastreamError('IMS_CONFIG_INVALID', '--ek-policy allow-list needs a non-empty --allow-list');
  }
  if (trustStore === null && config.withoutCertificate === 'reject') {
    throw new ImastreamError(
      'IMS_CONFIG_INVALID',
      'no --trust-store and --ek-policy certificate: no EK could enrol',
    );
  }

  const rebind = config.rebindFile === '' ? new Map<string, string>() : await loadRebind(config.rebindFile);

  return { trustStore, withoutCertificate: config.withoutCertificate, allowList, rebind };
}

/** Lines of the file at `path`, or IMS_IO_READ_FAILED. */
async function readLines(path: string): Promise<string[]> {
  try {
    return (await readFile(path, 'utf8')).split('\n');
  } catch (cause) {
    throw new ImastreamError('IMS_IO_READ_FAILED', `${path} cannot be read`, { cause, details: { path } });
  }
}

/** One lowercase SHA-256 hex per line; blank lines and `#` comments ignored; anything else is an error. */
export async function loadAllowList(path: string): Promise<Set<string>> {
  const hashes = new Set<string>();
  for (const [i, raw] of (await readLines(path)).entries()) {
    const line = raw.replace(/#.*/, '').trim().toLowerCase();
    if (line === '') continue;
    if (!/^[0-9a-f]{64}$/.test(line)) {
      throw new ImastreamError('IMS_CONFIG_INVALID', `${path}:${i + 1}: not a SHA-256 hex digest`);
    }
    hashes.add(line);
  }

  return hashes;
}

/**
 * `<hostId> <EK key hash>` per line (the hash as for the allow-list); blank lines and `#` comments
 * ignored; a host listed twice or anything else is an error. An entry lets that host enrol with
 * that EK although it is bound to another one or was revoked (lib/enrol/ek-policy.ts); remove it
 * once the host has enrolled, or the host may move back to that EK later.
 */
export async function loadRebind(path: string): Promise<Map<string, string>> {
  const rebind = new Map<string, string>();
  for (const [i, raw] of (await readLines(path)).entries()) {
    const line = raw.replace(/#.*/, '').trim();
    if (line === '') continue;
    const m = /^([\x21-\x7e]{1,255})\s+([0-9a-fA-F]{64})$/.exec(line);
    if (m === null) {
      throw new ImastreamError('IMS_CONFIG_INVALID', `${path}:${i + 1}: not "<hostId> <SHA-256 hex>"`);
    }
    const [, hostId, keyHash] = m as unknown as [string, string, string];
    if (rebind.has(hostId))
      throw new ImastreamError('IMS_CONFIG_INVALID', `${path}:${i + 1}: ${hostId} listed twice`);
    rebind.set(hostId, keyHash.toLowerCase());
  }

  return rebind;
}
