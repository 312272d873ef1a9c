/**
 * kafkajs logs into pino. kafkajs is chatty at INFO (every join, every fetch restart), so its
 * INFO becomes our debug; its WARN and ERROR stay as they are. Our warn/error policy applies:
 * kafkajs ERROR lines are about connections and crashes, which are infrastructure faults.
 */
import { type logCreator, logLevel } from 'kafkajs';

import type { Logger } from './logger.ts';

/** The kafkajs level that lets through what `logger` would print anyway. */
export function kafkaLogLevel(logger: Logger): logLevel {
  if (logger.isLevelEnabled('debug')) return logLevel.DEBUG;
  if (logger.isLevelEnabled('warn')) return logLevel.WARN;
  return logLevel.ERROR;
}

/** A kafkajs logCreator writing through `logger` with the kafkajs namespace bound as `kafkajs`. */
export function pinoLogCreator(logger: Logger): logCreator {
  return () =>
    ({ namespace, level, log }) => {
      const { message, timestamp: _timestamp, logger: _name, ...extra } = log;
      const fields = { kafkajs: namespace, ...extra };
      if (level === logLevel.ERROR) logger.error(fields, message);
      else if (level === logLevel.WARN) logger.warn(fields, message);
      else logger.debug(fields, message);
    };
}
