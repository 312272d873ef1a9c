import { digestSize, type HashAlg, hash, tpmAlgId } from '../hash.ts';
import type { PcrValues } from '../pcr.ts';
import type { SealedShard, ShardScheme } from './types.ts';
import { Writer } from './writer.ts';

/*
 * Sealed shard file, version 1. Every integer is big-endian; a design of ours (there is no kernel
 * or TCG format for shards, DOMAIN §3.5).
 *
 *   magic        8 bytes  "IMSSHARD"
 *   version      u16      1
 *   flags        u16      0 (reserved; anything else is refused)
 *   fileLength   u32      bytes in the whole file, trailing digest included
 *   sections     exactly four, in this order, each `tag u16 ‖ length u32 ‖ body[length]`:
 *     1 HEADER   hostId str8 ‖ bootId str8 ‖ startSeq u64 ‖ endSeq u64 ‖ prevShardDigest[32]
 *     2 START    scheme u8 (0 unknown, 1 perbank, 2 padded) ‖ pcrValues
 *     3 RECORDS  digestAlg u16 (TPM_ALG_ID) ‖ byteOrder u8 (0 LE, 1 BE) ‖ count u32 ‖
 *                count × (length u32 ‖ raw binary record[length])
 *     4 QUOTE    attest b16 ‖ signature b16 ‖ akPublic b16 ‖ nonce b8 ‖ pcrValues
 *   digest       32 bytes SHA-256 over every preceding byte: the shard's digest, which the next
 *                shard of the boot carries as prevShardDigest
 *
 *   str8 = u8 length (1..255) ‖ UTF-8;  b8 / b16 = u8 / u16 length ‖ bytes
 *   pcrValues = bankCount u8 (≤ 16) ‖ per bank: alg u16 (TPM_ALG_ID) ‖ pcrCount u8 (≤ 24) ‖
 *               pcrCount × (index u8, strictly ascending, ≤ 23 ‖ value[digestSize(alg)])
 *
 * The digest is a checksum, not a signature: anyone can recompute it. It catches corruption and,
 * chained through prevShardDigest, makes a removed or swapped shard visible; only the closing
 * quotes make the content trustworthy.
 */

export const SHARD_MAGIC = new TextEncoder().encode('IMSSHARD');
export const SHARD_VERSION = 1;
export const SHARD_DIGEST_ALG: HashAlg = 'sha256';
export const SHARD_DIGEST_SIZE = 32;
/** magic ‖ version ‖ flags ‖ fileLength. */
export const SHARD_PREAMBLE_SIZE = 16;

export const SECTION = { header: 1, start: 2, records: 3, quote: 4 } as const;

export const SHARD_LIMITS = {
  /** Whole file; a shard is a cut every N records, far below this. */
  fileBytes: 1 << 30,
  records: 1 << 20,
  /** One raw record: headers plus the longest template name and a 1 MiB template data. */
  recordBytes: (1 << 20) + 4 + 64 + 4 + 255 + 4,
  banks: 16,
  pcrsPerBank: 24,
  maxPcrIndex: 23,
  /** TPM2B_NAME-sized strings are plenty for host and boot ids. */
  idBytes: 255,
  attest: 2048,
  signature: 1024,
  akPublic: 1024,
  nonce: 64,
} as const;

export const SCHEME_CODE: Readonly<Record<'unknown' | 'perbank' | 'padded', number>> = {
  unknown: 0,
  perbank: 1,
  padded: 2,
};

export function schemeCode(scheme: ShardScheme): number {
  return scheme === null ? SCHEME_CODE.unknown : SCHEME_CODE[scheme];
}

/** SHA-256 over the file minus its trailing digest: what the trailing digest must equal. */
export function computeShardDigest(file: Uint8Array): Uint8Array {
  return hash(SHARD_DIGEST_ALG, file.subarray(0, file.byteLength - SHARD_DIGEST_SIZE));
}

/** The digest a sealed file carries in its last 32 bytes (not checked here). */
export function storedShardDigest(file: Uint8Array): Uint8Array {
  return file.slice(file.byteLength - SHARD_DIGEST_SIZE);
}

/**
 * Seals a shard into the version 1 file. The input comes from our own agent and is trusted to
 * be consistent; what would not decode (oversized fields, wrong record count) throws a RangeError,
 * a bug in the caller rather than hostile input.
 */
export function encodeShard(shard: SealedShard): Uint8Array {
  checkEncodable(shard);
  const w = new Writer();
  w.bytes(SHARD_MAGIC).u16(SHARD_VERSION).u16(0).u32(0);
  section(w, SECTION.header, () => writeHeader(w, shard));
  section(w, SECTION.start, () => writePcrValues(w.u8(schemeCode(shard.scheme)), shard.startPcrs));
  section(w, SECTION.records, () => writeRecords(w, shard));
  section(w, SECTION.quote, () => writeQuote(w, shard));
  w.patchU32(12, w.length + SHARD_DIGEST_SIZE);

  const body = w.finish();
  const file = new Uint8Array(body.byteLength + SHARD_DIGEST_SIZE);
  file.set(body);
  file.set(hash(SHARD_DIGEST_ALG, body), body.byteLength);

  return file;
}

function section(w: Writer, tag: number, body: () => void): void {
  w.u16(tag).u32(0);
  const start = w.length;
  body();
  w.patchU32(start - 4, w.length - start);
}

function writeHeader(w: Writer, s: SealedShard): void {
  writeStr8(w, s.hostId);
  writeStr8(w, s.bootId);
  w.u64(s.startSeq).u64(s.endSeq).bytes(s.prevShardDigest);
}

function writeRecords(w: Writer, s: SealedShard): void {
  w.u16(tpmAlgId(s.recordFormat.digestAlg))
    .u8(s.recordFormat.byteOrder === 'le' ? 0 : 1)
    .u32(s.records.length);
  for (const record of s.records) w.u32(record.byteLength).bytes(record);
}

function writeQuote(w: Writer, s: SealedShard): void {
  const q = s.closingQuote;
  w.u16(q.attest.byteLength).bytes(q.attest);
  w.u16(q.signature.byteLength).bytes(q.signature);
  w.u16(q.akPublic.byteLength).bytes(q.akPublic);
  w.u8(q.nonce.byteLength).bytes(q.nonce);
  writePcrValues(w, q.pcrs);
}

function writeStr8(w: Writer, s: string): void {
  const b = new TextEncoder().encode(s);
  w.u8(b.byteLength).bytes(b);
}

/** Banks in map order, PCRs ascending; the decoder insists on the ascending order. */
function writePcrValues(w: Writer, values: PcrValues): void {
  w.u8(values.size);
  for (const [alg, bank] of values) {
    const indices = [...bank.keys()].sort((a, b) => a - b);
    w.u16(tpmAlgId(alg)).u8(indices.length);
    for (const pcr of indices) w.u8(pcr).bytes(bank.get(pcr) as Uint8Array);
  }
}

function checkEncodable(s: SealedShard): void {
  const fail = (why: string): never => {
    throw new RangeError(`encodeShard: ${why}`);
  };
  const idOk = (id: string) =>
    id.length > 0 && new TextEncoder().encode(id).byteLength <= SHARD_LIMITS.idBytes;
  if (!idOk(s.hostId) || !idOk(s.bootId)) fail('hostId and bootId must be 1..255 UTF-8 bytes');
  if (!Number.isSafeInteger(s.startSeq) || s.startSeq < 0 || s.endSeq - s.startSeq !== s.records.length) {
    fail(`records.length ${s.records.length} is not endSeq - startSeq`);
  }
  if (s.records.length > SHARD_LIMITS.records) fail(`more than ${SHARD_LIMITS.records} records`);
  if (s.records.some((r) => r.byteLength > SHARD_LIMITS.recordBytes)) fail('a record exceeds its limit');
  if (s.prevShardDigest.byteLength !== SHARD_DIGEST_SIZE) fail('prevShardDigest must be 32 bytes');
  const q = s.closingQuote;
  if (q.attest.byteLength > SHARD_LIMITS.attest || q.signature.byteLength > SHARD_LIMITS.signature) {
    fail('attest or signature exceeds its limit');
  }
  if (q.akPublic.byteLength > SHARD_LIMITS.akPublic || q.nonce.byteLength > SHARD_LIMITS.nonce) {
    fail('akPublic or nonce exceeds its limit');
  }
  for (const values of [s.startPcrs, q.pcrs]) checkPcrValues(values, fail);
}

function checkPcrValues(values: PcrValues, fail: (why: string) => never): void {
  if (values.size > SHARD_LIMITS.banks) fail(`more than ${SHARD_LIMITS.banks} banks`);
  for (const [alg, bank] of values) {
    for (const [pcr, value] of bank) {
      if (!Number.isInteger(pcr) || pcr < 0 || pcr > SHARD_LIMITS.maxPcrIndex) fail(`PCR index ${pcr}`);
      if (value.byteLength !== digestSize(alg)) fail(`${alg} PCR ${pcr} is not ${digestSize(alg)} bytes`);
    }
  }
}
