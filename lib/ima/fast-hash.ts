/**
 * SHA-1 and SHA-256 in plain TypeScript (FIPS 180-4), for the replay's hot path only.
 *
 * Why: a PCR extend hashes 40 or 64 bytes, and for inputs that small the cost of node:crypto is
 * the call into C++ and the Buffer it returns, not the hashing (about 2 µs a call against well
 * under 1 µs here). Every function writes into a caller's array and allocates nothing. Tests
 * compare both against node:crypto on random inputs. Nothing here is secret, so timing does not
 * matter.
 */

/** First 32 bits of the fractional part of x. */
function frac32(x: number): number {
  return Math.floor((x - Math.floor(x)) * 2 ** 32) >>> 0;
}

function primes(n: number): number[] {
  const out: number[] = [];
  for (let c = 2; out.length < n; c++) if (out.every((p) => c % p !== 0)) out.push(c);
  return out;
}

/** SHA-256 constants, derived as the standard defines them (cube and square roots of primes). */
const K256 = Int32Array.from(primes(64), (p) => frac32(Math.cbrt(p)));
const H256 = Int32Array.from(primes(8), (p) => frac32(Math.sqrt(p)));

const W = new Int32Array(80);
const S = new Int32Array(8);
/** Room for the last one or two padded blocks. */
const TAIL = new Uint8Array(128);

function compress256(s: Int32Array, m: Uint8Array, at: number): void {
  for (let i = 0; i < 16; i++, at += 4)
    W[i] = (m[at]! << 24) | (m[at + 1]! << 16) | (m[at + 2]! << 8) | m[at + 3]!;
  expand256(W);
  rounds256(s, W);
}

function expand256(W: Int32Array): void {
  for (let i = 16; i < 64; i++) {
    const x = W[i - 15]!;
    const y = W[i - 2]!;
    const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
    const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
    W[i] = (W[i - 16]! + s0 + W[i - 7]! + s1) | 0;
  }
}

function rounds256(s: Int32Array, W: Int32Array): void {
  let a = s[0]!;
  let b = s[1]!;
  let c = s[2]!;
  let d = s[3]!;
  let e = s[4]!;
  let f = s[5]!;
  let g = s[6]!;
  let h = s[7]!;
  for (let i = 0; i < 64; i++) {
    const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
    const t1 = (h + S1 + ((e & f) ^ (~e & g)) + K256[i]! + W[i]!) | 0;
    const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
    const t2 = (S0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
    h = g;
    g = f;
    f = e;
    e = (d + t1) | 0;
    d = c;
    c = b;
    b = a;
    a = (t1 + t2) | 0;
  }
  s[0] = (s[0]! + a) | 0;
  s[1] = (s[1]! + b) | 0;
  s[2] = (s[2]! + c) | 0;
  s[3] = (s[3]! + d) | 0;
  s[4] = (s[4]! + e) | 0;
  s[5] = (s[5]! + f) | 0;
  s[6] = (s[6]! + g) | 0;
  s[7] = (s[7]! + h) | 0;
}

function compress1(s: Int32Array, m: Uint8Array, at: number): void {
  for (let i = 0; i < 16; i++, at += 4)
    W[i] = (m[at]! << 24) | (m[at + 1]! << 16) | (m[at + 2]! << 8) | m[at + 3]!;
  for (let i = 16; i < 80; i++) {
    const x = W[i - 3]! ^ W[i - 8]! ^ W[i - 14]! ^ W[i - 16]!;
    W[i] = (x << 1) | (x >>> 31);
  }
  let a = s[0]!;
  let b = s[1]!;
  let c = s[2]!;
  let d = s[3]!;
  let e = s[4]!;
  // Four loops, one per round function, so no round branches on its index.
  for (let i = 0; i < 20; i++) {
    const t = (((a << 5) | (a >>> 27)) + ((b & c) | (~b & d)) + e + 0x5a827999 + W[i]!) | 0;
    e = d;
    d = c;
    c = (b << 30) | (b >>> 2);
    b = a;
    a = t;
  }
  for (let i = 20; i < 40; i++) {
    const t = (((a << 5) | (a >>> 27)) + (b ^ c ^ d) + e + 0x6ed9eba1 + W[i]!) | 0;
    e = d;
    d = c;
    c = (b << 30) | (b >>> 2);
    b = a;
    a = t;
  }
  for (let i = 40; i < 60; i++) {
    const t = (((a << 5) | (a >>> 27)) + ((b & c) | (b & d) | (c & d)) + e + 0x8f1bbcdc + W[i]!) | 0;
    e = d;
    d = c;
    c = (b << 30) | (b >>> 2);
    b = a;
    a = t;
  }
  for (let i = 60; i < 80; i++) {
    const t = (((a << 5) | (a >>> 27)) + (b ^ c ^ d) + e + 0xca62c1d6 + W[i]!) | 0;
    e = d;
    d = c;
    c = (b << 30) | (b >>> 2);
    b = a;
    a = t;
  }
  s[0] = (s[0]! + a) | 0;
  s[1] = (s[1]! + b) | 0;
  s[2] = (s[2]! + c) | 0;
  s[3] = (s[3]! + d) | 0;
  s[4] = (s[4]! + e) | 0;
}

const H1 = new Int32Array([0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0]);

/** Merkle–Damgård over `input` with 64-byte blocks and a 64-bit big-endian bit length. */
function digest(
  compress: (s: Int32Array, m: Uint8Array, at: number) => void,
  init: Int32Array,
  words: number,
  input: Uint8Array,
  out: Uint8Array,
  outAt: number,
): void {
  S.set(init);
  const n = input.byteLength;
  const full = n - (n % 64);
  for (let at = 0; at < full; at += 64) compress(S, input, at);
  const rest = n - full;
  TAIL.fill(0);
  TAIL.set(input.subarray(full), 0);
  TAIL[rest] = 0x80;
  const end = rest < 56 ? 64 : 128;
  const bitsHigh = Math.floor(n / 0x20000000);
  const bitsLow = (n << 3) >>> 0;
  for (let i = 0; i < 4; i++) {
    TAIL[end - 8 + i] = (bitsHigh >>> (24 - 8 * i)) & 0xff;
    TAIL[end - 4 + i] = (bitsLow >>> (24 - 8 * i)) & 0xff;
  }
  compress(S, TAIL, 0);
  if (end === 128) compress(S, TAIL, 64);
  for (let i = 0; i < words; i++, outAt += 4) {
    const v = S[i]!;
    out[outAt] = v >>> 24;
    out[outAt + 1] = v >>> 16;
    out[outAt + 2] = v >>> 8;
    out[outAt + 3] = v;
  }
}

/** SHA-256 of `input` written to out[outAt .. outAt+32). `out` may be `input` (read first). */
export function sha256Into(input: Uint8Array, out: Uint8Array, outAt = 0): void {
  digest(compress256, H256, 8, input, out, outAt);
}

/** SHA-1 of `input` written to out[outAt .. outAt+20). `out` may be `input` (read first). */
export function sha1Into(input: Uint8Array, out: Uint8Array, outAt = 0): void {
  digest(compress1, H1, 5, input, out, outAt);
}

/**
 * The message schedule of the padding block that follows exactly 64 bytes of input (0x80, zeros,
 * bit length 512). A SHA-256 PCR extend hashes exactly 64 bytes, so its second block is always
 * this one and its schedule is computed once.
 */
const PAD64_SCHEDULE = (() => {
  const w = new Int32Array(64);
  w[0] = 0x80000000 | 0;
  w[15] = 512;
  expand256(w);
  return w;
})();

/**
 * SHA-256 over exactly 64 bytes at `buf[0..64)` (PCR value || digest), result written over
 * `buf[0..32)`: the PCR extend of the SHA-256 bank with no allocation.
 */
export function sha256Extend64(buf: Uint8Array): void {
  S.set(H256);
  compress256(S, buf, 0);
  rounds256(S, PAD64_SCHEDULE);
  for (let i = 0, at = 0; i < 8; i++, at += 4) {
    const v = S[i]!;
    buf[at] = v >>> 24;
    buf[at + 1] = v >>> 16;
    buf[at + 2] = v >>> 8;
    buf[at + 3] = v;
  }
}
