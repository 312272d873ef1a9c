import { digestSize, type HashAlg } from '../../lib/hash.ts';
import { templateDigestOf } from '../../lib/ima/digest.ts';
import { encodeBinaryRecord } from '../../lib/ima/encode.ts';
import type { ImaRecord } from '../../lib/ima/record.ts';
import { KernelFileError } from './errors.ts';

/**
 * A pure model (no I/O) of the Linux 7.2 IMA staging interface, CONFIG_IMA_STAGING=y
 * (DOMAIN §3.4; kernel commits e9b491e27bf6, fcb0318a2969, docs IMA-export-delete.rst), for one
 * emulated host. It keeps the current and the staged measurement lists and enforces the files'
 * rules; rendering gives the bytes of `binary_runtime_measurements[_<alg>][_staged]`.
 *
 * Choices where the documented semantics are silent (also in docs/shards.md):
 * - `A` while a staged list exists fails with EEXIST: staging again would either overwrite
 *   records userspace has not saved or merge two groups; the agent must `D` first.
 * - `D` with nothing staged fails with ENOENT.
 * - `N` cuts the oldest N records of the current list only; staged records are not counted.
 * - stage/delete after measurements are suspended for kexec, and `N` under ima_flush_htable,
 *   fail with EPERM; a measurement while suspended is refused too (the kernel would not log it).
 * - Only the binary files are modelled (the ASCII twins follow the same lists).
 */

/** What the emulated kernel measures; the template digest of each bank is computed from the data. */
export interface Measurement {
  pcr: number;
  templateName: string;
  templateData: Uint8Array;
  /** A ToMToU/open-writers violation: logged with an all-zero template digest. */
  violation?: boolean;
}

/** The measurement files, by role; the bank picks `_<alg>` (sha1 = the legacy unsuffixed file). */
export type ListKind = 'current' | 'staged';

export type OpenMode = 'r' | 'w';

interface Handle {
  owner: string;
  list: ListKind;
  mode: OpenMode;
}

export interface KernelOptions {
  /** Banks with a `binary_runtime_measurements_<alg>` file; sha1 always exists. */
  banks?: readonly HashAlg[];
  /** The `ima_flush_htable` boot parameter: refuses the `N` flavour. */
  flushHtable?: boolean;
}

/** Largest N the kernel accepts: ULONG_MAX − 1 on a 64-bit kernel. */
const MAX_DELETE = 2n ** 64n - 2n;

export class EmulatedKernel {
  readonly banks: readonly HashAlg[];
  readonly flushHtable: boolean;
  private current: Measurement[] = [];
  private staged: Measurement[] = [];
  private readonly handles = new Map<number, Handle>();
  private nextHandle = 1;
  private suspended = false;
  /** Records freed since boot (cold boot; kexec keeps counting), for tests: absolute seq = freed + index. */
  private freed = 0;
  /** Rendered records, per measurement and bank (measurements never change once logged). */
  private readonly rendered = new WeakMap<Measurement, Map<HashAlg, Uint8Array>>();

  constructor(opts: KernelOptions = {}) {
    this.banks = [...new Set<HashAlg>(['sha1', ...(opts.banks ?? [])])];
    this.flushHtable = opts.flushHtable ?? false;
  }

  /** Appends a measurement to the current list (the kernel's ima_add_template_entry). */
  measure(m: Measurement): void {
    if (this.suspended) throw new KernelFileError('EPERM', 'measurements are suspended for kexec');
    this.current.push({ ...m, templateData: m.templateData.slice() });
  }

  /** runtime_measurements_count: records in the current list only. */
  count(): number {
    return this.current.length;
  }

  stagedCount(): number {
    return this.staged.length;
  }

  /** Records freed since the cold boot: the absolute seq of the first current record if nothing is staged. */
  freedCount(): number {
    return this.freed;
  }

  isSuspended(): boolean {
    return this.suspended;
  }

  /** Many readers, or one writer (which may hold several interfaces); anything else is EBUSY. */
  open(owner: string, list: ListKind, mode: OpenMode): number {
    for (const h of this.handles.values()) {
      const conflict =
        mode === 'w' ? h.owner !== owner || h.mode === 'r' : h.mode === 'w' && h.owner !== owner;
      if (conflict)
        throw new KernelFileError(
          'EBUSY',
          `${list} list: open for ${h.mode === 'w' ? 'writing' : 'reading'}`,
        );
    }
    const fd = this.nextHandle++;
    this.handles.set(fd, { owner, list, mode });

    return fd;
  }

  close(fd: number): void {
    if (!this.handles.delete(fd)) throw new KernelFileError('EBADF', `handle ${fd}`);
  }

  /** The whole file behind a handle, rendered for `bank`. */
  read(fd: number, bank: HashAlg = 'sha1'): Uint8Array {
    const h = this.handle(fd);
    if (h.mode !== 'r') throw new KernelFileError('EBADF', 'handle not open for reading');

    return this.render(h.list, bank);
  }

  /** A write to the original file (`N`) or to its `_staged` twin (`A`, `D`); `echo` adds a newline. */
  write(fd: number, data: string): void {
    const h = this.handle(fd);
    if (h.mode !== 'w') throw new KernelFileError('EBADF', 'handle not open for writing');
    const text = data.endsWith('\n') ? data.slice(0, -1) : data;
    if (h.list === 'staged') this.writeStaged(text);
    else this.deleteOldest(text);
  }

  private writeStaged(text: string): void {
    if (text !== 'A' && text !== 'D')
      throw new KernelFileError('EINVAL', `"${text.slice(0, 20)}" is not A or D`);
    if (this.suspended) throw new KernelFileError('EPERM', 'measurements are suspended for kexec');
    if (text === 'A') {
      if (this.staged.length > 0)
        throw new KernelFileError('EEXIST', 'a staged list exists; delete it first');
      this.staged = this.current;
      this.current = [];
      return;
    }
    if (this.staged.length === 0) throw new KernelFileError('ENOENT', 'nothing staged');
    this.freed += this.staged.length;
    this.staged = [];
  }

  private deleteOldest(text: string): void {
    if (!/^[0-9]{1,20}$/.test(text))
      throw new KernelFileError('EINVAL', `"${text.slice(0, 20)}" is not a count`);
    const n = BigInt(text);
    if (n < 1n || n > MAX_DELETE) throw new KernelFileError('EINVAL', `${text} out of [1, ULONG_MAX-1]`);
    if (this.flushHtable) throw new KernelFileError('EPERM', 'refused with ima_flush_htable');
    if (this.suspended) throw new KernelFileError('EPERM', 'measurements are suspended for kexec');
    if (n > BigInt(this.current.length)) {
      throw new KernelFileError('ENOENT', `${text} records asked, ${this.current.length} exist`);
    }
    this.current = this.current.slice(Number(n));
    this.freed += Number(n);
  }

  /** kexec execute: measurements are suspended; stage and delete fail from now on. */
  suspendForKexec(): void {
    this.suspended = true;
  }

  /**
   * The new kernel after kexec: staged records are marshalled before the current list, both
   * carried without re-extending (the PCRs keep them), then the new kernel's boot_aggregate is
   * appended. Open handles die with the old kernel.
   */
  completeKexec(bootAggregate: Measurement): void {
    this.current = [...this.staged, ...this.current];
    this.staged = [];
    this.handles.clear();
    this.suspended = false;
    this.measure(bootAggregate);
  }

  private handle(fd: number): Handle {
    const h = this.handles.get(fd);
    if (h === undefined) throw new KernelFileError('EBADF', `handle ${fd}`);

    return h;
  }

  /** The binary file of one list for one bank: every record as the kernel's show function writes it. */
  render(list: ListKind, bank: HashAlg = 'sha1'): Uint8Array {
    if (!this.banks.includes(bank))
      throw new KernelFileError('ENOENT', `no binary_runtime_measurements_${bank}`);
    const records = (list === 'current' ? this.current : this.staged).map((m) => this.renderOne(m, bank));

    const all = Buffer.concat(records);

    return new Uint8Array(all.buffer, all.byteOffset, all.byteLength);
  }

  private renderOne(m: Measurement, bank: HashAlg): Uint8Array {
    let byBank = this.rendered.get(m);
    if (byBank === undefined) {
      byBank = new Map();
      this.rendered.set(m, byBank);
    }
    let bytes = byBank.get(bank);
    if (bytes === undefined) {
      const templateDigest =
        m.violation === true ? new Uint8Array(digestSize(bank)) : templateDigestOf(m, bank);
      const rec: Omit<ImaRecord, 'offset'> = { ...m, templateDigest };
      bytes = encodeBinaryRecord(rec);
      byBank.set(bank, bytes);
    }

    return bytes;
  }
}
