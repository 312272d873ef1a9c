import { SHARD_ARCHIVER_GROUP, startShardArchiver } from '../../services/shard-archiver/main.ts';
import { COMMON_SETTINGS, parsers, type Settings } from '../../services/shared/config.ts';
import { TOPIC } from '../../services/shared/topics.ts';
import { type CliIO, EXIT } from '../io.ts';
import { startService, untilStopped } from '../service.ts';

const SETTINGS = {
  kafkaBrokers: COMMON_SETTINGS.kafkaBrokers,
  logLevel: COMMON_SETTINGS.logLevel,
  out: {
    flag: 'out',
    env: 'IMASTREAM_SHARD_ARCHIVE',
    parse: parsers.string,
    doc: 'archive directory: <out>/<hostId>/<bootId>/<start>-<end>.imsshard',
  },
  groupId: {
    flag: 'group-id',
    default: SHARD_ARCHIVER_GROUP,
    parse: parsers.string,
    doc: 'Kafka consumer group',
  },
  shardsTopic: {
    flag: 'shards-topic',
    default: TOPIC.shards,
    parse: parsers.string,
    doc: 'SealedShard topic',
  },
  enrollmentsTopic: {
    flag: 'enrollments-topic',
    default: TOPIC.enrollments,
    parse: parsers.string,
    doc: 'Enrollment topic (the AK each host must have signed with)',
  },
  alertsTopic: { flag: 'alerts-topic', default: TOPIC.alerts, parse: parsers.string, doc: 'where alerts go' },
  hostPrefix: {
    flag: 'host-prefix',
    default: '',
    parse: (text: string) => text,
    doc: 'archive only hosts whose id starts with this (default: every host)',
  },
  enrolmentGraceS: {
    flag: 'enrolment-grace-s',
    default: '60',
    parse: parsers.int(0, 86_400),
    doc: 'how long a shard waits for its host enrolment before it is refused as UNKNOWN_AK',
  },
} satisfies Settings;

/**
 * `imastream shard-archiver --out DIR`: verifies every sealed shard on ima.shards and keeps the
 * good ones in DIR (docs/shards.md). Runs until SIGTERM or SIGINT.
 */
export async function run(argv: string[], io: CliIO): Promise<number> {
  const started = startService('shard-archiver', SETTINGS, argv, io);
  if (started === undefined) return EXIT.ok;
  const { config, logger } = started;
  const archiver = await startShardArchiver({
    brokers: config.kafkaBrokers,
    logger,
    outDir: config.out,
    groupId: config.groupId,
    shardsTopic: config.shardsTopic,
    enrollmentsTopic: config.enrollmentsTopic,
    alertsTopic: config.alertsTopic,
    enrolmentGraceMs: config.enrolmentGraceS * 1000,
    ...(config.hostPrefix === '' ? {} : { hostPrefix: config.hostPrefix }),
  });
  await untilStopped(logger, [archiver.stop]);

  return EXIT.ok;
}
