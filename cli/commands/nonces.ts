import { newChallenge, publishChallenge, startNonceService } from '../../services/nonces/main.ts';
import { COMMON_SETTINGS, type Settings } from '../../services/shared/config.ts';
import { createKafka } from '../../services/shared/kafka.ts';
import { checkKeyPart } from '../../services/shared/redis.ts';
import { type CliIO, EXIT } from '../io.ts';
import { startService, untilStopped } from '../service.ts';

/** `30s`, `2s`, `500ms`, `1m`, or a bare number of seconds. */
function parseDuration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(text.trim());
  if (m === null) throw new Error(`"${text}" is not a duration (500ms, 2s, 1m)`);
  const ms = Number(m[1]) * (m[2] === 'ms' ? 1 : m[2] === 'm' ? 60_000 : 1_000);
  if (ms < 100 || ms > 3_600_000) throw new Error(`"${text}" is not between 100ms and 1h`);
  return Math.round(ms);
}

const SETTINGS = {
  kafkaBrokers: COMMON_SETTINGS.kafkaBrokers,
  logLevel: COMMON_SETTINGS.logLevel,
  interval: {
    flag: 'interval',
    env: 'IMASTREAM_NONCE_INTERVAL',
    default: '30s',
    parse: parseDuration,
    doc: 'time between nonce epochs',
  },
  challenge: {
    flag: 'challenge',
    default: '',
    parse: (text: string) => (text === '' ? null : checkKeyPart('hostId', text)),
    doc: 'publish one challenge for this host and exit',
  },
} satisfies Settings;

/**
 * `imastream nonces`: publishes a fresh NonceEpoch every --interval until SIGTERM or SIGINT; or,
 * with --challenge HOST, publishes one Challenge for that host, prints its request id, and exits.
 */
export async function run(argv: string[], io: CliIO): Promise<number> {
  const started = startService('nonces', SETTINGS, argv, io);
  if (started === undefined) return EXIT.ok;
  const { config, logger } = started;
  const producer = await createKafka({
    brokers: config.kafkaBrokers,
    clientId: 'imastream-nonces',
    logger,
  }).connectProducer();
  if (config.challenge !== null) {
    const challenge = newChallenge(config.challenge, Date.now());
    await publishChallenge(producer, challenge);
    await producer.disconnect();
    io.out(challenge.requestId);
    return EXIT.ok;
  }
  const service = startNonceService({ producer, logger, intervalMs: config.interval });
  await untilStopped(logger, [service.stop, () => producer.disconnect()]);

  return EXIT.ok;
}
