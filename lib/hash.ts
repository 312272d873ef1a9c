import { createHash } from 'node:crypto';
import { ImastreamError } from './errors.ts';

/**
 * Hash algorithms as PCR banks and digest algorithms. One table serves IMA (kernel names) and
 * TPM 2.0 (TPM_ALG_ID), so a bank is named the same way everywhere in imastream.
 */
export type HashAlg = 'sha1' | 'sha256' | 'sha384' | 'sha512' | 'sm3';

interface HashInfo {
  readonly size: number;
  readonly tpmAlgId: number;
  /** WebCrypto name, where WebCrypto has the algorithm. */
  readonly webcrypto?: 'SHA-1' | 'SHA-256' | 'SHA-384' | 'SHA-512';
  /** node:crypto name. */
  readonly node: string;
}

const HASHES: Readonly<Record<HashAlg, HashInfo>> = {
  sha1: { size: 20, tpmAlgId: 0x0004, webcrypto: 'SHA-1', node: 'sha1' },
  sha256: { size: 32, tpmAlgId: 0x000b, webcrypto: 'SHA-256', node: 'sha256' },
  sha384: { size: 48, tpmAlgId: 0x000c, webcrypto: 'SHA-384', node: 'sha384' },
  sha512: { size: 64, tpmAlgId: 0x000d, webcrypto: 'SHA-512', node: 'sha512' },
  sm3: { size: 32, tpmAlgId: 0x0012, node: 'sm3' },
};

export const HASH_ALGS: readonly HashAlg[] = ['sha1', 'sha256', 'sha384', 'sha512', 'sm3'];

/** The banks imastream replays by default. */
export const DEFAULT_BANKS: readonly HashAlg[] = ['sha1', 'sha256'];

/** Kernel spellings of algorithm names (crypto/hash_info.c), including retired ones. */
const KERNEL_ALIASES: Readonly<Record<string, HashAlg>> = {
  sha1: 'sha1',
  sha256: 'sha256',
  sha384: 'sha384',
  sha512: 'sha512',
  sm3: 'sm3',
  'sm3-256': 'sm3',
};

export function isHashAlg(name: string): name is HashAlg {
  return Object.hasOwn(HASHES, name);
}

export function digestSize(alg: HashAlg): number {
  return HASHES[alg].size;
}

export function tpmAlgId(alg: HashAlg): number {
  return HASHES[alg].tpmAlgId;
}

export function webcryptoName(alg: HashAlg): 'SHA-1' | 'SHA-256' | 'SHA-384' | 'SHA-512' {
  const name = HASHES[alg].webcrypto;
  if (name === undefined) {
    throw new ImastreamError('IMS_TPM_UNSUPPORTED_ALG', `${alg} is not available in WebCrypto`);
  }
  return name;
}

/** The bank for a TPM_ALG_ID, or undefined for one imastream does not hash. */
export function hashAlgFromTpm(id: number): HashAlg | undefined {
  for (const alg of HASH_ALGS) {
    if (HASHES[alg].tpmAlgId === id) return alg;
  }
  return undefined;
}

/** The bank for a kernel algorithm name (`sha256`, `sm3-256`, …), or undefined. */
export function hashAlgFromKernelName(name: string): HashAlg | undefined {
  return Object.hasOwn(KERNEL_ALIASES, name) ? KERNEL_ALIASES[name] : undefined;
}

/** Digest of the concatenation of `parts`. */
export function hash(alg: HashAlg, ...parts: Uint8Array[]): Uint8Array {
  const h = createHash(HASHES[alg].node);
  for (const p of parts) h.update(p);
  const out = h.digest();

  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

/** Whether this Node build can compute `alg` (SM3 depends on the OpenSSL build). */
export function canHash(alg: HashAlg): boolean {
  try {
    createHash(HASHES[alg].node);
    return true;
  } catch {
    return false;
  }
}
