import type {
  Alert,
  BootEvent,
  Checkpoint,
  LogRecord,
  QuoteTaken,
  ResendRequest,
  SnapshotEvent,
} from '../shared/records.ts';
import type { ShardCut } from './cuts.ts';

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
  /** `cut`: the shard the checkpoint ends (stored beside it in Redis; not on the wire). */
  | { kind: 'checkpoint'; checkpoint: Checkpoint; cut: ShardCut | null }
  | { kind: 'resend'; request: ResendRequest };
