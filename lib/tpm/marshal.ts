import { Reader } from '../bytes/reader.ts';
import { type ErrorCode, ImastreamError } from '../errors.ts';

/**
 * Shared plumbing for the TPM 2.0 parsers: a big-endian reader that reports truncation as
 * IMS_TPM_TRUNCATED, TPM2B reads whose size limit maps to the caller's code, and a small writer.
 * TPM structures are big-endian throughout (TCG Part 1, 18.3 "Canonical Data Ordering").
 */

/** A reader over TPM bytes; running out of bytes is IMS_TPM_TRUNCATED. */
export function tpmReader(bytes: Uint8Array): Reader {
  return new Reader(bytes, { truncatedCode: 'IMS_TPM_TRUNCATED' });
}

/**
 * A TPM2B: `u16be size ‖ size bytes`. The size is checked against `max` (the structure's own
 * buffer size) before the bytes are read, and against the remaining input by the Reader.
 */
export function readTpm2b(r: Reader, max: number, what: string, code: ErrorCode): Uint8Array {
  const offset = r.position;
  const size = r.u16be(`${what}.size`);
  if (size > max) {
    throw new ImastreamError(code, `${what}: size ${size} exceeds ${max}`, {
      details: { offset, size, max, field: what },
    });
  }

  return r.bytes(size, what);
}

/** Throws IMS_TPM_TRAILING_BYTES unless the reader is at its end. */
export function expectEnd(r: Reader, what: string): void {
  if (r.remaining !== 0) {
    throw new ImastreamError('IMS_TPM_TRAILING_BYTES', `${what}: ${r.remaining} bytes after the structure`, {
      details: { offset: r.position, remaining: r.remaining, field: what },
    });
  }
}

/** Big-endian helpers for the few structures we encode. */
export function u16be(v: number): Uint8Array {
  return Uint8Array.of((v >>> 8) & 0xff, v & 0xff);
}

export function u32be(v: number): Uint8Array {
  return Uint8Array.of((v >>> 24) & 0xff, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff);
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }

  return out;
}
