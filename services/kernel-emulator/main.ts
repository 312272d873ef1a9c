import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { type HashAlg, isHashAlg } from '../../lib/hash.ts';
import { generateLog } from '../../lib/ima/synthetic.ts';
import { TpmTools } from '../agent/tpm.ts';
import { createLogger, type LogLevel } from '../shared/logger.ts';
import { EmulatedKernel, type Measurement } from './kernel.ts';
import { EmulatorServer } from './server.ts';
import { DEFAULT_TPM_BANKS, tpmExtender } from './tpm-extend.ts';

/**
 * Runs the Linux 7.2 IMA staging emulator for one host: serves the command channel on a Unix
 * socket and mirrors the files into a directory.
 *
 *   node --import tsx services/kernel-emulator/main.ts --socket /tmp/ima.sock [--dir /tmp/ima]
 *        [--records 100] [--seed 1] [--banks sha256] [--flush-htable]
 *        [--tcti swtpm:host=127.0.0.1,port=P [--tpm-banks sha1,sha256,sha384,sha512]]
 *
 * `--records` preloads a synthetic log (boot_aggregate first). With `--tcti`, every measurement
 * (preloaded, `measure`, `measureMany`, the boot_aggregate of `completeKexec`) is extended into
 * that TPM's PCRs in every `--tpm-banks` bank, after it is in the list, as the kernel does.
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
      tcti: { type: 'string' },
      'tpm-banks': { type: 'string', default: DEFAULT_TPM_BANKS.join(',') },
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
  // With --tcti the emulator extends that TPM like the kernel would, so quotes match the list.
  let onMeasureMany: ((ms: readonly Measurement[]) => Promise<void>) | undefined;
  if (values.tcti !== undefined) {
    const tpmBanks = values['tpm-banks'].split(',').filter((b) => b !== '');
    if (!tpmBanks.every(isHashAlg)) throw new Error(`--tpm-banks: unknown bank in ${values['tpm-banks']}`);
    const work = await mkdtemp(join(tmpdir(), 'ims-emulator-tpm-'));
    onMeasureMany = tpmExtender(new TpmTools(values.tcti, work), tpmBanks as HashAlg[]);
  }
  if (onMeasureMany !== undefined && records.length > 0) await onMeasureMany(records);
  const server = new EmulatorServer(kernel, {
    socketPath: values.socket,
    mirrorDir: values.dir,
    onMeasureMany,
    onMeasure: onMeasureMany === undefined ? undefined : (m) => onMeasureMany([m]),
  });
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
