import { type ByteOrder, type ImaRecord, LEGACY_DIGEST_SIZE, LEGACY_IMA, LEGACY_NAME_MAX } from './record.ts';

/**
 * Writers for the binary list and for template data, used by generators, the agent's tests and the
 * benchmark. They write what a kernel would, so a record built here parses back byte for byte.
 */

/** One record in the binary list layout (DOMAIN.md §1.2); legacy `ima` has no data_len. */
export function encodeBinaryRecord(rec: Omit<ImaRecord, 'offset'>, byteOrder: ByteOrder = 'le'): Uint8Array {
  const le = byteOrder === 'le';
  const name = Buffer.from(rec.templateName, 'latin1');
  const legacy = rec.templateName === LEGACY_IMA;
  const size =
    4 + rec.templateDigest.byteLength + 4 + name.byteLength + (legacy ? 0 : 4) + rec.templateData.byteLength;
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  view.setUint32(0, rec.pcr, le);
  out.set(rec.templateDigest, 4);
  let at = 4 + rec.templateDigest.byteLength;
  view.setUint32(at, name.byteLength, le);
  out.set(name, at + 4);
  at += 4 + name.byteLength;
  if (!legacy) {
    view.setUint32(at, rec.templateData.byteLength, le);
    at += 4;
  }
  out.set(rec.templateData, at);

  return out;
}

/** Template data from field values: each field is `u32 len || bytes`. */
export function buildTemplateData(fields: readonly Uint8Array[], byteOrder: ByteOrder = 'le'): Uint8Array {
  const total = fields.reduce((n, f) => n + 4 + f.byteLength, 0);
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  let at = 0;
  for (const f of fields) {
    view.setUint32(at, f.byteLength, byteOrder === 'le');
    out.set(f, at + 4);
    at += 4 + f.byteLength;
  }

  return out;
}

/** `d-ng` field: "<alg>:" NUL digest (also `d-modsig`). */
export function digestNgField(alg: string, digest: Uint8Array): Uint8Array {
  const prefix = Buffer.from(`${alg}:\0`, 'latin1');
  const out = new Uint8Array(prefix.byteLength + digest.byteLength);
  out.set(prefix, 0);
  out.set(digest, prefix.byteLength);

  return out;
}

/** `n-ng` field: name bytes and a NUL. */
export function nameNgField(name: string | Uint8Array): Uint8Array {
  const bytes = typeof name === 'string' ? Buffer.from(name, 'utf8') : name;
  const out = new Uint8Array(bytes.byteLength + 1);
  out.set(bytes, 0);

  return out;
}

export interface FileMeasurement {
  /** Kernel algorithm name of the file digest, such as `sha256`. */
  alg: string;
  digest: Uint8Array;
  name: string | Uint8Array;
}

export function buildImaNg(m: FileMeasurement, byteOrder: ByteOrder = 'le'): Uint8Array {
  return buildTemplateData([digestNgField(m.alg, m.digest), nameNgField(m.name)], byteOrder);
}

/** `ima-sig`: the `sig` field is the whole security.ima xattr, or empty. */
export function buildImaSig(
  m: FileMeasurement & { sig: Uint8Array },
  byteOrder: ByteOrder = 'le',
): Uint8Array {
  return buildTemplateData([digestNgField(m.alg, m.digest), nameNgField(m.name), m.sig], byteOrder);
}

/** `ima-buf`: the digest is of the buffer; the name is the event name (`kernel_version`, …). */
export function buildImaBuf(
  m: FileMeasurement & { buf: Uint8Array },
  byteOrder: ByteOrder = 'le',
): Uint8Array {
  return buildTemplateData([digestNgField(m.alg, m.digest), nameNgField(m.name), m.buf], byteOrder);
}

/** Legacy `ima` data as logged: filedigest[20] || u32 name_len || name (no NUL, ≤ 255 bytes). */
export function buildLegacyIma(
  m: { fileDigest: Uint8Array; name: string | Uint8Array },
  byteOrder: ByteOrder = 'le',
): Uint8Array {
  const name = typeof m.name === 'string' ? Buffer.from(m.name, 'utf8') : m.name;
  if (m.fileDigest.byteLength !== LEGACY_DIGEST_SIZE || name.byteLength > LEGACY_NAME_MAX) {
    throw new RangeError('legacy ima needs a 20-byte digest and a name of at most 255 bytes');
  }
  const out = new Uint8Array(LEGACY_DIGEST_SIZE + 4 + name.byteLength);
  out.set(m.fileDigest, 0);
  new DataView(out.buffer).setUint32(LEGACY_DIGEST_SIZE, name.byteLength, byteOrder === 'le');
  out.set(name, LEGACY_DIGEST_SIZE + 4);

  return out;
}
