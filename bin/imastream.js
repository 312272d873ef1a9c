#!/usr/bin/env node
// Entry point of the `imastream` command. The sources are TypeScript run through tsx, so the
// package works straight after `npm ci` with no build step.
import { register } from 'tsx/esm/api';

// A reader that goes away (`imastream replay … | head`) is not an error of ours: stop quietly
// instead of dying on an unhandled EPIPE with a stack trace.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw err;
  });
}

register();
const { main } = await import('../cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
