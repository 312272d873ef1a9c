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

test('a position written before log cuts loads with one list from the boot and no cut in flight', () => {
  const old = {
    bootId: 'b:1',
    hostBootId: 'b',
    resetCount: 1,
    logOffset: 90,
    nextSeq: 3,
    bootAnnounced: true,
    updatedAt: 5,
  };
  const pos = parsePosition(JSON.stringify(old));
  assert.equal(pos.listBase, 0);
  assert.equal(pos.cursor, 'current');
  assert.equal(pos.cursorSeq, 3);
  assert.equal(pos.archiveBootId, 'b:1');
  assert.equal(pos.cut, null);
});

test('the cut fields are checked: cursor, order of seqs, the journal', () => {
  const good = { ...bootStart('b', 1, 5), nextSeq: 10, cursorSeq: 10, listBase: 4 };
  assert.deepEqual(parsePosition(JSON.stringify(good)), good);
  const journal = { flavour: 'delete', phase: 'quoted', cutSeq: 10, n: 6, cutBytes: 900, quoteId: 'q' };
  assert.deepEqual(parsePosition(JSON.stringify({ ...good, cut: journal })).cut, journal);
  for (const bad of [
    { ...good, cursor: 'elsewhere' },
    { ...good, listBase: 11 },
    { ...good, cursorSeq: 12 },
    { ...good, cut: { ...journal, flavour: 'shred' } },
    { ...good, cut: { ...journal, phase: 'done' } },
    { ...good, cut: { ...journal, n: -1 } },
    { ...good, cut: { ...journal, quoteId: 7 } },
  ]) {
    assert.throws(
      () => parsePosition(JSON.stringify(bad)),
      (err: Error) => hasCode(err, 'IMS_AGENT_STATE_CORRUPT'),
    );
  }
});
