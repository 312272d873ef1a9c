import type {
  Alert,
  BootEvent,
  Checkpoint,
  LogRecord,
  QuoteTaken,
  ResendRequest,
  SnapshotEvent,
} from '../shared/records.ts';

/** A value on ima.measurements, tagged with its record name. */
export type MeasurementEvent =
  | { type: 'LogRecord'; value: LogRecord }
  | { type: 'BootEvent'; value: BootEvent }
  | { type: 'SnapshotEvent'; value: SnapshotEvent }
  | { type: 'QuoteTaken'; value: QuoteTaken };

export const MEASUREMENT_TYPES: ReadonlySet<string> = new Set([
  'LogRecord',
  'BootEvent',
  'SnapshotEvent',
  'QuoteTaken',
]);

/** What a batch makes the replayer tell the rest of the pipeline, produced after the state is stored. */
export type ReplayEffect =
  | { kind: 'alert'; alert: Alert }
  | { kind: 'checkpoint'; checkpoint: Checkpoint }
  | { kind: 'resend'; request: ResendRequest };
