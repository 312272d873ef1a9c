/**
 * The shared corpus (../shared/corpus, see each folder's README) as test cases: each file with
 * the values its README publishes, and what imastream gets. corpus.test.ts asserts them; running
 * this module prints the table as JSON:
 *
 *   node --import tsx test/lib/ima/corpus-cases.ts
 *
 * Padded values for logs with violations: the READMEs extended violations as 0xFF × 32 in the
 * SHA-256 padded chain. Kernels 4.11–5.7 extended 0xFF × 20 then zeros (DOMAIN.md §2.3), and
 * evmctl 1.4 only accepts that (test/lib/ima/evmctl.test.ts). So for those files the README
 * value is checked with the README's rule (`readmeRulePadded`), and ours is reported next to it.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { toHex } from '../../../lib/bytes/hex.ts';
import type { HashAlg } from '../../../lib/hash.ts';
import { checkTemplateDigest } from '../../../lib/ima/check.ts';
import { templateDigestOf } from '../../../lib/ima/digest.ts';
import { type LogFormat, parseLog } from '../../../lib/ima/parse.ts';
import { type ImaRecord, isViolation } from '../../../lib/ima/record.ts';
import { type ExtendScheme, PcrReplay } from '../../../lib/ima/replay.ts';

export const CORPUS = new URL('../../../../shared/corpus/', import.meta.url);

/** `scheme:bank` of PCR 10 → lowercase hex. */
type Pcr10 = Partial<Record<`${ExtendScheme}:${HashAlg}`, string>>;

export interface CorpusCase {
  file: string;
  format: LogFormat;
  digestAlg?: HashAlg;
  banks?: HashAlg[];
  records: number;
  violations: number;
  /** Parse problems as `code@offset`, in order. */
  problems: string[];
  digestMismatches: number;
  expected: Pcr10;
  /** README padded SHA-256 value that assumes violations extend 0xFF × 32. */
  readmeRulePadded?: string;
}

const TSS = 'tpm2-tss/';
const KUN = 'kunpengsecl/ascii_runtime_measurements';

export const CASES: CorpusCase[] = [
  {
    file: `${TSS}sml-ima-sha1.bin`,
    format: 'binary',
    records: 12,
    violations: 0,
    problems: ['IMS_IMA_TRUNCATED@916'],
    digestMismatches: 0,
    expected: {
      'perbank:sha1': '062a05a9d18d1a51775ff8162bf6964b8dd23eb4',
      'perbank:sha256': '239ba8e6f20ecfec961d771036c68f02dbeb771678b64c18cba81363e8e7139a',
      'padded:sha256': 'fe965aa7a38d566f153dbefe5841c37c4494d93f0716e53b3617343d801fd349',
    },
  },
  {
    file: `${TSS}sml-ima-sha1-invalidated.bin`,
    format: 'binary',
    records: 1,
    violations: 1,
    problems: [],
    digestMismatches: 0,
    expected: {
      'perbank:sha1': 'bac37b84f007d0238af95af707cac8d61254870e',
      'perbank:sha256': 'bba91ca85dc914b2ec3efb9e16e7267bf9193b14350d20fba8a8b406730ae30a',
    },
    // "same as per-bank" in the README
    readmeRulePadded: 'bba91ca85dc914b2ec3efb9e16e7267bf9193b14350d20fba8a8b406730ae30a',
  },
  {
    file: `${TSS}sml-ima-ng-sha1.bin`,
    format: 'binary',
    records: 6,
    violations: 0,
    problems: ['IMS_IMA_TRUNCATED@558'],
    digestMismatches: 0,
    expected: {
      'perbank:sha1': 'ef2a20de2a84a4780f92ab11d5c4934c709dff00',
      'perbank:sha256': '700a1bb47bc2bc005f2d8e23d80e2a1e301733c1d29023c52d1d7d149719eb64',
      'padded:sha256': 'f4059058172c2d1d279b7ce206ce9373249786f9a9dc59a2af279e0eaed14a26',
    },
  },
  {
    // PCR 13 record whose declared data length overruns the file by one byte
    file: `${TSS}sml-ima-ng-sha1-invalidated.bin`,
    format: 'binary',
    records: 0,
    violations: 0,
    problems: ['IMS_IMA_TRUNCATED@0'],
    digestMismatches: 0,
    expected: {},
  },
  {
    file: `${TSS}sml-ima-sig-sha256.bin`,
    format: 'binary',
    records: 9,
    violations: 0,
    problems: ['IMS_IMA_TRUNCATED@987'],
    digestMismatches: 0,
    expected: {
      'perbank:sha1': 'b44019405884709ca410b0c30b48159d3a556622',
      'perbank:sha256': 'a7e76625386d3dc6248552e44a3b2b1bebb6f2ff3acc9bd220821ad22f7a9d6a',
      'padded:sha256': '9795c7da414424d16efd3821f51d88fd39d64ec382ce36a28ca650a3e9f69c18',
    },
  },
  {
    file: `${TSS}sml-ima-sig-sha256-invalidated.bin`,
    format: 'binary',
    records: 2,
    violations: 1,
    problems: [],
    digestMismatches: 0,
    expected: {
      'perbank:sha1': 'a0e7bc9af0a2b54147b0d595d058f15c6cc44a6d',
      'perbank:sha256': '338c5ec5cba3d64a886cc6f369f10e5209bf8f49db078635723bb1ed8091b2ba',
    },
    readmeRulePadded: 'a3f1c4ecc31e878ce24f1f51b59d2dc0780e1beee3411ef93677759f265c42f3',
  },
  {
    file: 'ibmtss/imatest.log',
    format: 'binary',
    records: 17,
    violations: 1,
    problems: [],
    digestMismatches: 0,
    expected: {
      'perbank:sha1': '0ff68e1da514770e85581bffe693809776302a63',
      'perbank:sha256': 'af02ae09413721fddb71250ae26383de73cc78d5df37fbebadacedeaeacddb18',
    },
    readmeRulePadded: '2c88e99f2fdead0294a140f5361eb64d968be82ff42f6e7871f94e9ec530210a',
  },
  {
    file: 'keylime/ascii_runtime_measurements_ima',
    format: 'ascii',
    records: 867,
    violations: 9,
    problems: [],
    digestMismatches: 0,
    expected: {
      'perbank:sha1': '93aacc9ec455c429c1a2d291650e40e7655565d8',
      'perbank:sha256': '48fe08ab3cfdb485e61ac6cc6d4c40a09eef0dce7ddfc93dce6f18a955fd61d4',
    },
    readmeRulePadded: '544468bbe68e54ffd7dc40f0756d8e5c740c8eaec053140bc6de6d3cddef9f39',
  },
  {
    file: 'keylime/ima-log-sha1',
    format: 'ascii',
    records: 2,
    violations: 1,
    problems: [],
    digestMismatches: 0,
    expected: { 'perbank:sha1': '62e5bdf4783228f7deec959f0a89a4739af79ac5' },
  },
  {
    file: 'keylime/ima-log-sha256',
    format: 'ascii',
    records: 2,
    violations: 0,
    problems: [],
    digestMismatches: 0,
    expected: {
      'perbank:sha1': '8adcb4304b78ee782bbba3733b191591e75dc83d',
      'perbank:sha256': '8dcd5e7eb63e363377ec19b0d358601ccc19f25a30486f35784c5288dbb91d9d',
    },
  },
  {
    file: 'keylime/ima-log-sha384',
    format: 'ascii',
    records: 2,
    violations: 1,
    problems: [],
    digestMismatches: 0,
    expected: { 'perbank:sha1': '3dfd156753bbf66afbb3c10b98bac02ed13b481c' },
  },
  {
    file: 'keylime/ima-log-sha512',
    format: 'ascii',
    records: 2,
    violations: 1,
    problems: [],
    digestMismatches: 0,
    expected: { 'perbank:sha1': 'a37fb4ca32af8c94fefe8a4ce10d4b6dac5a7322' },
  },
  {
    file: 'keylime/ima-log-sm3_256',
    format: 'ascii',
    digestAlg: 'sm3',
    banks: ['sm3'],
    records: 2,
    violations: 1,
    // keylime spells the algorithm `sm3_256`; kernels write `sm3` (or `sm3-256` before 2020)
    problems: ['IMS_IMA_BAD_FIELD@163'],
    digestMismatches: 0,
    expected: { 'perbank:sm3': '9e6066a7981769154d79a1ce330020099eba2683e55729413b536a27bf517d81' },
  },
  {
    // invalid on purpose: unknown digest algorithm, template hash borrowed from the SM3 log
    file: 'keylime/ima-log-unknown',
    format: 'ascii',
    records: 2,
    violations: 1,
    problems: ['IMS_IMA_BAD_FIELD@157'],
    digestMismatches: 1,
    expected: {},
  },
  ...kunpengsecl(),
  {
    file: 'rust-keylime/ascii_runtime_measurements',
    format: 'ascii',
    records: 826,
    violations: 0,
    problems: [],
    digestMismatches: 0,
    expected: {
      'perbank:sha1': '82231c67a69da98dc5b3aa10f6343d33109225fc',
      'perbank:sha256': 'c4a065637fc6a7c55f2811dd06cb45dd037133be2b3dc5c3e6fbe6bf061db724',
      'padded:sha256': 'ef71b29aba95006a998a95086640b01738a688e3558e36b547df3d989a4c57fd',
    },
  },
  {
    // per-bank layout: 32-byte template digests
    file: 'global-trust-authority/ima.bin',
    format: 'binary',
    digestAlg: 'sha256',
    records: 2,
    violations: 0,
    problems: [],
    digestMismatches: 0,
    expected: { 'perbank:sha256': '8c4fb94d4d15f6069aad176dace62a2ec0720ae864473d6419978da5b168ce11' },
  },
  {
    file: 'global-trust-authority/ima.log',
    format: 'ascii',
    digestAlg: 'sha256',
    records: 2,
    violations: 0,
    problems: [],
    digestMismatches: 0,
    expected: { 'perbank:sha256': '8c4fb94d4d15f6069aad176dace62a2ec0720ae864473d6419978da5b168ce11' },
  },
];

function kunpengsecl(): CorpusCase[] {
  const rows: [string, number, number, string, string, string][] = [
    [
      '',
      5553,
      0,
      'fcc9cdaffc81f1726667298d5efd8e2b3b558f30',
      '447db0dc524b6686d728f96c76a8e9beb8d8363f0e4a227ef48a7dbba0b1710b',
      '6dcad460a994abab498a57e6862dde928d09360105f600755f132cce773ff50c',
    ],
    [
      '_orig',
      5566,
      14,
      '5f3a1c1f97bc9afd20800b7cfe989c0e596aeb6a',
      '6f0530de3ea2811311cfd3332ec202a7a27a2fdb812b3c4bc9fa6ea9bac1ad53',
      '50e96bee147d817f8c16cc947cbfe4e144273b9feb92d0404d80c6a7844da49f',
    ],
    [
      '_ima-ng_sha1',
      2347,
      0,
      '74b5bee17493ff007724dc1562a2e5b7ace1ef29',
      'a96237249566d4d553746e24a1de10a731d36a449615aa9250a42aa4ed589770',
      'dc674808db3dd7195707702d78de2db59585895cbaed197ce8fc97e7ec9cab49',
    ],
    [
      '_ima-ng_sha1_orig',
      2349,
      1,
      'f78f23f022769c0dba5e9aaf0decf9abf7415dd0',
      '3faa0b803eaf2f070ef0f7f84d53cfe26891e2757576fea08d53befa9ece6a04',
      'c00ec88965130a565dce52d36a3e3375e85badc570cb1c0e67ba72d7a058b087',
    ],
    [
      '_ima-ng_sha256',
      2510,
      0,
      '77c77ae47e27835dd49ccd1a92fbb36d1d61b447',
      '8274edea17220227f7f68c23ca5395578eab6c44bc1fd527c711821bfe3c7f2c',
      '7f667cd495e5af38d17bf134b47ce6ceeff5e27880ee02ddd91383d1e34efd9f',
    ],
    [
      '_ima-ng_sha256_orig',
      2514,
      3,
      'eb0a2db6dbb4a32b795765367c6c1849d6683070',
      'c0349ebbaee4bf0bf80126784dda94a1898af842fd527df5e93f1a896fd61c25',
      '60f6c4a8258546db68c75c9b7105b40a3a7bcfb976afd946eacafeab9d25cb54',
    ],
  ];

  return rows.map(([suffix, records, violations, sha1, sha256, padded]) => ({
    file: `${KUN}${suffix}`,
    format: 'ascii',
    records,
    violations,
    problems: [],
    digestMismatches: 0,
    expected: {
      'perbank:sha1': sha1,
      'perbank:sha256': sha256,
      ...(violations === 0 ? { 'padded:sha256': padded } : {}),
    },
    ...(violations === 0 ? {} : { readmeRulePadded: padded }),
  }));
}

export interface CorpusResult {
  file: string;
  records: number;
  violations: number;
  problems: string[];
  digestMismatches: number;
  got: Pcr10;
  /** Our padded SHA-256 PCR 10 (violations as 0xFF×20 ‖ zeros, the kernel and evmctl rule). */
  padded?: string;
  /** Padded SHA-256 with violations as 0xFF × 32, to compare with the README's value. */
  readmeRulePadded?: string;
}

/** Parses and replays one corpus file, reporting what the README states. */
export function runCase(c: CorpusCase): CorpusResult {
  const bytes = readFileSync(new URL(c.file, CORPUS));
  const { records, problems } = parseLog(bytes, { format: 'auto', digestAlg: c.digestAlg });
  const banks = c.banks ?? ['sha1', 'sha256'];
  const replay = new PcrReplay({ banks });
  let digestMismatches = 0;
  for (const rec of records) {
    replay.extend(rec);
    const alg = c.digestAlg ?? (rec.templateDigest.byteLength === 32 ? 'sha256' : 'sha1');
    if (checkTemplateDigest(rec, alg) !== undefined) digestMismatches++;
  }
  const got: Pcr10 = {};
  for (const key of Object.keys(c.expected) as (keyof Pcr10)[]) {
    const [scheme, bank] = key.split(':') as [ExtendScheme, HashAlg];
    got[key] = toHex(replay.value(scheme, bank, 10));
  }
  const result: CorpusResult = {
    file: c.file,
    records: records.length,
    violations: records.filter(isViolation).length,
    problems: problems.map((p) => `${p.code}@${p.offset}`),
    digestMismatches,
    got,
  };
  if (c.readmeRulePadded !== undefined) {
    result.padded = toHex(replay.value('padded', 'sha256', 10));
    result.readmeRulePadded = toHex(paddedAllOnes(records));
  }

  return result;
}

/**
 * SHA-256 padded chain of PCR 10 with violations as 0xFF × 32 (the READMEs' rule), written
 * independently of lib/ima/replay.ts with node:crypto.
 */
function paddedAllOnes(records: ImaRecord[]): Uint8Array {
  let pcr: Uint8Array = new Uint8Array(32);
  for (const rec of records) {
    if (rec.pcr !== 10) continue;
    const d = new Uint8Array(32);
    if (isViolation(rec)) d.fill(0xff);
    else d.set(templateDigestOf(rec, 'sha1'));
    pcr = createHash('sha256').update(pcr).update(d).digest();
  }

  return pcr;
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const table = CASES.map((c) => ({ ...runCase(c), expected: c.expected, readmePadded: c.readmeRulePadded }));
  console.log(JSON.stringify(table, null, 2));
}
