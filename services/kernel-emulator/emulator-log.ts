import type { HashAlg } from '../../lib/hash.ts';
import type { EmulatedKernel, ListKind, OpenMode } from './kernel.ts';
import type { KernelLog } from './kernel-log.ts';

/**
 * {@link KernelLog} over an in-process {@link EmulatedKernel}. Every call opens, uses and closes
 * the file as the agent would on securityfs, so the open rules (EBUSY) apply to it like to any
 * other owner of the emulated files.
 */
export class EmulatorKernelLog implements KernelLog {
  constructor(
    private readonly kernel: EmulatedKernel,
    private readonly opts: { owner?: string; bank?: HashAlg } = {},
  ) {}

  private get owner(): string {
    return this.opts.owner ?? 'agent';
  }

  async read(which: ListKind, fromOffset = 0): Promise<Uint8Array> {
    return this.withFile(which, 'r', (fd) => this.kernel.read(fd, this.opts.bank).slice(fromOffset));
  }

  async stageAll(): Promise<void> {
    this.withFile('staged', 'w', (fd) => this.kernel.write(fd, 'A\n'));
  }

  async deleteStaged(): Promise<void> {
    this.withFile('staged', 'w', (fd) => this.kernel.write(fd, 'D\n'));
  }

  async deleteOldest(n: number): Promise<void> {
    this.withFile('current', 'w', (fd) => this.kernel.write(fd, `${n}\n`));
  }

  async count(): Promise<number> {
    return this.kernel.count();
  }

  private withFile<T>(list: ListKind, mode: OpenMode, use: (fd: number) => T): T {
    const fd = this.kernel.open(this.owner, list, mode);
    try {
      return use(fd);
    } finally {
      this.kernel.close(fd);
    }
  }
}
