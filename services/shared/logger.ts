/**
 * Structured JSON logging for services (lib/ never logs).
 *
 * Level policy:
 * - error: our fault or the infrastructure's (a bug, Redis or Kafka unreachable, a commit that
 *   failed) — someone operating imastream must act.
 * - warn:  a verification failure or bad input from a host (PCR mismatch, bad signature, a message
 *   sent to the dead-letter topic) — the security team acts through alerts; the log notes it.
 * - info:  lifecycle (start with config, group joined, stop) and rare state changes.
 * - debug: per-message success and per-batch progress; off in production.
 *
 * Messages are short and fixed ("batch applied", "quote verified"); the variable parts go in the
 * merge object, so log lines can be counted and searched. Nonces, key material and credentials
 * are redacted wherever they appear in a merge object, at top level or one level down.
 */
import { type DestinationStream, type Logger, type LoggerOptions, pino } from 'pino';

export type { Logger };

/** Log levels accepted in configuration, most verbose last. */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

const SECRET_FIELDS = [
  'nonce',
  'secret',
  'password',
  'privateKey',
  'credential',
  'seed',
  'hmacKey',
  'authorization',
  'redisUrl',
];

/** Redaction paths: each secret field at top level and one object down (`*.nonce`). */
export const REDACT_PATHS = SECRET_FIELDS.flatMap((f) => [f, `*.${f}`]);

export interface CreateLoggerOptions {
  /** Service name, bound on every line (`service`). */
  service: string;
  level?: LogLevel;
  /** Where lines go; stdout by default. Tests pass a stream and parse the lines. */
  destination?: DestinationStream;
}

/** The root logger of a service process. */
export function createLogger({ service, level = 'info', destination }: CreateLoggerOptions): Logger {
  const options: LoggerOptions = {
    level,
    base: { service, pid: process.pid },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    serializers: { err: pino.stdSerializers.err, error: pino.stdSerializers.err },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  };

  return destination ? pino(options, destination) : pino(options);
}

/** A child logger bound to one host (and optionally its boot), for per-host work. */
export function hostLogger(logger: Logger, hostId: string, bootId?: string): Logger {
  return logger.child(bootId === undefined ? { hostId } : { hostId, bootId });
}
