import { ImastreamError } from '../errors.ts';

const HEX = /^(?:[0-9a-fA-F]{2})*$/;

/** Lowercase hex of `bytes`. */
export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

/**
 * Bytes of a hex string. Strict: an odd length or a non-hex character is an error, never a
 * silently shortened value (Buffer.from(s, 'hex') stops at the first bad character).
 */
export function fromHex(hex: string, what = 'hex'): Uint8Array {
  const s = hex.startsWith('0x') || hex.startsWith('0X') ? hex.slice(2) : hex;
  if (!HEX.test(s)) {
    throw new ImastreamError('IMS_BYTES_LIMIT', `${what}: not an even-length hex string`, {
      details: { field: what, length: s.length },
    });
  }
  const b = Buffer.from(s, 'hex');

  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

/** Byte-wise equality. Not constant-time: use only on public values such as PCRs and digests. */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  // The length is read once: a byteLength read per iteration costs ~20 ns a call on Node 20.
  const n = a.length;
  if (n !== b.length) return false;
  for (let i = 0; i < n; i++) {
    if (a[i] !== b[i]) return false;
  }
  return true;
}

export function isAllZero(a: Uint8Array): boolean {
  const n = a.length;
  for (let i = 0; i < n; i++) {
    if (a[i] !== 0) return false;
  }
  return true;
}
