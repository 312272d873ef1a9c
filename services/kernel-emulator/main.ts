import { mkdir, rm } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { type HashAlg, isHashAlg } from '../../lib/hash.ts';
import { generateLog } from '../../lib/ima/synthetic.ts';
import { createLogger, type LogLevel } from '../shared/logger.ts';
import { EmulatedKernel } from './kernel.ts';
import { EmulatorServer } from './server.ts';

/**
 * Runs the Linux 7.2 IMA staging emulator for one host: serves the command channel on a Unix
 * socket and mirrors the files into a directory.
 *
 *   node --import tsx services/kernel-emulator/main.ts --socket /tmp/ima.sock [--dir /tmp/ima]
 *        [--records 100] [--seed 1] [--banks sha256] [--flush-htable]
 *
 * `--records` preloads a synthetic log (boot_aggregate first). It does not extend any TPM: a
 * demo that quotes must extend the same records into its swtpm (EmulatorServer's onMeasure).
 */
async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      socket: { type: 'string' },
      dir: { type: 'string' },
      records: { type: 'string', default: '0' },
      seed: { type: 'string', default: '1' },
      banks: { type: 'string', default: '' },
      'flush-htable': { type: 'boolean', default: false },
    },
  });
  if (values.socket === undefined) throw new Error('--socket is required');
  const banks = values.banks.split(',').filter((b) => b !== '');
  if (!banks.every(isHashAlg)) throw new Error(`--banks: unknown bank in ${values.banks}`);

  const logger = createLogger({
    service: 'kernel-emulator',
    level: (process.env.IMASTREAM_LOG_LEVEL ?? 'info') as LogLevel,
  });
  const kernel = new EmulatedKernel({ banks: banks as HashAlg[], flushHtable: values['flush-htable'] });
  const { records } = generateLog({ records: Number(values.records), seed: Number(values.seed) });
  for (const r of records) kernel.measure(r);

  if (values.dir !== undefined) await mkdir(values.dir, { recursive: true });
  await rm(values.socket, { force: true });
  const server = new EmulatorServer(kernel, { socketPath: values.socket, mirrorDir: values.dir });
  await server.listen();
  logger.info(
    { socket: values.socket, dir: values.dir, records: records.length, banks },
    'kernel emulator up',
  );

  const stop = async () => {
    await server.close();
    logger.info('kernel emulator stopped');
    process.exit(0);
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

main().catch((err: unknown) => {
  process.stderr.write(`kernel-emulator: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(2);
});
