import { followAlerts } from '../../services/alerts/follow.ts';
import { alertJson, alertLine } from '../../services/alerts/format.ts';
import { COMMON_SETTINGS, loadConfig, parsers, type Settings, usage } from '../../services/shared/config.ts';
import { createLogger } from '../../services/shared/logger.ts';
import { stopOnSignals } from '../../services/shared/shutdown.ts';
import { type CliIO, EXIT } from '../io.ts';

const SETTINGS = {
  kafkaBrokers: COMMON_SETTINGS.kafkaBrokers,
  logLevel: { ...COMMON_SETTINGS.logLevel, default: 'warn' },
  follow: { flag: 'follow', boolean: true, parse: parsers.boolean, doc: 'keep printing new alerts' },
  json: { flag: 'json', boolean: true, parse: parsers.boolean, doc: 'print JSON lines' },
  fromBeginning: {
    flag: 'from-beginning',
    boolean: true,
    parse: parsers.boolean,
    doc: 'with --follow, start at the oldest retained alert',
  },
  host: { flag: 'host', default: '', parse: (t: string) => (t === '' ? null : t), doc: 'only this host' },
} satisfies Settings;

/**
 * `imastream alerts`: prints the alerts on ima.alerts, one line each (or JSON lines). Without
 * --follow it prints every retained alert and exits; with --follow it keeps printing new ones
 * until SIGTERM or SIGINT. Logs go to stderr so stdout holds only alerts.
 */
export async function run(argv: string[], io: CliIO): Promise<number> {
  if (argv.includes('--help')) {
    io.out(`usage: imastream alerts [--follow] [--json] [--from-beginning] [--host H]\n${usage(SETTINGS)}`);
    return EXIT.ok;
  }
  const config = loadConfig(SETTINGS, argv);
  const logger = createLogger({ service: 'alerts', level: config.logLevel, destination: process.stderr });
  const follower = await followAlerts({
    brokers: config.kafkaBrokers,
    logger,
    follow: config.follow,
    fromBeginning: config.fromBeginning,
    ...(config.host === null ? {} : { hostId: config.host }),
    onAlert: (a) => io.out(config.json ? alertJson(a) : alertLine(a)),
  });
  if (!config.follow) {
    await follower.done;
    await follower.stop();
    return EXIT.ok;
  }
  await new Promise<void>((resolve) => {
    stopOnSignals(logger, [follower.stop, async () => resolve()]);
  });

  return EXIT.ok;
}
