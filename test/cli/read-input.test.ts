import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { readInputFile } from '../../cli/read-input.ts';
import { hasCode } from '../../lib/errors.ts';

const dir = mkdtempSync(join(tmpdir(), 'ims-read-input-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

test('reads a regular file whole', async () => {
  const path = join(dir, 'small');
  writeFileSync(path, Buffer.from([1, 2, 3]));
  assert.deepEqual([...(await readInputFile(path, 'quote', 16))], [1, 2, 3]);
});

test('refuses a file over the cap before reading it', async () => {
  const path = join(dir, 'big');
  writeFileSync(path, Buffer.alloc(17));
  await assert.rejects(readInputFile(path, 'quote', 16), (err) => hasCode(err, 'IMS_IO_TOO_LARGE'));
});

test('refuses devices that never end, such as /dev/zero', async () => {
  await assert.rejects(readInputFile('/dev/zero', 'quote', 16), (err) => hasCode(err, 'IMS_IO_READ_FAILED'));
});

test('refuses a FIFO without blocking on it', async () => {
  const fifo = join(dir, 'fifo');
  execFileSync('mkfifo', [fifo]);
  await assert.rejects(readInputFile(fifo, 'quote', 16), (err) => hasCode(err, 'IMS_IO_READ_FAILED'));
});

test('a missing file is unusable input with its path', async () => {
  await assert.rejects(readInputFile(join(dir, 'nope'), 'AK', 16), (err) => {
    return hasCode(err, 'IMS_IO_READ_FAILED') && err.message.includes('ENOENT');
  });
});
