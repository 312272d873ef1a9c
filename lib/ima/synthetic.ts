import { hash as oneShotHash } from 'node:crypto';
import { digestSize, type HashAlg } from '../hash.ts';
import { templateDigestOf } from './digest.ts';
import { buildImaBuf, buildImaNg, buildImaSig, buildLegacyIma, encodeBinaryRecord } from './encode.ts';
import type { ByteOrder, ImaRecord } from './record.ts';

/**
 * A deterministic synthetic IMA log for tests, the demo and the benchmark: pure, seeded, no I/O.
 * The first record is a boot_aggregate; the rest mix `ima-ng`, `ima-sig` (with signature bytes)
 * and `ima-buf` records like a real log. Nothing here resembles a real host's measurements.
 */
export type SyntheticTemplate = 'ima-ng' | 'ima-sig' | 'ima-buf' | 'ima';

export interface SyntheticOptions {
  records: number;
  /** PRNG seed; the same options always give the same bytes. Default 1. */
  seed?: number;
  /** Record indexes (0-based) logged as violations: all-zero template digest. */
  violations?: readonly number[];
  /** Templates to draw from (weights ng 6 : sig 3 : buf 1). `ima` alone gives a legacy log. */
  templates?: readonly SyntheticTemplate[];
  /** PCR indexes to draw from; default [10]. */
  pcrs?: readonly number[];
  /** Template-digest bank as in a `binary_runtime_measurements_<alg>` file; default sha1. */
  digestAlg?: HashAlg;
  byteOrder?: ByteOrder;
}

const WEIGHTS: Readonly<Record<SyntheticTemplate, number>> = {
  'ima-ng': 6,
  'ima-sig': 3,
  'ima-buf': 1,
  ima: 6,
};
const DIRS = [
  '/usr/bin/',
  '/usr/lib/x86_64-linux-gnu/',
  '/usr/sbin/',
  '/etc/',
  '/usr/lib/systemd/',
  '/opt/app/',
];
const BUF_EVENTS = ['kernel_version', 'kexec-cmdline', 'selinux-state', 'dm_table_load'];

/** mulberry32: small, fast, good enough to vary test data (not for anything secret). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

class Draw {
  private readonly next: () => number;
  constructor(seed: number) {
    this.next = prng(seed);
  }
  int(n: number): number {
    return this.next() % n;
  }
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i += 4) {
      const v = this.next();
      for (let k = 0; k < 4 && i + k < n; k++) out[i + k] = (v >>> (8 * k)) & 0xff;
    }
    return out;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
}

/** Generates `records` records and their binary encoding (offsets match the bytes). */
export function generateLog(opts: SyntheticOptions): { records: ImaRecord[]; bytes: Uint8Array } {
  const draw = new Draw(opts.seed ?? 1);
  const templates = opts.templates ?? ['ima-ng', 'ima-sig', 'ima-buf'];
  const legacy = templates.includes('ima');
  const violations = new Set(opts.violations ?? []);
  const byteOrder = opts.byteOrder ?? 'le';
  const digestAlg = opts.digestAlg ?? 'sha1';
  const bag = templates.flatMap((t) => Array<SyntheticTemplate>(WEIGHTS[t]).fill(t));

  const encoded: Uint8Array[] = [];
  const records: ImaRecord[] = [];
  let offset = 0;
  for (let i = 0; i < opts.records; i++) {
    const violation = violations.has(i);
    const templateName = legacy ? 'ima' : i === 0 ? 'ima-ng' : draw.pick(bag);
    const templateData = templateDataFor(templateName, i, violation, draw, byteOrder);
    const rec: ImaRecord = {
      pcr: opts.pcrs === undefined ? 10 : draw.pick(opts.pcrs),
      templateDigest: violation
        ? new Uint8Array(digestSize(digestAlg))
        : templateDigestOf({ templateName, templateData }, digestAlg),
      templateName,
      templateData,
      offset,
    };
    const bytes = encodeBinaryRecord(rec, byteOrder);
    encoded.push(bytes);
    records.push(rec);
    offset += bytes.byteLength;
  }

  return { records, bytes: Buffer.concat(encoded) };
}

function templateDataFor(
  name: SyntheticTemplate,
  index: number,
  violation: boolean,
  draw: Draw,
  byteOrder: ByteOrder,
): Uint8Array {
  const fileName = index === 0 ? 'boot_aggregate' : `${draw.pick(DIRS)}f${draw.int(1_000_000).toString(36)}`;
  if (name === 'ima') {
    return buildLegacyIma(
      { fileDigest: violation ? new Uint8Array(20) : draw.bytes(20), name: fileName },
      byteOrder,
    );
  }
  const digest = violation ? new Uint8Array(32) : draw.bytes(32);
  if (name === 'ima-sig') {
    return buildImaSig({ alg: 'sha256', digest, name: fileName, sig: signature(draw) }, byteOrder);
  }
  if (name === 'ima-buf') {
    const buf = Buffer.from(`synthetic-${draw.int(1e9).toString(16)}-${'x'.repeat(draw.int(200))}`);
    const bufDigest = violation ? digest : oneShotHash('sha256', buf, 'buffer');
    return buildImaBuf({ alg: 'sha256', digest: bufDigest, name: draw.pick(BUF_EVENTS), buf }, byteOrder);
  }

  return buildImaNg({ alg: 'sha256', digest, name: fileName }, byteOrder);
}

/** A security.ima DIGSIG v2 xattr shape (type 3, version 2, sha256, keyid, size) or, 1 in 4, none. */
function signature(draw: Draw): Uint8Array {
  if (draw.int(4) === 0) return new Uint8Array(0);
  const size = draw.pick([256, 72]);
  const sig = new Uint8Array(9 + size);
  sig.set([0x03, 0x02, 0x04], 0);
  sig.set(draw.bytes(4), 3);
  new DataView(sig.buffer).setUint16(7, size, false);
  sig.set(draw.bytes(size), 9);

  return sig;
}
