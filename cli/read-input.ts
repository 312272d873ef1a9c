import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { ImastreamError } from '../lib/errors.ts';

/** Size caps of the files the commands read whole (TPM structures are a few hundred bytes). */
export const INPUT_LIMITS = {
  tpmStructure: 1 << 20,
  log: 1 << 30,
  shard: 1 << 30,
} as const;

/**
 * Reads a whole input file, refusing anything that is not a regular file (a FIFO would block, a
 * device such as /dev/zero never ends) and anything over `maxBytes`, before reading it. The file
 * is opened non-blocking and checked on the open descriptor, so a path swapped after a check
 * cannot slip through.
 */
export async function readInputFile(path: string, what: string, maxBytes: number): Promise<Uint8Array> {
  const file = await open(path, constants.O_RDONLY | constants.O_NONBLOCK).catch((cause: unknown) => {
    throw unreadable(path, what, cause);
  });
  try {
    const st = await file.stat();
    if (!st.isFile()) {
      throw new ImastreamError('IMS_IO_READ_FAILED', `${what} ${path}: not a regular file`, {
        details: { path },
      });
    }
    if (st.size > maxBytes) throw tooLarge(path, what, st.size, maxBytes);

    // Read at most one byte past the cap: a file that grows while we read is still bounded.
    const buf = Buffer.alloc(Math.min(st.size, maxBytes) + 1);
    let filled = 0;
    for (;;) {
      const { bytesRead } = await file.read(buf, filled, buf.length - filled, null);
      if (bytesRead === 0) break;
      filled += bytesRead;
      if (filled === buf.length) {
        if (filled > maxBytes) throw tooLarge(path, what, filled, maxBytes);
        break;
      }
    }

    return new Uint8Array(buf.buffer, buf.byteOffset, filled);
  } finally {
    await file.close();
  }
}

function unreadable(path: string, what: string, cause: unknown): ImastreamError {
  const reason = cause instanceof Error && 'code' in cause ? String(cause.code) : String(cause);
  return new ImastreamError('IMS_IO_READ_FAILED', `cannot read ${what} ${path}: ${reason}`, {
    cause,
    details: { path },
  });
}

function tooLarge(path: string, what: string, size: number, max: number): ImastreamError {
  return new ImastreamError(
    'IMS_IO_TOO_LARGE',
    `${what} ${path}: ${size} bytes exceeds the limit of ${max}`,
    {
      details: { path, size, max },
    },
  );
}
