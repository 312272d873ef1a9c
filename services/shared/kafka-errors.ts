/**
 * What a failed message handler means for the message: dead-letter it, or try again.
 *
 * - input: the message itself is unusable (an ImastreamError that cannot succeed on retry, such as
 *   IMS_WIRE_DECODE). Retrying cannot help; it goes to ima.dead-letter and the offset moves on.
 * - infrastructure: Redis, Kafka or the network failed (or an ImastreamError with canRetry, such
 *   as a lost compare-and-set). Retry with backoff, without committing, for as long as it takes.
 * - bug: anything else (a TypeError in our code). Retried a few times, in case it was a race,
 *   then dead-lettered as UNCLASSIFIED so one poison message cannot stall its partition.
 */
import { isImastreamError } from '../../lib/errors.ts';

export type FailureKind = 'input' | 'infrastructure' | 'bug';

const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ECONNABORTED',
]);

// Redis error replies that mean "the server cannot serve now", not "your command is wrong".
const REDIS_TRANSIENT = /^(LOADING|READONLY|BUSY|OOM|MASTERDOWN|CLUSTERDOWN|TRYAGAIN|MOVED|ASK)\b/;

const CONNECTION_MESSAGES =
  /Connection is closed|Stream isn't writeable|connect ETIMEDOUT|Command timed out/i;

/** True for failures of Redis, Kafka or the network rather than of the message or our code. */
export function isInfrastructureError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const e = err as Error & { code?: unknown; retriable?: unknown };

  if (e.retriable === true || e.name.startsWith('KafkaJS')) return true;
  if (e.name === 'MaxRetriesPerRequestError') return true;
  if (e.name === 'ReplyError') return REDIS_TRANSIENT.test(e.message);
  if (typeof e.code === 'string' && NETWORK_CODES.has(e.code)) return true;

  return CONNECTION_MESSAGES.test(e.message);
}

/** Classifies a handler failure (see the module comment). */
export function classifyFailure(err: unknown): FailureKind {
  if (isImastreamError(err)) return err.canRetry ? 'infrastructure' : 'input';
  if (isInfrastructureError(err)) return 'infrastructure';

  return 'bug';
}

const MEMBERSHIP_TYPES = new Set([
  'REBALANCE_IN_PROGRESS',
  'NOT_COORDINATOR_FOR_GROUP',
  'ILLEGAL_GENERATION',
  'UNKNOWN_MEMBER_ID',
  'FENCED_INSTANCE_ID',
]);

/**
 * True when kafkajs says this consumer lost or is losing its partitions (a heartbeat during a
 * rebalance). Such errors must reach kafkajs so it rejoins; they are never retried in place.
 */
export function isMembershipError(err: unknown): boolean {
  const type = (err as { type?: unknown } | null)?.type;
  return typeof type === 'string' && MEMBERSHIP_TYPES.has(type);
}
