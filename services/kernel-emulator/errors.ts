/**
 * errno-style failures of the IMA securityfs files. The emulator throws the same `code` strings
 * Node's fs layer gives for the real files (err.code === 'EBUSY'), so an agent handles both alike.
 */
export type KernelErrno = 'EBUSY' | 'ENOENT' | 'EEXIST' | 'EINVAL' | 'EPERM' | 'EBADF';

export class KernelFileError extends Error {
  readonly code: KernelErrno;

  constructor(code: KernelErrno, message: string) {
    super(`${code}: ${message}`);
    this.name = 'KernelFileError';
    this.code = code;
  }
}

/** The errno of a failed file operation, from the emulator or from node:fs; undefined otherwise. */
export function errnoOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}
