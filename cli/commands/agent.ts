import { parseAgentConfig, USAGE } from '../../services/agent/config.ts';
import { Agent, toolDir } from '../../services/agent/main.ts';
import { TpmTools } from '../../services/agent/tpm.ts';
import { createLogger, hostLogger, LOG_LEVELS, type LogLevel } from '../../services/shared/logger.ts';
import { type CliIO, EXIT } from '../io.ts';

/**
 * `imastream agent`: runs the host agent until SIGTERM or SIGINT, then stops cleanly (sends what
 * it has read, saves its position) and exits 0. A failure exits 1 after logging it.
 */
export async function run(argv: string[], io: CliIO): Promise<number> {
  const config = parseAgentConfig(argv);
  if (config === 'help') {
    io.out(USAGE);
    return EXIT.ok;
  }
  const wanted = process.env.IMASTREAM_LOG_LEVEL ?? 'info';
  const level = (LOG_LEVELS as readonly string[]).includes(wanted) ? (wanted as LogLevel) : 'info';
  const log = hostLogger(createLogger({ service: 'agent', level }), config.hostId);
  log.info({ config: { ...config, selection: undefined } }, 'agent starting');
  const agent = new Agent(config, log, new TpmTools(config.tcti, toolDir(config.stateDir)));
  const stop = () => void agent.stop();
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  try {
    await agent.start();
  } catch (err) {
    log.error({ err }, 'agent failed to start');
    await agent.stop();
    throw err;
  }
  const failure = await agent.done;

  return failure === undefined ? EXIT.ok : EXIT.failed;
}
