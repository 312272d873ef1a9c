import { type HashAlg, isHashAlg } from '../../lib/hash.ts';
import { REPLAYER_GROUP, startReplayer } from '../../services/replayer/main.ts';
import { COMMON_SETTINGS, parsers, type Settings } from '../../services/shared/config.ts';
import { type CliIO, EXIT } from '../io.ts';
import { startService, untilStopped } from '../service.ts';

const SETTINGS = {
  ...COMMON_SETTINGS,
  groupId: { flag: 'group-id', default: REPLAYER_GROUP, parse: parsers.string, doc: 'Kafka consumer group' },
  concurrency: {
    flag: 'concurrency',
    env: 'IMASTREAM_REPLAYER_CONCURRENCY',
    default: '3',
    parse: parsers.int(1, 64),
    doc: 'partitions handled at once',
  },
  sessionTimeoutMs: {
    flag: 'session-timeout-ms',
    default: '30000',
    parse: parsers.int(6_000, 300_000),
    doc: 'consumer session timeout: how soon the group notices a dead instance',
  },
  banks: {
    flag: 'banks',
    env: 'IMASTREAM_REPLAYER_BANKS',
    default: 'sha1,sha256',
    parse: parseBanks,
    doc: 'PCR banks replayed for new boots, comma-separated',
  },
} satisfies Settings;

function parseBanks(text: string): HashAlg[] {
  const banks = text.split(',').map((b) => b.trim());
  const bad = banks.find((b) => !isHashAlg(b));
  if (bad !== undefined) throw new Error(`"${bad}" is not a bank (sha1, sha256, sha384, sha512, sm3)`);
  return banks as HashAlg[];
}

/**
 * `imastream replayer`: one member of the replayer consumer group. Runs until SIGTERM or SIGINT,
 * then stops consuming, commits what it handled, flushes the producer, closes Redis and exits 0.
 */
export async function run(argv: string[], io: CliIO): Promise<number> {
  const started = startService('replayer', SETTINGS, argv, io);
  if (started === undefined) return EXIT.ok;
  const { config, logger } = started;
  const replayer = await startReplayer({
    brokers: config.kafkaBrokers,
    redisUrl: config.redisUrl,
    logger,
    groupId: config.groupId,
    banks: config.banks,
    concurrency: config.concurrency,
    sessionTimeoutMs: config.sessionTimeoutMs,
  });
  await untilStopped(logger, [replayer.stop]);

  return EXIT.ok;
}
