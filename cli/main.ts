import { isImastreamError } from '../lib/errors.ts';
import { type CliIO, type Command, EXIT, processIO } from './io.ts';

/**
 * The `imastream` command. Each subcommand lives in its own module under cli/commands and is
 * loaded only when asked for, so `imastream replay` never loads Kafka or Redis clients.
 */
const COMMANDS: Record<string, { summary: string; load: () => Promise<{ run: Command }> }> = {
  replay: {
    summary: 'replay an IMA log offline and print PCR values',
    load: () => import('./commands/replay.ts'),
  },
  'check-quote': {
    summary: 'verify a TPM 2.0 quote against a log or PCR values',
    load: () => import('./commands/check-quote.ts'),
  },
  'verify-shard': {
    summary: 'verify a chain of sealed shards offline',
    load: () => import('./commands/verify-shard.ts'),
  },
  agent: { summary: 'run the host agent', load: () => import('./commands/agent.ts') },
  replayer: {
    summary: 'run a replayer (consumer group member)',
    load: () => import('./commands/replayer.ts'),
  },
  'quote-checker': { summary: 'run a quote-checker', load: () => import('./commands/quote-checker.ts') },
  nonces: { summary: 'run the nonce service', load: () => import('./commands/nonces.ts') },
  'shard-archiver': {
    summary: 'verify and archive the sealed shards on ima.shards',
    load: () => import('./commands/shard-archiver.ts'),
  },
  enroller: {
    summary: 'run the enroller (AK enrolment bound to the EK)',
    load: () => import('./commands/enroller.ts'),
  },
  alerts: { summary: 'print alerts as they arrive', load: () => import('./commands/alerts.ts') },
};

function usage(io: CliIO): void {
  io.err('usage: imastream <command> [options]   (imastream <command> --help for its options)');
  io.err('');
  for (const [name, { summary }] of Object.entries(COMMANDS)) io.err(`  ${name.padEnd(14)} ${summary}`);
}

export async function main(argv: string[], io: CliIO = processIO): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    usage(io);
    return name === undefined ? EXIT.unusable : EXIT.ok;
  }
  const entry = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (entry === undefined) {
    io.err(`imastream: unknown command '${name}'`);
    usage(io);
    return EXIT.unusable;
  }

  try {
    const { run } = await entry.load();
    return await run(rest, io);
  } catch (err) {
    // Unusable input ends here: one line, a stable code, never a stack trace.
    if (isImastreamError(err)) {
      io.err(`imastream ${name}: ${err.code}: ${err.message}`);
    } else {
      io.err(`imastream ${name}: ${err instanceof Error ? err.message : String(err)}`);
    }
    return EXIT.unusable;
  }
}
