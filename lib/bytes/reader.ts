import { type ErrorCode, ImastreamError } from '../errors.ts';

/**
 * A cursor over untrusted bytes. Every read checks the bytes remaining first, so a declared
 * length can never make a parser read past its input or allocate more than the input holds.
 *
 * Reads return views into the input (no copy); copy with `slice()` where the bytes must outlive it.
 */
export class Reader {
  readonly buf: Uint8Array;
  readonly view: DataView;
  private pos: number;
  private readonly end: number;
  private readonly truncatedCode: ErrorCode;

  constructor(buf: Uint8Array, options: { start?: number; end?: number; truncatedCode?: ErrorCode } = {}) {
    this.buf = buf;
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    this.pos = options.start ?? 0;
    this.end = options.end ?? buf.byteLength;
    this.truncatedCode = options.truncatedCode ?? 'IMS_BYTES_TRUNCATED';
  }

  get position(): number {
    return this.pos;
  }

  get remaining(): number {
    return this.end - this.pos;
  }

  /** Throws unless `n` more bytes are available. */
  need(n: number, what: string): void {
    if (n > this.remaining) {
      throw new ImastreamError(this.truncatedCode, `${what}: need ${n} bytes, ${this.remaining} left`, {
        details: { offset: this.pos, need: n, remaining: this.remaining, field: what },
      });
    }
  }

  u8(what = 'u8'): number {
    this.need(1, what);
    return this.view.getUint8(this.pos++);
  }

  u16(littleEndian: boolean, what = 'u16'): number {
    this.need(2, what);
    const v = this.view.getUint16(this.pos, littleEndian);
    this.pos += 2;
    return v;
  }

  u32(littleEndian: boolean, what = 'u32'): number {
    this.need(4, what);
    const v = this.view.getUint32(this.pos, littleEndian);
    this.pos += 4;
    return v;
  }

  u64(littleEndian: boolean, what = 'u64'): bigint {
    this.need(8, what);
    const v = this.view.getBigUint64(this.pos, littleEndian);
    this.pos += 8;
    return v;
  }

  /** Big-endian helpers: every TPM 2.0 structure is big-endian. */
  u16be(what = 'u16'): number {
    return this.u16(false, what);
  }

  u32be(what = 'u32'): number {
    return this.u32(false, what);
  }

  u64be(what = 'u64'): bigint {
    return this.u64(false, what);
  }

  /** `n` bytes as a view into the input. */
  bytes(n: number, what = 'bytes'): Uint8Array {
    this.need(n, what);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  /** A TPM2B: u16be size, then that many bytes; `max` bounds the size before it is read. */
  tpm2b(max: number, what = 'TPM2B'): Uint8Array {
    const start = this.pos;
    const size = this.u16be(`${what}.size`);
    if (size > max) {
      throw new ImastreamError('IMS_BYTES_LIMIT', `${what}: size ${size} exceeds ${max}`, {
        details: { offset: start, size, max, field: what },
      });
    }
    return this.bytes(size, what);
  }

  skip(n: number, what = 'skip'): void {
    this.need(n, what);
    this.pos += n;
  }
}
