import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { hasCode } from '../../../lib/errors.ts';
import {
  bootIdOf,
  bootStart,
  loadPosition,
  POSITION_FILE,
  parsePosition,
  savePosition,
} from '../../../services/agent/position.ts';

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'ims-pos-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('a first start has no position', (t) => {
  assert.equal(loadPosition(tempDir(t)), undefined);
});

test('a saved position loads back unchanged and leaves no temp file', (t) => {
  const dir = tempDir(t);
  const pos = { ...bootStart('b00t', 3, 1000), logOffset: 4096, nextSeq: 17, bootAnnounced: true };
  savePosition(dir, pos);
  assert.deepEqual(loadPosition(dir), pos);
  assert.deepEqual(readdirSync(dir), [POSITION_FILE]);

  savePosition(dir, { ...pos, nextSeq: 18, logOffset: 4200 });
  assert.equal(loadPosition(dir)?.nextSeq, 18);
});

test('the boot id is the host boot id and the TPM reset count', () => {
  assert.equal(bootIdOf('6f1c', 2), '6f1c:2');
  assert.equal(bootStart('6f1c', 2).bootId, '6f1c:2');
});

test('a damaged position file is an error, never a silent restart from zero', (t) => {
  const dir = tempDir(t);
  const good = bootStart('b', 1, 5);
  const cases: string[] = [
    '{',
    'null',
    JSON.stringify({ ...good, nextSeq: -1 }),
    JSON.stringify({ ...good, logOffset: 1.5 }),
    JSON.stringify({ ...good, bootId: 'other:1' }),
    JSON.stringify({ ...good, bootAnnounced: 'yes' }),
    JSON.stringify({ ...good, hostBootId: '' }),
  ];
  for (const text of cases) {
    writeFileSync(join(dir, POSITION_FILE), text);
    assert.throws(
      () => loadPosition(dir),
      (err) => hasCode(err, 'IMS_AGENT_STATE_CORRUPT'),
      text,
    );
  }
  assert.deepEqual(parsePosition(JSON.stringify(good)), good);
});
