import { ENROLLER_SETTINGS, loadEkPolicy } from '../../services/enroller/config.ts';
import { startEnroller } from '../../services/enroller/main.ts';
import { type CliIO, EXIT } from '../io.ts';
import { startService, untilStopped } from '../service.ts';

/**
 * `imastream enroller`: enrols agents' AKs under their EKs (docs/enrolment.md). The trust store
 * and allow-list are read and checked before anything connects; runs until SIGTERM or SIGINT.
 */
export async function run(argv: string[], io: CliIO): Promise<number> {
  const started = startService('enroller', ENROLLER_SETTINGS, argv, io);
  if (started === undefined) return EXIT.ok;
  const { config, logger } = started;
  const ekPolicy = await loadEkPolicy(config);
  logger.info(
    {
      roots: ekPolicy.trustStore?.roots.length ?? 0,
      intermediates: ekPolicy.trustStore?.intermediates.length ?? 0,
      withoutCertificate: ekPolicy.withoutCertificate,
      allowListed: ekPolicy.allowList.size,
      rebinds: ekPolicy.rebind?.size ?? 0,
    },
    'EK policy loaded',
  );
  const enroller = await startEnroller({
    brokers: config.kafkaBrokers,
    logger,
    ekPolicy,
    challengeTtlMs: config.challengeTtlMs,
    groupId: config.groupId,
  });
  await untilStopped(logger, [enroller.stop]);

  return EXIT.ok;
}
