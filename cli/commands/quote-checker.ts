import {
  QUOTE_CHECKER_GROUP,
  QUOTE_CHECKER_REFS_GROUP,
  startQuoteChecker,
} from '../../services/quote-checker/main.ts';
import { COMMON_SETTINGS, parsers, type Settings } from '../../services/shared/config.ts';
import { type CliIO, EXIT } from '../io.ts';
import { startService, untilStopped } from '../service.ts';

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
  akOverlapMs: {
    flag: 'ak-overlap-ms',
    env: 'IMASTREAM_AK_OVERLAP_MS',
    default: '600000',
    parse: parsers.int(0, DAY_MS),
    doc: "after a host re-enrols, how long its replaced AK's quotes are still accepted",
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
  const started = startService('quote-checker', SETTINGS, argv, io);
  if (started === undefined) return EXIT.ok;
  const { config, logger } = started;
  const checker = await startQuoteChecker({
    brokers: config.kafkaBrokers,
    redisUrl: config.redisUrl,
    logger,
    groupId: config.groupId,
    refsGroupId: config.refsGroupId,
    deadlineMs: config.deadlineMs,
    sweepIntervalMs: config.sweepIntervalMs,
    akOverlapMs: config.akOverlapMs,
  });
  await untilStopped(logger, [checker.stop]);

  return EXIT.ok;
}
