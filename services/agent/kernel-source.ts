import { constants, open } from 'node:fs/promises';
import { ImastreamError } from '../../lib/errors.ts';
import type { HashAlg } from '../../lib/hash.ts';
import { BinaryLogParser, encodeBinaryRecord } from '../../lib/ima/binary.ts';
import type { ByteOrder, ImaRecord, ParseProblem } from '../../lib/ima/record.ts';
import { KernelFileError } from '../kernel-emulator/errors.ts';
import type { KernelLog, ListKind } from '../kernel-emulator/kernel-log.ts';
import { SecurityfsKernelLog } from '../kernel-emulator/securityfs-log.ts';
import { SocketKernelLog } from '../kernel-emulator/socket-log.ts';

/** Most bytes one read of a plain file takes, so a huge backlog streams poll by poll. */
const FILE_READ_MAX = 4 * 1024 * 1024;

/** Where the agent reads the kernel's measurement list (`--kernel`, or `--log` for a plain file). */
export type KernelSpec =
  | { kind: 'securityfs'; dir?: string }
  | { kind: 'socket'; path: string }
  | { kind: 'file'; path: string };

/** `securityfs`, `securityfs:DIR` or `socket:PATH`; undefined when malformed. */
export function parseKernelSpec(text: string): KernelSpec | undefined {
  if (text === 'securityfs') return { kind: 'securityfs' };
  if (text.startsWith('securityfs:') && text.length > 11) return { kind: 'securityfs', dir: text.slice(11) };
  if (text.startsWith('socket:') && text.length > 7) return { kind: 'socket', path: text.slice(7) };

  return undefined;
}

/** A KernelLog the agent can also close. */
export interface AgentKernelLog extends KernelLog {
  /** Whether the kernel can cut (stage/delete); a plain file cannot. */
  readonly canCut: boolean;
  close(): Promise<void>;
}

/**
 * Opens the agent's one view of the list. The bank picks the `_<alg>` files (sha1 = the legacy
 * unsuffixed ones), matching the template-digest size the agent parses with.
 */
export async function openKernelLog(spec: KernelSpec, bank: HashAlg): Promise<AgentKernelLog> {
  if (spec.kind === 'file') return new FileKernelLog(spec.path);
  if (spec.kind === 'securityfs') {
    const log = new SecurityfsKernelLog({ dir: spec.dir, bank: bank === 'sha1' ? undefined : bank });
    return Object.assign(log, { canCut: true, close: async () => undefined });
  }
  const log = await SocketKernelLog.connect(spec.path, { bank });

  return Object.assign(log, { canCut: true });
}

/**
 * A read-only KernelLog over a plain file that only grows (the demo's and older tests' logs, or
 * a pre-7.2 kernel's list): the current list is the file, nothing is ever staged, and every cut
 * is refused with EPERM like a kernel without CONFIG_IMA_STAGING would.
 */
export class FileKernelLog implements AgentKernelLog {
  readonly canCut = false;

  constructor(readonly path: string) {}

  async read(which: ListKind, fromOffset = 0): Promise<Uint8Array> {
    if (which === 'staged') return new Uint8Array(0);
    let file: Awaited<ReturnType<typeof open>>;
    try {
      file = await open(this.path, constants.O_RDONLY);
    } catch (err) {
      throw new ImastreamError('IMS_AGENT_IO', `cannot open ${this.path}`, { cause: err, canRetry: true });
    }
    try {
      const size = (await file.stat()).size;
      const length = Math.max(0, Math.min(size - fromOffset, FILE_READ_MAX));
      const buf = Buffer.alloc(length);
      const { bytesRead } = await file.read(buf, 0, length, fromOffset);
      return new Uint8Array(buf.buffer, buf.byteOffset, bytesRead);
    } finally {
      await file.close();
    }
  }

  async stageAll(): Promise<void> {
    throw new KernelFileError('EPERM', `${this.path} is a plain file: it cannot be staged`);
  }

  async deleteStaged(): Promise<void> {
    throw new KernelFileError('EPERM', `${this.path} is a plain file: nothing to delete`);
  }

  async deleteOldest(): Promise<void> {
    throw new KernelFileError('EPERM', `${this.path} is a plain file: records cannot be freed`);
  }

  async count(): Promise<number> {
    throw new KernelFileError('EPERM', `${this.path} is a plain file: no runtime_measurements_count`);
  }

  async close(): Promise<void> {}
}

/** A record read from a list, with its raw bytes (for the archive) and where it ends in the list. */
export interface ListRecord {
  record: ImaRecord;
  raw: Uint8Array;
  /** Byte offset just after the record in its list. */
  end: number;
}

/**
 * Reads one list from a byte offset that is a record boundary and parses the whole records in
 * it. A record cut short at the end (a plain file caught mid-write) is left for the next read; a
 * framing problem is fatal: skipping bytes would let the host choose what is replayed. The bytes
 * are the host's claim, passed on as read.
 */
export async function readList(
  log: KernelLog,
  which: ListKind,
  fromOffset: number,
  digestAlg: HashAlg,
  byteOrder?: ByteOrder,
): Promise<{ records: ListRecord[]; byteOrder: ByteOrder | undefined }> {
  const bytes = await log.read(which, fromOffset);
  const parser = new BinaryLogParser({ digestAlg, byteOrder: byteOrder ?? 'auto' });
  const parsed = parser.push(bytes);
  if (parser.hasStopped) {
    const problem = parser.problems.at(-1) as ParseProblem;
    throw new ImastreamError(problem.code, `${which} list: ${problem.message}`, {
      details: { offset: fromOffset + problem.offset, list: which },
    });
  }
  const order = parser.byteOrder;
  const records = parsed.map((record): ListRecord => {
    // One encoding per record (no padding, no choices): re-encoding gives the log's own bytes.
    const raw = encodeBinaryRecord(record, order ?? 'le');
    return { record: { ...record, offset: fromOffset + record.offset }, raw, end: 0 };
  });
  let end = fromOffset;
  for (const r of records) {
    end += r.raw.byteLength;
    r.end = end;
  }

  return { records, byteOrder: order };
}
