import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { encodeBinaryRecord } from '../../../lib/ima/encode.ts';
import { generateLog } from '../../../lib/ima/synthetic.ts';
import { parseCrashPlan } from '../../../services/agent/crash.ts';
import { FileKernelLog, parseKernelSpec, readList } from '../../../services/agent/kernel-source.ts';
import { EmulatorKernelLog } from '../../../services/kernel-emulator/emulator-log.ts';
import { EmulatedKernel } from '../../../services/kernel-emulator/kernel.ts';

const dir = mkdtempSync(join(tmpdir(), 'ims-kernel-source-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const { records } = generateLog({ records: 12, seed: 21 });
const raw = records.map((r) => encodeBinaryRecord(r, 'le'));

describe('parseKernelSpec', () => {
  it('reads securityfs, securityfs:DIR and socket:PATH, and nothing else', () => {
    assert.deepEqual(parseKernelSpec('securityfs'), { kind: 'securityfs' });
    assert.deepEqual(parseKernelSpec('securityfs:/mnt/ima'), { kind: 'securityfs', dir: '/mnt/ima' });
    assert.deepEqual(parseKernelSpec('socket:/run/ima.sock'), { kind: 'socket', path: '/run/ima.sock' });
    for (const bad of ['', 'socket:', 'securityfs:', 'file:/x', 'SOCKET:/x'])
      assert.equal(parseKernelSpec(bad), undefined);
  });
});

describe('FileKernelLog + readList', () => {
  it('reads whole records from an offset and leaves a record cut short for the next read', async () => {
    const file = join(dir, 'log-a');
    const first = Buffer.concat(raw.slice(0, 5));
    const sixth = raw[5] as Uint8Array;
    writeFileSync(file, Buffer.concat([first, sixth.subarray(0, 7)]));
    const log = new FileKernelLog(file);
    const a = await readList(log, 'current', 0, 'sha1');
    assert.equal(a.records.length, 5);
    assert.equal(a.records.at(-1)?.end, first.byteLength);
    a.records.forEach((r, i) => {
      assert.deepEqual(r.raw, raw[i]);
    });
    appendFileSync(file, sixth.subarray(7));
    const b = await readList(log, 'current', first.byteLength, 'sha1');
    assert.equal(b.records.length, 1);
    assert.deepEqual(b.records[0]?.raw, sixth);
    assert.equal(b.records[0]?.record.offset, first.byteLength);
    assert.equal(
      (await readList(log, 'staged', 0, 'sha1')).records.length,
      0,
      'a plain file has nothing staged',
    );
  });

  it('refuses every cut with EPERM: a plain file is not a 7.2 kernel', async () => {
    const log = new FileKernelLog(join(dir, 'log-a'));
    assert.equal(log.canCut, false);
    for (const call of [
      () => log.stageAll(),
      () => log.deleteStaged(),
      () => log.deleteOldest(),
      () => log.count(),
    ])
      await assert.rejects(call(), (err: { code?: string }) => err.code === 'EPERM');
  });

  it('stops at a framing problem with its code instead of skipping bytes', async () => {
    const file = join(dir, 'log-b');
    const bad = Buffer.concat(raw.slice(0, 2));
    // A template-name length far past any limit, where the third record's would be.
    const junk = Buffer.alloc(40);
    junk.writeUInt32LE(10, 0);
    junk.writeUInt32LE(0xfffffff0, 24);
    writeFileSync(file, Buffer.concat([bad, junk]));
    await assert.rejects(readList(new FileKernelLog(file), 'current', 0, 'sha1'), (err: { code?: string }) =>
      String(err.code).startsWith('IMS_IMA_'),
    );
  });

  it('reads the same records through the emulator, after a cut relative to the current list', async () => {
    const kernel = new EmulatedKernel();
    for (const r of records) kernel.measure(r);
    const log = new EmulatorKernelLog(kernel);
    await log.deleteOldest(4);
    const read = await readList(log, 'current', 0, 'sha1');
    assert.equal(read.records.length, 8);
    read.records.forEach((r, i) => {
      assert.deepEqual(r.raw, raw[i + 4]);
    });
  });
});

describe('parseCrashPlan (test-only fault injection)', () => {
  it('accepts a known step with an optional count and refuses anything else', () => {
    assert.equal(parseCrashPlan(undefined), undefined);
    assert.deepEqual(parseCrashPlan('cut-staged'), { step: 'cut-staged', nth: 1 });
    assert.deepEqual(parseCrashPlan('cut-deleted:3'), { step: 'cut-deleted', nth: 3 });
    for (const bad of ['cut-nowhere', 'cut-staged:0', 'cut-staged:x', 'cut-staged:1.5'])
      assert.throws(() => parseCrashPlan(bad), RangeError);
  });
});
