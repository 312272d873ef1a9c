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

  return { trustStore, withoutCertificate: config.withoutCertificate, allowList };
}

/** One lowercase SHA-256 hex per line; blank lines and `#` comments ignored; anything else is an error. */
export async function loadAllowList(path: string): Promise<Set<string>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (cause) {
    throw new ImastreamError('IMS_IO_READ_FAILED', `${path} cannot be read`, { cause, details: { path } });
  }
  const hashes = new Set<string>();
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.replace(/#.*/, '').trim().toLowerCase();
    if (line === '') continue;
    if (!/^[0-9a-f]{64}$/.test(line)) {
      throw new ImastreamError('IMS_CONFIG_INVALID', `${path}:${i + 1}: not a SHA-256 hex digest`);
    }
    hashes.add(line);
  }

  return hashes;
}
