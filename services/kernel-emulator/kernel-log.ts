import type { ListKind } from './kernel.ts';

export type { ListKind } from './kernel.ts';

/**
 * The agent's view of the kernel's IMA measurement list under Linux 7.2 staging (DOMAIN §3.4):
 * one small interface with two implementations, the real securityfs files
 * ({@link SecurityfsKernelLog}) and the emulator ({@link EmulatorKernelLog}, or over a socket
 * {@link SocketKernelLog}), so the staging path (read, archive, produce, quote, delete) runs
 * unchanged against either. Failures carry errno codes (`err.code`: EBUSY, ENOENT, EEXIST, EPERM,
 * EINVAL) the same way on both sides.
 *
 * Nothing read here is trusted: the bytes are the host's claim until a quote covers their replay.
 */
export interface KernelLog {
  /** Bytes of the binary list (`current` or `staged`) from byte `fromOffset` to its end. */
  read(which: ListKind, fromOffset?: number): Promise<Uint8Array>;
  /** `echo A > …_staged`: moves the whole current list to the staged list. */
  stageAll(): Promise<void>;
  /** `echo D > …_staged`: frees the staged records. Only after they are stored durably. */
  deleteStaged(): Promise<void>;
  /** `echo N > …`: frees the oldest N records of the current list (ENOENT if fewer exist). */
  deleteOldest(n: number): Promise<void>;
  /** runtime_measurements_count: records in the current list. */
  count(): Promise<number>;
}
