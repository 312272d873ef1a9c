import { constants, type FileHandle, open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { HashAlg } from '../../lib/hash.ts';
import type { KernelLog, ListKind } from './kernel-log.ts';

/** Where securityfs puts IMA (the same files are under /sys/kernel/security/integrity/ima). */
export const SECURITYFS_IMA_DIR = '/sys/kernel/security/ima';

const CHUNK = 1 << 20;

/**
 * {@link KernelLog} over the real securityfs files. Reads open O_RDONLY and read to EOF from the
 * offset (the kernel's seq_file supports seeking); writes open O_WRONLY (never O_CREAT/O_TRUNC,
 * which securityfs has no use for) and write one command, as `echo X > file` would: the kernel
 * reports a refused command as the write's errno (EBUSY at open, ENOENT, EPERM, EINVAL).
 * Writing needs CAP_SYS_ADMIN and a 7.2 kernel with CONFIG_IMA_STAGING=y.
 */
export class SecurityfsKernelLog implements KernelLog {
  private readonly dir: string;
  private readonly base: string;

  constructor(opts: { dir?: string; bank?: HashAlg } = {}) {
    this.dir = opts.dir ?? SECURITYFS_IMA_DIR;
    // The unsuffixed names are the SHA-1 lists (symlinks to _sha1 since 6.10).
    this.base =
      opts.bank === undefined ? 'binary_runtime_measurements' : `binary_runtime_measurements_${opts.bank}`;
  }

  private path(which: ListKind): string {
    return join(this.dir, which === 'staged' ? `${this.base}_staged` : this.base);
  }

  async read(which: ListKind, fromOffset = 0): Promise<Uint8Array> {
    const file = await open(this.path(which), constants.O_RDONLY);
    try {
      return await readToEnd(file, fromOffset);
    } finally {
      await file.close();
    }
  }

  stageAll(): Promise<void> {
    return this.command(this.path('staged'), 'A\n');
  }

  deleteStaged(): Promise<void> {
    return this.command(this.path('staged'), 'D\n');
  }

  async deleteOldest(n: number): Promise<void> {
    if (!Number.isSafeInteger(n) || n < 1) throw new RangeError(`deleteOldest: ${n} is not a positive count`);
    return this.command(this.path('current'), `${n}\n`);
  }

  async count(): Promise<number> {
    const text = (await readFile(join(this.dir, 'runtime_measurements_count'), 'latin1')).trim();
    if (!/^[0-9]{1,15}$/.test(text))
      throw new RangeError(`runtime_measurements_count: "${text.slice(0, 20)}"`);

    return Number(text);
  }

  /** One write of the whole command, as the kernel parses one write() per command. */
  private async command(path: string, text: string): Promise<void> {
    const file = await open(path, constants.O_WRONLY);
    try {
      await file.write(Buffer.from(text, 'latin1'), 0, text.length, null);
    } finally {
      await file.close();
    }
  }
}

async function readToEnd(file: FileHandle, from: number): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  let position = from;
  for (;;) {
    const buf = Buffer.allocUnsafe(CHUNK);
    const { bytesRead } = await file.read(buf, 0, CHUNK, position);
    if (bytesRead === 0) break;
    chunks.push(buf.subarray(0, bytesRead));
    position += bytesRead;
  }

  return new Uint8Array(Buffer.concat(chunks));
}
