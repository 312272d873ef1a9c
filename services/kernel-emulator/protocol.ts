import type { ListKind, OpenMode } from './kernel.ts';

/**
 * The emulator's command channel: one JSON object per line over a Unix socket, each request
 * answered by one line with the same id. Bytes travel as base64. The file operations mirror
 * {@link KernelLog}; `open`/`close` let a test hold a file open from another "process"; the
 * control operations (measure, kexec) stand in for the kernel's own activity.
 */
export type Request = { id: number } & (
  | { op: 'read'; which: ListKind; fromOffset?: number; bank?: string }
  | { op: 'stageAll' }
  | { op: 'deleteStaged' }
  | { op: 'deleteOldest'; n: number }
  | { op: 'count' }
  | { op: 'open'; which: ListKind; mode: OpenMode }
  | { op: 'close'; fd: number }
  | { op: 'measure'; pcr: number; templateName: string; templateData: string; violation?: boolean }
  | { op: 'measureMany'; records: WireMeasurement[] }
  | { op: 'suspendForKexec' }
  | { op: 'completeKexec'; pcr: number; templateName: string; templateData: string }
  | { op: 'state' }
);

export type Response =
  | { id: number; ok: true; result?: unknown }
  | { id: number; ok: false; code: string; message: string };

/** One measurement on the wire (template data as base64). */
export interface WireMeasurement {
  pcr: number;
  templateName: string;
  templateData: string;
  violation?: boolean;
}

/** Most measurements one `measureMany` request may carry. */
export const MAX_BATCH = 1000;

/** What `state` answers: the counters a test or the demo wants to see. */
export interface KernelStateView {
  count: number;
  staged: number;
  freed: number;
  suspended: boolean;
}

/** Longest request line accepted (a measurement's template data is at most 1 MiB, as base64). */
export const MAX_LINE = 2 * 1024 * 1024;
