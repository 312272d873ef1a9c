/**
 * Service configuration from command-line flags and environment variables, checked once at start.
 *
 * Each setting has a long flag, an optional environment variable and an optional default; a flag
 * wins over the variable, which wins over the default. Every problem is collected, so one
 * IMS_CONFIG_INVALID error lists all of them on one line, e.g.
 * `IMS_CONFIG_INVALID: --kafka-brokers (IMASTREAM_KAFKA_BROKERS): "x" is not host:port; --host-id: required`.
 */
import { parseArgs } from 'node:util';

import { ImastreamError } from '../../lib/errors.ts';
import { LOG_LEVELS, type LogLevel } from './logger.ts';

/** One setting: where it comes from and how its text becomes a value. */
export interface Setting<T> {
  /** Long flag name without dashes, e.g. `kafka-brokers`. */
  flag: string;
  env?: string;
  default?: string;
  /** A flag that takes no value (`--once`); its value is 'true' when present. */
  boolean?: boolean;
  /** Turns the text into a value; throws an Error whose message says what is wrong. */
  parse: (text: string) => T;
  /** Shown in --help and in the startup log instead of the value when `secret`. */
  doc: string;
  secret?: boolean;
}

export type Settings = Record<string, Setting<unknown>>;
export type ConfigOf<S extends Settings> = { [K in keyof S]: ReturnType<S[K]['parse']> };

/** Parsers for common value kinds; each throws an Error naming the problem. */
export const parsers = {
  string(text: string): string {
    if (text.length === 0) throw new Error('is empty');
    return text;
  },

  brokers(text: string): string[] {
    const list = text.split(',').map((b) => b.trim());
    const bad = list.find((b) => !/^[A-Za-z0-9.[\]:-]+:\d{1,5}$/.test(b));
    if (bad !== undefined) throw new Error(`"${bad}" is not host:port`);
    return list;
  },

  redisUrl(text: string): string {
    let url: URL;
    try {
      url = new URL(text);
    } catch {
      throw new Error('is not a URL');
    }
    if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') throw new Error('is not a redis:// URL');
    return text;
  },

  logLevel(text: string): LogLevel {
    if (!(LOG_LEVELS as readonly string[]).includes(text))
      throw new Error(`"${text}" is not one of ${LOG_LEVELS.join('|')}`);
    return text as LogLevel;
  },

  boolean(text: string): boolean {
    if (text === 'true' || text === '1') return true;
    if (text === 'false' || text === '0' || text === '') return false;
    throw new Error(`"${text}" is not true|false`);
  },

  /** An integer in [min, max]. */
  int(min: number, max: number): (text: string) => number {
    return (text) => {
      const n = Number(text);
      if (!/^-?\d+$/.test(text) || !Number.isSafeInteger(n) || n < min || n > max) {
        throw new Error(`"${text}" is not an integer in [${min}, ${max}]`);
      }
      return n;
    };
  },
};

/** Connection settings every service shares (docs/contract.md). */
export const COMMON_SETTINGS = {
  kafkaBrokers: {
    flag: 'kafka-brokers',
    env: 'IMASTREAM_KAFKA_BROKERS',
    default: '127.0.0.1:19092',
    parse: parsers.brokers,
    doc: 'Kafka bootstrap brokers, comma-separated host:port',
  },
  redisUrl: {
    flag: 'redis-url',
    env: 'IMASTREAM_REDIS_URL',
    default: 'redis://127.0.0.1:6379',
    parse: parsers.redisUrl,
    doc: 'Redis URL (redis:// or rediss://)',
    secret: true,
  },
  logLevel: {
    flag: 'log-level',
    env: 'IMASTREAM_LOG_LEVEL',
    default: 'info',
    parse: parsers.logLevel,
    doc: `log level: ${LOG_LEVELS.join('|')}`,
  },
} satisfies Settings;

function label(setting: Setting<unknown>): string {
  return setting.env ? `--${setting.flag} (${setting.env})` : `--${setting.flag}`;
}

function readFlags(settings: Settings, argv: string[], problems: string[]): Record<string, unknown> {
  const options = Object.fromEntries(
    Object.values(settings).map((s) => [
      s.flag,
      { type: s.boolean ? ('boolean' as const) : ('string' as const) },
    ]),
  );
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values;
  } catch (err) {
    problems.push(err instanceof Error ? err.message.split('\n')[0]! : String(err));
    return {};
  }
}

/**
 * Reads `settings` from `argv` (without node and script) and `env`. Throws one
 * IMS_CONFIG_INVALID naming every setting that is missing or invalid.
 */
export function loadConfig<S extends Settings>(
  settings: S,
  argv: string[] = process.argv.slice(2),
  env: NodeJS.ProcessEnv = process.env,
): ConfigOf<S> {
  const problems: string[] = [];
  const flags = readFlags(settings, argv, problems);
  const config: Record<string, unknown> = {};

  for (const [key, setting] of Object.entries(settings)) {
    const flag = flags[setting.flag];
    const text = flag === undefined ? (setting.env ? env[setting.env] : undefined) : String(flag);
    const raw = text ?? setting.default;
    if (raw === undefined) {
      if (setting.boolean) config[key] = setting.parse('false');
      else problems.push(`${label(setting)}: required`);
      continue;
    }
    try {
      config[key] = setting.parse(raw);
    } catch (err) {
      problems.push(`${label(setting)}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  if (problems.length > 0) {
    throw new ImastreamError('IMS_CONFIG_INVALID', problems.join('; '), { details: { problems } });
  }

  return config as ConfigOf<S>;
}

/** The config with secret settings replaced, safe to log at startup. */
export function publicConfig<S extends Settings>(settings: S, config: ConfigOf<S>): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(config).map(([key, value]) => [key, settings[key]?.secret ? '[redacted]' : value]),
  );
}

/** One line per setting, for --help. */
export function usage(settings: Settings): string {
  return Object.values(settings)
    .map((s) => {
      const from = [s.env, s.default === undefined ? undefined : `default ${s.default}`]
        .filter(Boolean)
        .join(', ');
      return `  --${s.flag.padEnd(22)} ${s.doc}${from ? ` [${from}]` : ''}`;
    })
    .join('\n');
}
