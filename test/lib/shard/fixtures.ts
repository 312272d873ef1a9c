import { generateKeyPairSync, type KeyObject, sign } from 'node:crypto';
import type { HashAlg } from '../../../lib/hash.ts';
import { encodeBinaryRecord } from '../../../lib/ima/encode.ts';
import type { ImaRecord } from '../../../lib/ima/record.ts';
import { type ExtendScheme, PcrReplay } from '../../../lib/ima/replay.ts';
import { generateLog } from '../../../lib/ima/synthetic.ts';
import type { PcrValues } from '../../../lib/pcr.ts';
import { computeShardDigest, encodeShard } from '../../../lib/shard/format.ts';
import type { SealedShard } from '../../../lib/shard/types.ts';
import { concat, u16be, u32be } from '../../../lib/tpm/marshal.ts';
import { computePcrDigest } from '../../../lib/tpm/pcr-digest.ts';
import { encodePcrSelection, type PcrSelection } from '../../../lib/tpm/pcr-selection.ts';

/**
 * Test-only fixtures for unit tests of shards: a software RSA AK that signs TPMS_ATTEST bytes
 * laid out as DOMAIN §4.1 describes, and a chain builder. The swtpm integration test checks the
 * same code against a real TPM; these keep the unit tests fast and independent of swtpm.
 */

export interface SoftAk {
  /** TPM2B_PUBLIC: RSA-2048, nameAlg SHA-256, restricted sign, RSASSA/SHA-256 (DOMAIN §4.5). */
  akPublic: Uint8Array;
  privateKey: KeyObject;
}

export function softAk(): SoftAk {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const n = Buffer.from(publicKey.export({ format: 'jwk' }).n as string, 'base64url');
  const area = concat(
    u16be(0x0001), // type RSA
    u16be(0x000b), // nameAlg SHA-256
    u32be(0x00050072), // fixedTPM fixedParent sensitiveDataOrigin userWithAuth restricted sign
    u16be(0), // authPolicy empty
    u16be(0x0010), // symmetric NULL
    u16be(0x0014), // scheme RSASSA
    u16be(0x000b), // scheme hash SHA-256
    u16be(2048), // keyBits
    u32be(0), // exponent 0 = 65537
    u16be(n.byteLength),
    n,
  );

  return { akPublic: concat(u16be(area.byteLength), area), privateKey };
}

let shared: SoftAk | undefined;

/** One AK for every chain that does not ask for its own: RSA key generation is slow. */
export function defaultAk(): SoftAk {
  shared ??= softAk();
  return shared;
}

export interface QuoteParams {
  nonce: Uint8Array;
  pcrs: PcrValues;
  selection: PcrSelection;
  clock?: bigint;
  resetCount?: number;
  restartCount?: number;
}

/** TPMS_ATTEST of a quote over `pcrs`, and its TPMT_SIGNATURE (RSASSA, SHA-256). */
export function softQuote(ak: SoftAk, p: QuoteParams): { attest: Uint8Array; signature: Uint8Array } {
  const digest = computePcrDigest(p.selection, p.pcrs, 'sha256');
  if (!(digest instanceof Uint8Array)) throw new Error('softQuote: a selected PCR has no value');
  const clock = new Uint8Array(17);
  const view = new DataView(clock.buffer);
  view.setBigUint64(0, p.clock ?? 1000n);
  view.setUint32(8, p.resetCount ?? 1);
  view.setUint32(12, p.restartCount ?? 0);
  clock[16] = 1; // safe
  const attest = concat(
    u32be(0xff544347),
    u16be(0x8018),
    u16be(34),
    new Uint8Array(34).fill(0x0b, 1, 2), // qualifiedSigner: 000b ‖ 32 zero bytes (not checked here)
    u16be(p.nonce.byteLength),
    p.nonce,
    clock,
    new Uint8Array(8), // firmwareVersion
    encodePcrSelection(p.selection),
    u16be(digest.byteLength),
    digest,
  );
  const sig = sign('sha256', attest, ak.privateKey);

  return { attest, signature: concat(u16be(0x0014), u16be(0x000b), u16be(sig.byteLength), sig) };
}

export const SELECTION: PcrSelection = [
  { bank: 'sha1', pcrs: [10] },
  { bank: 'sha256', pcrs: [10] },
];

/** The quoted subset of a replay's values. */
export function quotedValues(replay: PcrReplay, scheme: ExtendScheme, selection = SELECTION): PcrValues {
  const out: PcrValues = new Map();
  for (const { bank, pcrs } of selection) {
    const alg = bank as HashAlg;
    out.set(alg, new Map(pcrs.map((pcr) => [pcr, replay.value(scheme, alg, pcr)])));
  }

  return out;
}

export interface ChainOptions {
  records?: number;
  /** Records per shard. */
  cut?: number;
  seed?: number;
  hostId?: string;
  bootId?: string;
  /** The kernel's extend scheme to simulate. */
  scheme?: ExtendScheme;
  ak?: SoftAk;
}

export interface Chain {
  ak: SoftAk;
  records: ImaRecord[];
  shards: SealedShard[];
  files: Uint8Array[];
}

/** A boot's log cut every `cut` records, each shard closed by a soft quote and sealed. */
export function buildChain(opts: ChainOptions = {}): Chain {
  const ak = opts.ak ?? defaultAk();
  const scheme = opts.scheme ?? 'perbank';
  const { records } = generateLog({ records: opts.records ?? 10, seed: opts.seed ?? 7 });
  const cut = opts.cut ?? 4;
  const replay = new PcrReplay({ banks: ['sha1', 'sha256'], schemes: [scheme] });
  const shards: SealedShard[] = [];
  let start: PcrValues = zeros();
  for (let from = 0, k = 0; from < records.length; from += cut, k++) {
    const slice = records.slice(from, from + cut);
    for (const rec of slice) replay.extend(rec);
    const pcrs = quotedValues(replay, scheme);
    const nonce = Uint8Array.of(0xa0, k, 1, 2, 3, 4, 5, 6);
    const quote = softQuote(ak, { nonce, pcrs, selection: SELECTION, clock: 1000n + BigInt(k) * 10n });
    shards.push({
      hostId: opts.hostId ?? 'host-1',
      bootId: opts.bootId ?? 'boot-a:1',
      startSeq: from,
      endSeq: from + slice.length,
      startPcrs: start,
      scheme: null,
      recordFormat: { digestAlg: 'sha1', byteOrder: 'le' },
      records: slice.map((r) => encodeBinaryRecord(r)),
      closingQuote: { ...quote, akPublic: ak.akPublic, nonce, pcrs },
      prevShardDigest: new Uint8Array(32),
    });
    start = pcrs;
  }

  return { ak, records, shards, files: sealChain(shards) };
}

/** Seals shards in order, linking each to the previous file's digest. */
export function sealChain(shards: SealedShard[]): Uint8Array[] {
  const files: Uint8Array[] = [];
  for (const [i, shard] of shards.entries()) {
    const prev = files[i - 1];
    if (prev !== undefined) shard.prevShardDigest = computeShardDigest(prev);
    files.push(encodeShard(shard));
  }

  return files;
}

export function zeros(): PcrValues {
  return new Map([
    ['sha1', new Map([[10, new Uint8Array(20)]])],
    ['sha256', new Map([[10, new Uint8Array(32)]])],
  ]);
}
