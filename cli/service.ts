import type { Logger } from 'pino';
import {
  type COMMON_SETTINGS,
  type ConfigOf,
  loadConfig,
  publicConfig,
  type Settings,
  usage,
} from '../services/shared/config.ts';
import { createLogger } from '../services/shared/logger.ts';
import { type Closer, stopOnSignals } from '../services/shared/shutdown.ts';
import type { CliIO } from './io.ts';

/**
 * The start of every long-running service command: `--help`, the configuration checked before
 * anything connects (IMS_CONFIG_INVALID lists every problem at once), and a JSON logger that
 * records the configuration it runs with. Returns undefined when only help was asked for.
 */
export function startService<S extends Settings & Pick<typeof COMMON_SETTINGS, 'logLevel'>>(
  name: string,
  settings: S,
  argv: string[],
  io: CliIO,
): { config: ConfigOf<S>; logger: Logger } | undefined {
  if (argv.includes('--help')) {
    io.out(`usage: imastream ${name} [options]\n${usage(settings)}`);
    return undefined;
  }
  const config = loadConfig(settings, argv);
  const logger = createLogger({ service: name, level: config.logLevel });
  logger.info({ config: publicConfig(settings, config) }, `${name} starting`);

  return { config, logger };
}

/** Resolves once SIGTERM or SIGINT has run every closer in order (commit, flush, close). */
export function untilStopped(logger: Logger, closers: Closer[]): Promise<void> {
  return new Promise<void>((resolve) => {
    stopOnSignals(logger, [...closers, async () => resolve()]);
  });
}
