/**
 * The one catalogue of imastream error codes.
 *
 * Codes are `IMS_<AREA>_<CONDITION>` and stable: a retired code is never reused, and every code
 * here is documented in docs/errors.md (a test keeps the two in step).
 *
 * Errors are for input we cannot use and for faults of our own or of the infrastructure. A
 * verification that fails (a PCR mismatch, a bad quote signature on a well-formed quote) is a
 * result, reported as a verdict, not thrown.
 */

const CATALOGUE = {
  // bytes: the bounds-checked reader every parser uses
  IMS_BYTES_TRUNCATED: 'input ended before a declared length',
  IMS_BYTES_LIMIT: 'a declared length or count exceeds its limit',

  // ima: measurement log parsing
  IMS_IMA_TRUNCATED: 'the log ends inside a record',
  IMS_IMA_BAD_PCR: 'PCR index out of range',
  IMS_IMA_BAD_TEMPLATE_NAME: 'template name is empty, too long or not printable',
  IMS_IMA_BAD_TEMPLATE_DATA: 'template data length out of bounds or fields do not fill it',
  IMS_IMA_BAD_FIELD: 'a template field is malformed',
  IMS_IMA_DIGEST_MISMATCH: 'template digest does not match the hash of the template data',
  IMS_IMA_BAD_ASCII_LINE: 'an ASCII log line cannot be parsed',
  IMS_IMA_UNKNOWN_FORMAT: 'the log is neither binary nor ASCII IMA format',
  IMS_IMA_UNSUPPORTED_ALG: 'hash algorithm not supported',
  IMS_IMA_BAD_SNAPSHOT_AGGREGATE: 'snapshot_aggregate data does not follow the RFC grammar',
  IMS_IMA_UNKNOWN_TEMPLATE: 'template name is neither built in nor a list of known fields',
  IMS_IMA_NO_RECORDS: 'the log is empty or holds no record',

  // replay
  IMS_REPLAY_BAD_EXPECTATION: 'an expected PCR value is malformed',
  IMS_REPLAY_BAD_STATE: 'stored replay state is malformed',

  // tpm: TPM 2.0 structures and quotes
  IMS_TPM_TRUNCATED: 'TPM structure ends before a declared size',
  IMS_TPM_BAD_MAGIC: 'TPMS_ATTEST magic is not TPM_GENERATED_VALUE',
  IMS_TPM_BAD_ATTEST_TYPE: 'TPMS_ATTEST is not of the expected type',
  IMS_TPM_BAD_ATTEST: 'TPMS_ATTEST is malformed (a field out of range or over its limit)',
  IMS_TPM_UNSUPPORTED_ALG: 'TPM algorithm not supported',
  IMS_TPM_BAD_PUBLIC: 'public area or key is malformed',
  IMS_TPM_BAD_SIGNATURE_FORMAT: 'TPMT_SIGNATURE is malformed',
  IMS_TPM_BAD_PCR_SELECTION: 'PCR selection is malformed or exceeds its limits',
  IMS_TPM_BAD_PCR_FILE: 'PCR values file is malformed',
  IMS_TPM_TRAILING_BYTES: 'bytes left over after a TPM structure',
  IMS_TPM_BAD_CREDENTIAL: 'credential inputs are malformed',
  IMS_TPM_BAD_KDF: 'KDF parameters out of range (label not ASCII, length not whole bytes)',
  IMS_TPM_BAD_EK: 'the EK public area cannot protect a credential (not a restricted decryption key)',

  // enrol: AK enrolment bound to the EK
  IMS_ENROL_BAD_TRUST_ANCHOR:
    'a trust-store certificate (manufacturer root or intermediate) cannot be parsed',
  IMS_ENROL_BAD_REQUEST: 'an enrolment request or answer is malformed',
  IMS_ENROL_REJECTED: 'the enroller refused the enrolment (the reason is its rejection code)',
  IMS_ENROL_NO_CHALLENGE: 'no enrolment challenge arrived in time (no enroller running, or it is behind)',
  IMS_ENROL_NOT_ACCEPTED: 'the answer was sent but no active enrolment of this AK appeared in time',
  IMS_ENROL_ACTIVATION_FAILED: 'the TPM refused to activate the credential (not made for this EK and AK)',

  // shard: sealed shards
  IMS_SHARD_BAD_FORMAT: 'sealed shard file is malformed',
  IMS_SHARD_CORRUPT: 'sealed shard file fails its integrity check',
  IMS_SHARD_REJECTED:
    'the shard archiver refused a sealed shard (failed verification, chain conflict or unknown AK)',
  IMS_SHARD_AK_PENDING: 'no enrolled AK is known yet for the host of a sealed shard (retried)',

  // wire: Avro and framing
  IMS_WIRE_BAD_FRAME: 'message is not in Confluent wire framing',
  IMS_WIRE_UNKNOWN_SCHEMA: 'schema id is not in the catalogue',
  IMS_WIRE_DECODE: 'Avro body does not decode with its schema',
  IMS_WIRE_OVERSIZED: 'message exceeds the size limit',
  IMS_WIRE_ENCODE: 'a value does not match the Avro schema it is written with',

  // infra: Kafka and Redis adapters (services/shared)
  IMS_KAFKA_UNAVAILABLE: 'the Kafka cluster did not answer in time',
  IMS_KAFKA_TOPIC_MISMATCH: 'an existing topic differs from the topic table (partitions)',
  IMS_REDIS_BAD_KEY: 'a hostId, bootId or seq cannot be part of a Redis key',

  // agent: the host agent's local state and log following
  IMS_AGENT_STATE_CORRUPT: 'the agent position file is malformed or inconsistent',
  IMS_AGENT_ARCHIVE_CORRUPT: 'the agent record archive is damaged or belongs to another boot',
  IMS_AGENT_LOG_SHRANK: 'the measurement log is shorter than the saved position of the same boot',
  IMS_AGENT_IO: 'the agent cannot read or write a local file',
  IMS_AGENT_KERNEL_STATE: 'the kernel measurement lists disagree with the agent archive or cut journal',
  IMS_AGENT_CUT_FAILED: 'the kernel refused a log cut the agent asked for',
  IMS_AGENT_BROKER_DIVERGED: 'the broker holds a record of this host that differs from the agent archive',

  // config and services
  IMS_CONFIG_INVALID: 'configuration is missing or invalid',
  IMS_CLI_USAGE: 'command-line usage error',
  IMS_IO_READ_FAILED: 'an input file cannot be read',
  IMS_IO_TOO_LARGE: 'an input file exceeds its size limit',
  IMS_STATE_CONFLICT: 'stored state changed under us (compare-and-set lost)',
  IMS_TOOL_FAILED: 'an external tool (tpm2-tools, swtpm) failed',
} as const;

export type ErrorCode = keyof typeof CATALOGUE;

/** Every code with its one-line meaning, for docs and for tests. */
export const ERROR_CODES: Readonly<Record<ErrorCode, string>> = CATALOGUE;

const BRAND = Symbol.for('imastream.error');

export interface ErrorOptions {
  cause?: unknown;
  /** Machine-readable context (offset, hostId, pcrIndex, …); serialised by pino. */
  details?: Record<string, unknown>;
  /** Whether the same operation may succeed if tried again; defaults to false. */
  canRetry?: boolean;
}

/** An error with a stable code and machine-readable details. Classify with {@link isImastreamError}. */
export class ImastreamError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown>;
  readonly canRetry: boolean;
  readonly [BRAND] = true;

  constructor(code: ErrorCode, message?: string, options: ErrorOptions = {}) {
    super(message ?? CATALOGUE[code], options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ImastreamError';
    this.code = code;
    this.details = options.details ?? {};
    this.canRetry = options.canRetry ?? false;
  }

  toJSON(): Record<string, unknown> {
    return { code: this.code, message: this.message, details: this.details, canRetry: this.canRetry };
  }
}

/** Brand check that works across module copies, unlike `instanceof`. */
export function isImastreamError(err: unknown): err is ImastreamError {
  return typeof err === 'object' && err !== null && (err as { [BRAND]?: boolean })[BRAND] === true;
}

/** True when `err` is an imastream error with one of the given codes. */
export function hasCode(err: unknown, ...codes: ErrorCode[]): err is ImastreamError {
  return isImastreamError(err) && codes.includes(err.code);
}
