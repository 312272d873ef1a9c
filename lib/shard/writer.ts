/**
 * A growable big-endian byte writer for the shard format. Encoding is the trusted side (our own
 * agent builds shards), so it checks only what would make the output undecodable.
 */
export class Writer {
  private buf = new Uint8Array(4096);
  private view = new DataView(this.buf.buffer);
  private pos = 0;

  get length(): number {
    return this.pos;
  }

  u8(v: number): this {
    this.reserve(1).view.setUint8(this.pos++, v);
    return this;
  }

  u16(v: number): this {
    this.reserve(2).view.setUint16(this.pos, v);
    this.pos += 2;
    return this;
  }

  u32(v: number): this {
    this.reserve(4).view.setUint32(this.pos, v);
    this.pos += 4;
    return this;
  }

  u64(v: number): this {
    this.reserve(8).view.setBigUint64(this.pos, BigInt(v));
    this.pos += 8;
    return this;
  }

  bytes(b: Uint8Array): this {
    this.reserve(b.byteLength).buf.set(b, this.pos);
    this.pos += b.byteLength;
    return this;
  }

  /** Overwrites a u32 written earlier (a length known only after its body). */
  patchU32(at: number, v: number): void {
    this.view.setUint32(at, v);
  }

  /** A copy of the bytes written so far. */
  finish(): Uint8Array {
    return this.buf.slice(0, this.pos);
  }

  private reserve(n: number): this {
    if (this.pos + n <= this.buf.byteLength) return this;
    let size = this.buf.byteLength * 2;
    while (size < this.pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
    this.view = new DataView(next.buffer);
    return this;
  }
}
