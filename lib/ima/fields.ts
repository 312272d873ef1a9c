import { toHex } from '../bytes/hex.ts';

/**
 * Template fields: what each field id's bytes mean, how the kernel prints them in the ASCII list
 * and how to rebuild the bytes from that text. Decoding is for display and policy only; PCR
 * replay and digest checks always hash the raw template data.
 *
 * Layouts from the kernel's security/integrity/ima/ima_template_lib.c (DOMAIN.md §1.6).
 */
export const FIELD_IDS = [
  'd',
  'n',
  'd-ng',
  'n-ng',
  'sig',
  'buf',
  'd-modsig',
  'modsig',
  'evmsig',
  'xattrnames',
  'xattrlengths',
  'xattrvalues',
  'iuid',
  'igid',
  'imode',
  'd-ngv2',
] as const;

export type FieldId = (typeof FIELD_IDS)[number];

const FIELD_SET: ReadonlySet<string> = new Set(FIELD_IDS);

export function isFieldId(s: string): s is FieldId {
  return FIELD_SET.has(s);
}

/** Fields printed as lowercase hex in the ASCII list. */
const HEX_FIELDS: ReadonlySet<FieldId> = new Set([
  'd',
  'sig',
  'buf',
  'modsig',
  'evmsig',
  'xattrlengths',
  'xattrvalues',
]);

/** Fields whose data is `<prefix>:` NUL digest. */
const PREFIXED_DIGESTS: ReadonlySet<FieldId> = new Set(['d-ng', 'd-modsig', 'd-ngv2']);

/** Kernel hash names (crypto/hash_info.c) with their digest sizes; md4/rmd/wp etc. are legacy. */
const KERNEL_HASH_SIZES: Readonly<Record<string, number>> = {
  md4: 16,
  md5: 16,
  sha1: 20,
  rmd160: 20,
  sha256: 32,
  sha384: 48,
  sha512: 64,
  sha224: 28,
  sm3: 32,
  'sm3-256': 32,
  streebog256: 32,
  streebog512: 64,
  'sha3-256': 32,
  'sha3-384': 48,
  'sha3-512': 64,
};

/** A prefixed digest field (`d-ng`, `d-modsig`, `d-ngv2`) split into its parts. */
export interface PrefixedDigest {
  /** `ima` or `verity` for `d-ngv2`; undefined otherwise. */
  type?: string;
  /** Kernel algorithm name as logged (`sha256`, `sm3`, …). */
  alg: string;
  digest: Uint8Array;
}

/**
 * `d-ng` / `d-modsig`: "<alg>:" NUL digest. `d-ngv2`: "<ima|verity>:<alg>:" NUL digest.
 * Returns undefined when there is no ":\0" separator.
 */
export function decodePrefixedDigest(data: Uint8Array): PrefixedDigest | undefined {
  const nul = data.indexOf(0);
  if (nul < 1 || data[nul - 1] !== 0x3a) return undefined;
  const prefix = latin1(data.subarray(0, nul - 1));
  const digest = data.subarray(nul + 1);
  const colon = prefix.indexOf(':');
  if (colon < 0) return { alg: prefix, digest };

  return { type: prefix.slice(0, colon), alg: prefix.slice(colon + 1), digest };
}

/** Sizes by prefix as logged (`sha256:`, `ima:sha256:`), filled as prefixes are met. */
const prefixSizes = new Map<string, number | undefined>();

/** The last prefix met: nearly every record of a log repeats it, so skip the string and lookup. */
let lastPrefix = { bytes: new Uint8Array(0), prefix: '', size: undefined as number | undefined };

function prefixInfo(data: Uint8Array, len: number): { prefix: string; size: number | undefined } {
  const last = lastPrefix.bytes;
  let same = last.length === len;
  for (let i = 0; same && i < len; i++) same = data[i] === last[i];
  if (same) return lastPrefix;
  const prefix = String.fromCharCode(...data.subarray(0, len));
  let size = prefixSizes.get(prefix);
  if (size === undefined && !prefixSizes.has(prefix)) {
    const alg = prefix.slice(prefix.indexOf(':') + 1);
    size = Object.hasOwn(KERNEL_HASH_SIZES, alg) ? KERNEL_HASH_SIZES[alg] : undefined;
    if (prefixSizes.size < 256) prefixSizes.set(prefix, size);
  }
  lastPrefix = { bytes: data.slice(0, len), prefix, size };

  return lastPrefix;
}

/** Why a prefixed digest is odd (unknown algorithm, wrong size), or undefined when it is fine. */
export function prefixedDigestProblem(data: Uint8Array): string | undefined {
  if (data.length === 0) return undefined;
  const nul = data.indexOf(0);
  if (nul < 1 || nul > 40 || data[nul - 1] !== 0x3a) return 'digest field lacks the "<alg>:" NUL prefix';
  const { prefix, size } = prefixInfo(data, nul - 1);
  const digestBytes = data.length - nul - 1;
  if (size === undefined) return `unknown digest algorithm '${prefix}'`;
  if (size !== digestBytes) return `${prefix} digest of ${digestBytes} bytes`;

  return undefined;
}

/** Header of an IMA/EVM signature xattr (`sig` field): type 0x03/0x06, version 2/3. */
export interface SignatureHeader {
  type: number;
  version: number;
  /** Kernel hash_algo enum value (4 = sha256). */
  hashAlgo: number;
  keyId: number;
  sigSize: number;
}

/** The `sig` header, or undefined if the field is empty or too short to hold one. */
export function decodeSignatureHeader(data: Uint8Array): SignatureHeader | undefined {
  if (data.byteLength < 9) return undefined;
  const v = new DataView(data.buffer, data.byteOffset, data.byteLength);

  return {
    type: v.getUint8(0),
    version: v.getUint8(1),
    hashAlgo: v.getUint8(2),
    keyId: v.getUint32(3, false),
    sigSize: v.getUint16(7, false),
  };
}

/** A name field without its trailing NUL, as raw bytes (names need not be UTF-8). */
export function nameBytes(data: Uint8Array): Uint8Array {
  return data.byteLength > 0 && data[data.byteLength - 1] === 0 ? data.subarray(0, -1) : data;
}

/**
 * The kernel's ASCII rendering of one field (ima_show_template_* in ima_template_lib.c).
 * Names are decoded as UTF-8 for display only.
 */
export function fieldToAscii(id: FieldId, data: Uint8Array, littleEndian: boolean): string {
  if (data.byteLength === 0) return '';
  if (HEX_FIELDS.has(id)) return toHex(data);
  if (PREFIXED_DIGESTS.has(id)) {
    const d = decodePrefixedDigest(data);
    return d === undefined
      ? toHex(data)
      : `${d.type === undefined ? '' : `${d.type}:`}${d.alg}:${toHex(d.digest)}`;
  }
  if (id === 'n' || id === 'n-ng') return Buffer.from(nameBytes(data)).toString('utf8');
  if (id === 'xattrnames') return Buffer.from(data).toString('utf8');

  return numberField(id, data, littleEndian)?.toString() ?? toHex(data);
}

function numberField(id: FieldId, data: Uint8Array, littleEndian: boolean): number | undefined {
  const v = new DataView(data.buffer, data.byteOffset, data.byteLength);
  if ((id === 'iuid' || id === 'igid') && data.byteLength === 4) return v.getUint32(0, littleEndian);
  if (id === 'imode' && data.byteLength === 2) return v.getUint16(0, littleEndian);

  return undefined;
}

/**
 * Rebuilds a field's bytes from its ASCII token (raw bytes of the line, so names stay byte-exact).
 * Returns an error message instead when the text cannot be the kernel's rendering. Integers are
 * rebuilt little-endian, as on every LE host and under `ima_canonical_fmt`.
 */
export function fieldFromAscii(id: FieldId, text: Uint8Array): Uint8Array | string {
  if (text.byteLength === 0) return new Uint8Array(0);
  if (HEX_FIELDS.has(id)) return hexToken(text, id);
  if (PREFIXED_DIGESTS.has(id)) return prefixedFromAscii(text);
  if (id === 'n-ng') return withNul(text);
  if (id === 'n') return withNul(text);
  if (id === 'xattrnames') return text.slice();

  return integerFromAscii(id, text);
}

function prefixedFromAscii(text: Uint8Array): Uint8Array | string {
  const colon = text.lastIndexOf(0x3a);
  if (colon < 1) return 'digest field lacks "<alg>:"';
  const digest = hexToken(text.subarray(colon + 1), 'digest');
  if (typeof digest === 'string') return digest;
  const out = new Uint8Array(colon + 2 + digest.byteLength);
  out.set(text.subarray(0, colon + 1), 0);
  out.set(digest, colon + 2);

  return out;
}

function integerFromAscii(id: FieldId, text: Uint8Array): Uint8Array | string {
  const s = latin1(text);
  const size = id === 'imode' ? 2 : 4;
  if (!/^\d{1,10}$/.test(s) || Number(s) >= 2 ** (8 * size)) return `${id}: not a ${8 * size}-bit number`;
  const out = new Uint8Array(size);
  const v = new DataView(out.buffer);
  if (size === 2) v.setUint16(0, Number(s), true);
  else v.setUint32(0, Number(s), true);

  return out;
}

function withNul(text: Uint8Array): Uint8Array {
  const out = new Uint8Array(text.byteLength + 1);
  out.set(text, 0);

  return out;
}

const HEX_RE = /^(?:[0-9a-f]{2})*$/;

/** Strict lowercase-or-uppercase hex token to bytes, or an error message. */
export function hexToken(text: Uint8Array, what: string): Uint8Array | string {
  const s = latin1(text).toLowerCase();
  if (!HEX_RE.test(s)) return `${what}: not an even-length hex string`;
  const b = Buffer.from(s, 'hex');

  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

function latin1(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('latin1');
}
