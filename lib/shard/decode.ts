import { bytesEqual } from '../bytes/hex.ts';
import { Reader } from '../bytes/reader.ts';
import { ImastreamError } from '../errors.ts';
import { digestSize, hashAlgFromTpm } from '../hash.ts';
import type { PcrBank, PcrValues } from '../pcr.ts';
import {
  computeShardDigest,
  SCHEME_CODE,
  SECTION,
  SHARD_DIGEST_SIZE,
  SHARD_LIMITS,
  SHARD_MAGIC,
  SHARD_PREAMBLE_SIZE,
  SHARD_VERSION,
} from './format.ts';
import type { ClosingQuote, RecordFormat, SealedShard, ShardScheme } from './types.ts';

/** Smallest possible file: preamble, four empty-ish sections, digest. */
const MIN_FILE = SHARD_PREAMBLE_SIZE + 4 * 6 + SHARD_DIGEST_SIZE;
/** Smallest raw record on the wire: length prefix plus pcr, a 20-byte digest, two lengths. */
const MIN_RECORD_ENTRY = 4 + 4 + 20 + 4 + 4;

function badFormat(message: string, offset: number, extra: Record<string, unknown> = {}): ImastreamError {
  return new ImastreamError('IMS_SHARD_BAD_FORMAT', message, { details: { offset, ...extra } });
}

/**
 * Reads the preamble only: magic, version, flags (must be 0), declared length. Lets a caller tell "not a
 * shard file at all" (unusable input) from "a shard that fails its checks" (a verdict).
 * Throws IMS_SHARD_BAD_FORMAT.
 */
export function sniffShard(file: Uint8Array): { version: number; fileLength: number } {
  if (file.byteLength < SHARD_PREAMBLE_SIZE) {
    throw badFormat(`${file.byteLength} bytes is too short for a shard`, 0);
  }
  if (!bytesEqual(file.subarray(0, SHARD_MAGIC.byteLength), SHARD_MAGIC)) {
    throw badFormat('not a sealed shard (bad magic)', 0);
  }
  const r = new Reader(file, { start: SHARD_MAGIC.byteLength, truncatedCode: 'IMS_SHARD_BAD_FORMAT' });
  const version = r.u16be('version');
  if (version !== SHARD_VERSION) throw badFormat(`shard version ${version} is not supported`, 8, { version });
  const flags = r.u16be('flags');
  if (flags !== 0) throw badFormat(`reserved flags are 0x${flags.toString(16)}`, 10);

  return { version, fileLength: r.u32be('fileLength') };
}

/**
 * Decodes a sealed shard file. The whole file is checked against its trailing SHA-256 before any
 * section is read, so a corrupted byte anywhere is IMS_SHARD_CORRUPT (or IMS_SHARD_BAD_FORMAT when
 * it hits the magic, version, flags or declared length). A file whose digest holds is still
 * hostile input (anyone can recompute a SHA-256): every length is checked before it is used.
 *
 * The result is a claim, not a verified shard: run {@link verifyShardChain} on it.
 */
export function decodeShard(file: Uint8Array): SealedShard {
  const { fileLength } = sniffShard(file);
  if (
    fileLength !== file.byteLength ||
    file.byteLength < MIN_FILE ||
    file.byteLength > SHARD_LIMITS.fileBytes
  ) {
    throw badFormat(`declared length ${fileLength}, file has ${file.byteLength} bytes`, 12);
  }
  if (!bytesEqual(computeShardDigest(file), file.subarray(file.byteLength - SHARD_DIGEST_SIZE))) {
    throw new ImastreamError('IMS_SHARD_CORRUPT', 'shard digest does not match its content', {
      details: { offset: file.byteLength - SHARD_DIGEST_SIZE },
    });
  }

  const r = new Reader(file, {
    start: SHARD_PREAMBLE_SIZE,
    end: file.byteLength - SHARD_DIGEST_SIZE,
    truncatedCode: 'IMS_SHARD_BAD_FORMAT',
  });
  const header = inSection(r, SECTION.header, readHeader);
  const start = inSection(r, SECTION.start, readStart);
  const { recordFormat, records } = inSection(r, SECTION.records, readRecords);
  const closingQuote = inSection(r, SECTION.quote, readQuote);
  if (r.remaining !== 0) throw badFormat(`${r.remaining} bytes after the last section`, r.position);
  if (records.length !== header.endSeq - header.startSeq) {
    throw badFormat(`${records.length} records for seq [${header.startSeq}, ${header.endSeq})`, 0);
  }

  return { ...header, startPcrs: start.pcrs, scheme: start.scheme, recordFormat, records, closingQuote };
}

/** Reads `tag u16 ‖ length u32 ‖ body`, runs `read` on exactly the body and checks it used all of it. */
function inSection<T>(r: Reader, tag: number, read: (body: Reader) => T): T {
  const at = r.position;
  const got = r.u16be('section.tag');
  if (got !== tag) throw badFormat(`expected section ${tag}, found ${got}`, at);
  const length = r.u32be('section.length');
  const bodyStart = r.position;
  r.skip(length, `section ${tag}`);
  const body = new Reader(r.buf, {
    start: bodyStart,
    end: bodyStart + length,
    truncatedCode: 'IMS_SHARD_BAD_FORMAT',
  });
  const value = read(body);
  if (body.remaining !== 0)
    throw badFormat(`section ${tag} has ${body.remaining} unused bytes`, body.position);

  return value;
}

function readHeader(
  r: Reader,
): Pick<SealedShard, 'hostId' | 'bootId' | 'startSeq' | 'endSeq' | 'prevShardDigest'> {
  const hostId = readStr8(r, 'hostId');
  const bootId = readStr8(r, 'bootId');
  const startSeq = readSeq(r, 'startSeq');
  const endAt = r.position;
  const endSeq = readSeq(r, 'endSeq');
  if (endSeq < startSeq) throw badFormat(`endSeq ${endSeq} is before startSeq ${startSeq}`, endAt);
  const prevShardDigest = r.bytes(SHARD_DIGEST_SIZE, 'prevShardDigest').slice();

  return { hostId, bootId, startSeq, endSeq, prevShardDigest };
}

function readStart(r: Reader): { scheme: ShardScheme; pcrs: PcrValues } {
  const at = r.position;
  const code = r.u8('scheme');
  const scheme = Object.entries(SCHEME_CODE).find(([, c]) => c === code)?.[0];
  if (scheme === undefined) throw badFormat(`unknown scheme ${code}`, at);

  return {
    scheme: scheme === 'unknown' ? null : (scheme as ShardScheme),
    pcrs: readPcrValues(r, 'startPcrs'),
  };
}

function readRecords(r: Reader): { recordFormat: RecordFormat; records: Uint8Array[] } {
  const at = r.position;
  const digestAlg = hashAlgFromTpm(r.u16be('records.digestAlg'));
  if (digestAlg === undefined) throw badFormat('records: unknown digest algorithm', at);
  const order = r.u8('records.byteOrder');
  if (order > 1) throw badFormat(`records: byte order ${order}`, at + 2);
  const countAt = r.position;
  const count = r.u32be('records.count');
  if (count > SHARD_LIMITS.records || count * MIN_RECORD_ENTRY > r.remaining) {
    throw badFormat(`records: count ${count} does not fit`, countAt, { count });
  }

  const records: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    const lengthAt = r.position;
    const length = r.u32be('record.length');
    if (length > SHARD_LIMITS.recordBytes) throw badFormat(`record ${i}: ${length} bytes`, lengthAt);
    records.push(r.bytes(length, `record ${i}`).slice());
  }

  return { recordFormat: { digestAlg, byteOrder: order === 0 ? 'le' : 'be' }, records };
}

function readQuote(r: Reader): ClosingQuote {
  const attest = readSized(r, 2, SHARD_LIMITS.attest, 'quote.attest');
  const signature = readSized(r, 2, SHARD_LIMITS.signature, 'quote.signature');
  const akPublic = readSized(r, 2, SHARD_LIMITS.akPublic, 'quote.akPublic');
  const nonce = readSized(r, 1, SHARD_LIMITS.nonce, 'quote.nonce');

  return { attest, signature, akPublic, nonce, pcrs: readPcrValues(r, 'quote.pcrs') };
}

function readSized(r: Reader, prefix: 1 | 2, max: number, what: string): Uint8Array {
  const at = r.position;
  const size = prefix === 1 ? r.u8(what) : r.u16be(what);
  if (size > max) throw badFormat(`${what}: ${size} bytes exceeds ${max}`, at);

  return r.bytes(size, what).slice();
}

function readStr8(r: Reader, what: string): string {
  const at = r.position;
  const bytes = r.bytes(r.u8(what), what);
  if (bytes.byteLength === 0) throw badFormat(`${what} is empty`, at);
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw badFormat(`${what} is not UTF-8`, at);
  }
}

function readSeq(r: Reader, what: string): number {
  const at = r.position;
  const v = r.u64be(what);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw badFormat(`${what} ${v} is out of range`, at);

  return Number(v);
}

/* pcrValues = bankCount u8 ‖ per bank: alg u16 ‖ pcrCount u8 ‖ pcrCount × (index u8 ‖ value). */
function readPcrValues(r: Reader, what: string): PcrValues {
  const countAt = r.position;
  const banks = r.u8(`${what}.bankCount`);
  if (banks > SHARD_LIMITS.banks) throw badFormat(`${what}: ${banks} banks`, countAt);

  const values: PcrValues = new Map();
  for (let b = 0; b < banks; b++) {
    const algAt = r.position;
    const alg = hashAlgFromTpm(r.u16be(`${what}.alg`));
    if (alg === undefined) throw badFormat(`${what}: unknown bank algorithm`, algAt);
    if (values.has(alg)) throw badFormat(`${what}: bank ${alg} twice`, algAt);
    values.set(alg, readBank(r, digestSize(alg), `${what}.${alg}`));
  }

  return values;
}

function readBank(r: Reader, size: number, what: string): PcrBank {
  const countAt = r.position;
  const count = r.u8(`${what}.pcrCount`);
  if (count > SHARD_LIMITS.pcrsPerBank) throw badFormat(`${what}: ${count} PCRs`, countAt);

  const bank: PcrBank = new Map();
  let last = -1;
  for (let i = 0; i < count; i++) {
    const at = r.position;
    const pcr = r.u8(`${what}.index`);
    if (pcr > SHARD_LIMITS.maxPcrIndex || pcr <= last) throw badFormat(`${what}: PCR index ${pcr}`, at);
    bank.set(pcr, r.bytes(size, `${what}[${pcr}]`).slice());
    last = pcr;
  }

  return bank;
}
