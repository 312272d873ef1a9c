import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { hasCode } from '../../../lib/errors.ts';
import { type ArchiveMeta, archiveDir, RecordArchive } from '../../../services/agent/archive.ts';

const META: ArchiveMeta = { bootId: 'b:1', digestAlg: 'sha1' };

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'ims-arch-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Records of different sizes, each filled with its own seq so a mix-up shows. */
function records(from: number, n: number): Uint8Array[] {
  return Array.from({ length: n }, (_, i) => new Uint8Array(10 + ((from + i) % 7)).fill(from + i));
}

test('records read back by seq range, clamped to what is archived', (t) => {
  const dir = tempDir(t);
  const a = RecordArchive.open(dir, META, 0);
  t.after(() => a.close());
  a.append(records(0, 5));
  a.append(records(5, 3));
  a.sync();
  assert.equal(a.count, 8);
  assert.deepEqual(a.read(2, 6), records(2, 4));
  assert.deepEqual(a.read(6, 100), records(6, 2));
  assert.deepEqual(a.read(8, 9), []);
  assert.deepEqual(a.read(5, 2), []);
});

test('bytes from a seq to the end: what a shard starting there holds raw', (t) => {
  const dir = tempDir(t);
  const a = RecordArchive.open(dir, META, 0);
  t.after(() => a.close());
  const all = records(0, 9);
  a.append(all);
  const size = (from: number) => all.slice(from).reduce((n, r) => n + r.byteLength, 0);
  for (const seq of [0, 1, 4, 8]) assert.equal(a.bytesFrom(seq), size(seq), `from ${seq}`);
  assert.equal(a.bytesFrom(9), 0);
  assert.equal(a.bytesFrom(50), 0);
});

test('reopening cuts the archive back to the saved position', (t) => {
  const dir = tempDir(t);
  const first = RecordArchive.open(dir, META, 0);
  first.append(records(0, 10));
  first.close();

  const again = RecordArchive.open(dir, META, 6);
  t.after(() => again.close());
  assert.equal(again.count, 6);
  again.append(records(6, 2));
  assert.deepEqual(again.read(0, 100), records(0, 8));
});

test('a torn tail (index entry without its bytes) is dropped', (t) => {
  const dir = tempDir(t);
  const a = RecordArchive.open(dir, META, 0);
  a.append(records(0, 4));
  a.close();
  // An index entry whose record bytes never reached the disk, then half an entry.
  const bogus = Buffer.alloc(12);
  bogus.writeBigUInt64LE(BigInt(statSync(join(dir, 'records.bin')).size), 0);
  bogus.writeUInt32LE(50, 8);
  appendFileSync(join(dir, 'index.bin'), Buffer.concat([bogus, Buffer.alloc(5)]));

  const b = RecordArchive.open(dir, META, 4);
  t.after(() => b.close());
  assert.equal(b.count, 4);
  assert.deepEqual(b.read(0, 4), records(0, 4));
});

test('an archive shorter than the saved position, or of another boot, is an error', (t) => {
  const dir = tempDir(t);
  RecordArchive.open(dir, META, 0).close();
  assert.throws(
    () => RecordArchive.open(dir, META, 1),
    (err) => hasCode(err, 'IMS_AGENT_ARCHIVE_CORRUPT'),
  );
  assert.throws(
    () => RecordArchive.open(dir, { ...META, bootId: 'b:2' }, 0),
    (err) => hasCode(err, 'IMS_AGENT_ARCHIVE_CORRUPT'),
  );
});

test('each boot has its own folder, whatever characters the boot id holds', () => {
  assert.notEqual(archiveDir('/s', 'a/b:1'), archiveDir('/s', 'a/b:2'));
  assert.ok(!archiveDir('/s', '../x:1').includes('/../'));
});
