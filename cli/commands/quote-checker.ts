import {
  QUOTE_CHECKER_GROUP,
  QUOTE_CHECKER_REFS_GROUP,
  startQuoteChecker,
} from '../../services/quote-checker/main.ts';
import {
  COMMON_SETTINGS,
  loadConfig,
  parsers,
  publicConfig,
  type Settings,
  usage,
} from '../../services/shared/config.ts';
import { createLogger } from '../../services/shared/logger.ts';
import { stopOnSignals } from '../../services/shared/shutdown.ts';
import { type CliIO, EXIT } from '../io.ts';

const DAY_MS = 24 * 3_600_000;

const SETTINGS = {
  ...COMMON_SETTINGS,
  groupId: {
    flag: 'group-id',
    default: QUOTE_CHECKER_GROUP,
    parse: parsers.string,
    doc: 'consumer group for quotes',
  },
  refsGroupId: {
    flag: 'refs-group-id',
    default: QUOTE_CHECKER_REFS_GROUP,
    parse: parsers.string,
    doc: 'consumer group for enrolments, nonces and challenges',
  },
  deadlineMs: {
    flag: 'deadline-ms',
    env: 'IMASTREAM_SHARD_DEADLINE_MS',
    default: '300000',
    parse: parsers.int(1_000, DAY_MS),
    doc: 'a quote or checkpoint left unjoined this long raises SHARD_DEADLINE',
  },
  sweepIntervalMs: {
    flag: 'sweep-interval-ms',
    default: '10000',
    parse: parsers.int(200, 3_600_000),
    doc: 'how often overdue joins are looked for',
  },
} satisfies Settings;

/**
 * `imastream quote-checker`: verifies quotes and joins them with replay checkpoints. Runs until
 * SIGTERM or SIGINT, then stops consuming, commits, flushes the producer, closes Redis, exits 0.
 */
export async function run(argv: string[], io: CliIO): Promise<number> {
  if (argv.includes('--help')) {
    io.out(`usage: imastream quote-checker [options]\n${usage(SETTINGS)}`);
    return EXIT.ok;
  }
  const config = loadConfig(SETTINGS, argv);
  const logger = createLogger({ service: 'quote-checker', level: config.logLevel });
  logger.info({ config: publicConfig(SETTINGS, config) }, 'quote-checker starting');
  const checker = await startQuoteChecker({
    brokers: config.kafkaBrokers,
    redisUrl: config.redisUrl,
    logger,
    groupId: config.groupId,
    refsGroupId: config.refsGroupId,
    deadlineMs: config.deadlineMs,
    sweepIntervalMs: config.sweepIntervalMs,
  });
  await new Promise<void>((resolve) => {
    stopOnSignals(logger, [checker.stop, async () => resolve()]);
  });

  return EXIT.ok;
}
