import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parseBinaryLog } from '../../../lib/ima/binary.ts';
import { generateLog } from '../../../lib/ima/synthetic.ts';
import { EmulatorKernelLog } from '../../../services/kernel-emulator/emulator-log.ts';
import { EmulatedKernel } from '../../../services/kernel-emulator/kernel.ts';
import type { KernelLog } from '../../../services/kernel-emulator/kernel-log.ts';
import { SecurityfsKernelLog } from '../../../services/kernel-emulator/securityfs-log.ts';
import { EmulatorServer } from '../../../services/kernel-emulator/server.ts';
import { SocketKernelLog } from '../../../services/kernel-emulator/socket-log.ts';

const { records } = generateLog({ records: 10, seed: 9 });

function errno(code: string) {
  return (err: unknown) => (err as { code?: string }).code === code;
}

/**
 * The staging round an agent runs (read, archive, stage, read staged, delete) written once against
 * KernelLog; returns the records it archived.
 */
async function stagingRound(log: KernelLog): Promise<Uint8Array[]> {
  const archive: Uint8Array[] = [];
  await log.stageAll();
  archive.push(await log.read('staged'));
  await log.deleteStaged();
  return archive;
}

describe('EmulatorKernelLog', () => {
  it('runs the staging round and keeps counts', async () => {
    const kernel = new EmulatedKernel();
    for (const r of records.slice(0, 6)) kernel.measure(r);
    const log = new EmulatorKernelLog(kernel);
    const head = await log.read('current');
    assert.equal(parseBinaryLog(head).records.length, 6);
    const tail = await log.read('current', head.byteLength - 10);
    assert.deepEqual(tail, head.subarray(head.byteLength - 10));

    const [archived] = await stagingRound(log);
    assert.deepEqual(archived, head);
    assert.equal(await log.count(), 0);
    await assert.rejects(log.deleteStaged(), errno('ENOENT'));
    kernel.measure(records[6]!);
    await assert.rejects(log.deleteOldest(2), errno('ENOENT'));
    await log.deleteOldest(1);
    assert.equal(kernel.freedCount(), 7);
  });

  it('is EBUSY while another process reads', async () => {
    const kernel = new EmulatedKernel();
    kernel.measure(records[0]!);
    const fd = kernel.open('cat', 'staged', 'r');
    await assert.rejects(new EmulatorKernelLog(kernel).stageAll(), errno('EBUSY'));
    kernel.close(fd);
  });
});

describe('SocketKernelLog and EmulatorServer', () => {
  it('serves the same semantics to another process, mirroring the files', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'kemu-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const kernel = new EmulatedKernel({ banks: ['sha256'] });
    const server = new EmulatorServer(kernel, { socketPath: join(dir, 'ima.sock'), mirrorDir: dir });
    await server.listen();
    t.after(() => server.close());
    const agent = await SocketKernelLog.connect(join(dir, 'ima.sock'));
    t.after(() => agent.close());
    const other = await SocketKernelLog.connect(join(dir, 'ima.sock'));
    t.after(() => other.close());

    for (const r of records.slice(0, 4)) await agent.measure(r);
    assert.equal(await agent.count(), 4);
    assert.equal((await readFile(join(dir, 'runtime_measurements_count'), 'latin1')).trim(), '4');
    const mirrored = new Uint8Array(await readFile(join(dir, 'binary_runtime_measurements')));
    assert.deepEqual(await agent.read('current'), mirrored);

    const fd = (await other.call({ op: 'open', which: 'current', mode: 'r' })) as number;
    await assert.rejects(agent.stageAll(), errno('EBUSY'));
    await other.call({ op: 'close', fd });

    const [archived] = await stagingRound(agent);
    assert.deepEqual(archived, mirrored);
    assert.deepEqual(await other.state(), { count: 0, staged: 0, freed: 4, suspended: false });
    assert.equal((await readFile(join(dir, 'binary_runtime_measurements_staged'))).byteLength, 0);

    const sha256 = await SocketKernelLog.connect(join(dir, 'ima.sock'), { bank: 'sha256' });
    t.after(() => sha256.close());
    await agent.measure(records[4]!);
    const rec = parseBinaryLog(await sha256.read('current'), { digestAlg: 'sha256' }).records[0]!;
    assert.equal(rec.templateDigest.byteLength, 32);
    await assert.rejects(
      agent.call({ op: 'suspendForKexec' }).then(() => agent.stageAll()),
      errno('EPERM'),
    );
  });

  it('measures a batch, extends it once through onMeasureMany, and carries staged records over a kexec', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'kemu-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const kernel = new EmulatedKernel();
    const extended: number[] = [];
    const server = new EmulatorServer(kernel, {
      socketPath: join(dir, 'ima.sock'),
      mirrorDir: dir,
      // Called after the records are in the list, as the kernel appends before it extends.
      onMeasureMany: async (ms) => {
        assert.equal(kernel.count() + kernel.stagedCount() >= ms.length, true);
        extended.push(ms.length);
      },
    });
    await server.listen();
    t.after(() => server.close());
    const log = await SocketKernelLog.connect(join(dir, 'ima.sock'));
    t.after(() => log.close());

    await log.measureMany(records.slice(0, 6));
    assert.deepEqual(extended, [6]);
    await assert.rejects(log.measureMany(Array.from({ length: 1001 }, () => records[0]!)), errno('EINVAL'));
    assert.equal(await log.count(), 6, 'a refused batch logs nothing');
    await log.stageAll();
    await log.measureMany(records.slice(6, 8));
    await log.suspendForKexec();
    await assert.rejects(log.deleteStaged(), errno('EPERM'));
    await log.completeKexec(records[0]!);
    assert.deepEqual(
      extended,
      [6, 2, 1],
      "the new kernel's boot_aggregate is extended, carried records are not",
    );
    const list = parseBinaryLog(await log.read('current')).records;
    assert.equal(list.length, 9);
    assert.deepEqual(
      list.slice(0, 8).map((r) => r.templateData),
      records.slice(0, 8).map((r) => r.templateData),
      'staged records first, then the current ones',
    );
    assert.deepEqual(await log.state(), { count: 9, staged: 0, freed: 0, suspended: false });
    // Concurrent changes from two connections: the mirror stays whole (one writer of its temp files).
    const other = await SocketKernelLog.connect(join(dir, 'ima.sock'));
    t.after(() => other.close());
    await Promise.all([log.measureMany(records.slice(0, 3)), other.measureMany(records.slice(3, 6))]);
    const mirrored = new Uint8Array(await readFile(join(dir, 'binary_runtime_measurements')));
    assert.deepEqual(mirrored, await log.read('current'));
  });
});

describe('SecurityfsKernelLog', () => {
  it('reads from an offset and writes A, D and N to the right files', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'securityfs-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const list = generateLog({ records: 3, seed: 2 }).bytes;
    await writeFile(join(dir, 'binary_runtime_measurements_sha256'), list);
    await writeFile(join(dir, 'binary_runtime_measurements_sha256_staged'), '');
    await writeFile(join(dir, 'runtime_measurements_count'), '3\n');
    const log = new SecurityfsKernelLog({ dir, bank: 'sha256' });

    assert.deepEqual(await log.read('current'), new Uint8Array(list));
    assert.deepEqual(await log.read('current', 7), new Uint8Array(list.subarray(7)));
    assert.equal(await log.count(), 3);

    await log.stageAll();
    assert.equal(await readFile(join(dir, 'binary_runtime_measurements_sha256_staged'), 'latin1'), 'A\n');
    await log.deleteStaged();
    assert.equal(await readFile(join(dir, 'binary_runtime_measurements_sha256_staged'), 'latin1'), 'D\n');
    await log.deleteOldest(2);
    const current = await readFile(join(dir, 'binary_runtime_measurements_sha256'), 'latin1');
    assert.ok(current.startsWith('2\n'), 'N is written over the start of the file, as one write()');
    await assert.rejects(log.deleteOldest(0), RangeError);
  });

  it('surfaces errno codes from the files (ENOENT without staging support)', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'securityfs-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const log = new SecurityfsKernelLog({ dir });
    await assert.rejects(log.stageAll(), errno('ENOENT'));
    await assert.rejects(log.read('current'), errno('ENOENT'));
  });
});
