import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseBinaryLog } from '../../../lib/ima/binary.ts';
import { generateLog } from '../../../lib/ima/synthetic.ts';
import { EmulatedKernel, type Measurement } from '../../../services/kernel-emulator/kernel.ts';

const { records } = generateLog({ records: 12, seed: 5 });

function booted(n = 5, opts: ConstructorParameters<typeof EmulatedKernel>[0] = {}): EmulatedKernel {
  const k = new EmulatedKernel(opts);
  for (const r of records.slice(0, n)) k.measure(r);
  return k;
}

/** Event names (n-ng, without the NUL) of a rendered binary list, to see which records it holds. */
function names(bytes: Uint8Array): string[] {
  const { records: parsed, problems } = parseBinaryLog(bytes);
  assert.deepEqual(problems, []);
  return parsed.map((r) => {
    const d = new DataView(r.templateData.buffer, r.templateData.byteOffset);
    const digestLen = d.getUint32(0, true);
    const nameLen = d.getUint32(4 + digestLen, true);
    return Buffer.from(r.templateData.subarray(8 + digestLen, 8 + digestLen + nameLen - 1)).toString();
  });
}

function expectErrno(fn: () => unknown, code: string): void {
  assert.throws(fn, (err: unknown) => (err as { code?: string }).code === code);
}

/** One owner's write of a command, with open and close around it, like `echo X > file`. */
function echo(k: EmulatedKernel, list: 'current' | 'staged', text: string, owner = 'agent'): void {
  const fd = k.open(owner, list, 'w');
  try {
    k.write(fd, `${text}\n`);
  } finally {
    k.close(fd);
  }
}

describe('EmulatedKernel: rendering and counts', () => {
  it('renders the binary list the parser reads back, per bank', () => {
    const k = booted(5, { banks: ['sha256'] });
    const sha1 = parseBinaryLog(k.render('current'));
    assert.equal(sha1.records.length, 5);
    assert.deepEqual(sha1.records[3]!.templateData, records[3]!.templateData);
    const sha256 = parseBinaryLog(k.render('current', 'sha256'), { digestAlg: 'sha256' });
    assert.equal(sha256.records[0]!.templateDigest.byteLength, 32);
    assert.equal(names(k.render('current'))[0], 'boot_aggregate');
    assert.equal(k.count(), 5);
  });

  it('logs a violation with an all-zero digest', () => {
    const k = new EmulatedKernel();
    k.measure({ ...records[1]!, violation: true });
    const [rec] = parseBinaryLog(k.render('current')).records;
    assert.ok(rec!.templateDigest.every((b) => b === 0));
  });
});

describe('EmulatedKernel: open rules (many readers or one writer)', () => {
  it('lets many readers in together', () => {
    const k = booted();
    const a = k.open('p1', 'current', 'r');
    const b = k.open('p2', 'staged', 'r');
    assert.equal(k.read(a).byteLength > 0, true);
    k.close(a);
    k.close(b);
  });

  it('refuses a writer while anyone reads, and anyone else while a writer holds', () => {
    const k = booted();
    const r = k.open('reader', 'current', 'r');
    expectErrno(() => k.open('agent', 'staged', 'w'), 'EBUSY');
    k.close(r);
    const w = k.open('agent', 'staged', 'w');
    expectErrno(() => k.open('other', 'current', 'r'), 'EBUSY');
    expectErrno(() => k.open('other', 'staged', 'w'), 'EBUSY');
    const w2 = k.open('agent', 'current', 'w'); // the same writer may hold several interfaces
    k.close(w2);
    k.close(w);
    k.close(k.open('other', 'current', 'r'));
  });

  it('refuses reads on a write handle and closed handles', () => {
    const k = booted();
    const w = k.open('agent', 'staged', 'w');
    expectErrno(() => k.read(w), 'EBADF');
    k.close(w);
    expectErrno(() => k.close(w), 'EBADF');
  });
});

describe('EmulatedKernel: staging with prompt (A, D)', () => {
  it('A moves the whole current list to the staged list; D frees it', () => {
    const k = booted(5);
    echo(k, 'staged', 'A');
    assert.equal(k.count(), 0);
    assert.equal(k.stagedCount(), 5);
    k.measure(records[5]!);
    assert.equal(k.count(), 1);
    assert.equal(names(k.render('staged'))[0], 'boot_aggregate');
    echo(k, 'staged', 'D');
    assert.equal(k.stagedCount(), 0);
    assert.equal(k.freedCount(), 5);
    assert.notEqual(names(k.render('current'))[0], 'boot_aggregate');
    assert.equal(k.count(), 1);
  });

  it('A with a staged list present is EEXIST; D with nothing staged is ENOENT; junk is EINVAL', () => {
    const k = booted(3);
    expectErrno(() => echo(k, 'staged', 'D'), 'ENOENT');
    echo(k, 'staged', 'A');
    expectErrno(() => echo(k, 'staged', 'A'), 'EEXIST');
    expectErrno(() => echo(k, 'staged', 'X'), 'EINVAL');
    expectErrno(() => echo(k, 'staged', '3'), 'EINVAL');
  });
});

describe('EmulatedKernel: stage and delete N', () => {
  it('frees the oldest N; the list then no longer starts at boot_aggregate', () => {
    const k = booted(6);
    echo(k, 'current', '2');
    assert.equal(k.count(), 4);
    assert.deepEqual(parseBinaryLog(k.render('current')).records[0]!.templateData, records[2]!.templateData);
    assert.notEqual(names(k.render('current'))[0], 'boot_aggregate');
    echo(k, 'current', '4');
    assert.equal(k.count(), 0);
  });

  it('is ENOENT when fewer than N exist, EINVAL outside [1, ULONG_MAX-1]', () => {
    const k = booted(3);
    expectErrno(() => echo(k, 'current', '4'), 'ENOENT');
    assert.equal(k.count(), 3);
    for (const bad of ['0', '-1', '18446744073709551615', 'A', '1.5', '']) {
      expectErrno(() => echo(k, 'current', bad), 'EINVAL');
    }
  });

  it('is refused with ima_flush_htable', () => {
    const k = booted(3, { flushHtable: true });
    expectErrno(() => echo(k, 'current', '1'), 'EPERM');
    echo(k, 'staged', 'A'); // the prompt flavour still works
  });
});

describe('EmulatedKernel: kexec', () => {
  const newBootAggregate: Measurement = { ...records[0]! };

  it('marshals staged records before the current list, then appends a boot_aggregate', () => {
    const k = booted(4);
    echo(k, 'staged', 'A');
    for (const r of records.slice(4, 7)) k.measure(r);
    k.suspendForKexec();
    k.completeKexec(newBootAggregate);
    const carried = parseBinaryLog(k.render('current')).records;
    assert.equal(carried.length, 8);
    assert.deepEqual(
      carried.slice(0, 7).map((r) => r.templateData),
      records.slice(0, 7).map((r) => r.templateData),
    );
    assert.equal(names(k.render('current'))[7], 'boot_aggregate');
    assert.equal(k.stagedCount(), 0);
    assert.equal(k.count(), 8);
  });

  it('refuses stage, delete and measurements once suspended for kexec', () => {
    const k = booted(4);
    echo(k, 'staged', 'A');
    k.suspendForKexec();
    expectErrno(() => echo(k, 'staged', 'D'), 'EPERM');
    expectErrno(() => echo(k, 'staged', 'A'), 'EPERM');
    expectErrno(() => echo(k, 'current', '1'), 'EPERM');
    expectErrno(() => k.measure(records[5]!), 'EPERM');
    assert.equal(k.stagedCount(), 4);
  });

  it('drops open handles with the old kernel', () => {
    const k = booted(2);
    const fd = k.open('agent', 'staged', 'w');
    k.suspendForKexec();
    k.completeKexec(newBootAggregate);
    expectErrno(() => k.write(fd, 'A'), 'EBADF');
    k.close(k.open('other', 'current', 'w'));
  });
});
