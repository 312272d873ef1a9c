import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { it } from 'node:test';
import { fileURLToPath } from 'node:url';

const SHUTDOWN = fileURLToPath(new URL('../../../services/shared/shutdown.ts', import.meta.url));
const LOGGER = fileURLToPath(new URL('../../../services/shared/logger.ts', import.meta.url));

/** Runs a child that installs stopOnSignals with the given closer bodies, then signals it. */
function runChild(closers: string[], signals: NodeJS.Signals[], graceMs = 2_000) {
  const script = `
    import { stopOnSignals } from ${JSON.stringify(SHUTDOWN)};
    import { createLogger } from ${JSON.stringify(LOGGER)};
    const logger = createLogger({ service: 'child', destination: process.stderr });
    stopOnSignals(logger, [${closers.map((c) => `async () => { ${c} }`).join(', ')}], ${graceMs});
    setInterval(() => {}, 1000);
    process.stdout.write('ready\\n');`;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (chunk: Buffer) => {
    out += chunk.toString();
    if (out === 'ready\n') for (const s of signals) child.kill(s);
  });
  return new Promise<{ code: number | null; out: string }>((resolve) => {
    child.on('exit', (code) => resolve({ code, out }));
  });
}

it('runs the closers in order on SIGTERM and exits 0', async () => {
  const { code, out } = await runChild(
    [
      "await new Promise((r) => setTimeout(r, 100)); process.stdout.write('consumer\\n');",
      "throw new Error('producer failed');",
      "process.stdout.write('redis\\n');",
    ],
    ['SIGTERM'],
  );

  assert.equal(code, 0);
  assert.equal(out, 'ready\nconsumer\nredis\n', 'a failing closer does not stop the others');
});

it('exits 1 when the closers overrun the grace period', async () => {
  const { code, out } = await runChild(
    ['await new Promise((r) => setTimeout(r, 60_000));'],
    ['SIGTERM'],
    300,
  );

  assert.equal(code, 1);
  assert.equal(out, 'ready\n');
});
