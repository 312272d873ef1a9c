/**
 * Recovery decisions of the cut protocol (services/agent/cut.ts) against the real emulated kernel
 * and a real record archive on disk. The end-to-end crash matrix is in
 * test/integration/agent-cut.test.ts; these pin the cases it reaches only by timing.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { hasCode } from '../../../lib/errors.ts';
import { encodeBinaryRecord } from '../../../lib/ima/encode.ts';
import { generateLog } from '../../../lib/ima/synthetic.ts';
import { RecordArchive } from '../../../services/agent/archive.ts';
import { type CutHost, LogCutter } from '../../../services/agent/cut.ts';
import { type AgentPosition, bootStart, type CutJournal } from '../../../services/agent/position.ts';
import { EmulatorKernelLog } from '../../../services/kernel-emulator/emulator-log.ts';
import { EmulatedKernel } from '../../../services/kernel-emulator/kernel.ts';

const base = mkdtempSync(join(tmpdir(), 'ims-cut-unit-'));
after(() => rmSync(base, { recursive: true, force: true }));
const { records } = generateLog({ records: 30, seed: 31 });
let n = 0;

/** A kernel that logged `logged` records, an archive holding the first `archived`, and a host over both. */
function setup(logged: number, archived: number, pos: Partial<AgentPosition>) {
  const kernel = new EmulatedKernel();
  for (const r of records.slice(0, logged)) kernel.measure(r);
  const archive = RecordArchive.open(join(base, `a${n++}`), { bootId: 'b:1', digestAlg: 'sha1' }, 0);
  archive.append(records.slice(0, archived).map((r) => encodeBinaryRecord(r, 'le')));
  archive.sync();
  let position: AgentPosition = { ...bootStart('b', 1, 1), nextSeq: archived, cursorSeq: archived, ...pos };
  const host: CutHost = {
    kernel: new EmulatorKernelLog(kernel),
    digestAlg: 'sha1',
    position: () => position,
    update: (change) => {
      position = { ...position, ...change };
    },
    readAll: async () => assert.fail('recovery of this phase reads nothing'),
    quoteAtCut: async () => assert.fail('recovery of this phase quotes nothing'),
    archived: (from, to) => archive.read(from, to),
  };
  return { kernel, host, position: () => position };
}

function bytesOf(from: number, to: number): number {
  return records.slice(from, to).reduce((sum, r) => sum + encodeBinaryRecord(r, 'le').byteLength, 0);
}

const deleteJournal = (cutSeq: number, n: number): CutJournal => ({
  flavour: 'delete',
  phase: 'quoted',
  cutSeq,
  n,
  cutBytes: bytesOf(0, n),
  quoteId: 'q-1',
});

describe('LogCutter.recover', () => {
  it('delete-N journaled but not applied: applies N once, moves the cursor back by the freed bytes', async () => {
    const cut = deleteJournal(12, 12);
    const t = setup(20, 20, { cut, logOffset: bytesOf(0, 20) });
    await new LogCutter(t.host, 'delete').recover();
    assert.equal(t.kernel.freedCount(), 12);
    assert.equal(t.kernel.count(), 8);
    assert.equal(t.position().listBase, 12);
    assert.equal(t.position().logOffset, bytesOf(12, 20));
    assert.equal(t.position().cut, null);
  });

  it('delete-N already applied before the crash: not applied twice', async () => {
    const cut = deleteJournal(12, 12);
    const t = setup(20, 20, { cut, logOffset: bytesOf(0, 20) });
    await new EmulatorKernelLog(t.kernel).deleteOldest(12);
    await new LogCutter(t.host, 'delete').recover();
    assert.equal(t.kernel.freedCount(), 12, 'the kernel freed 12, not 24');
    assert.equal(t.position().listBase, 12);
    assert.equal(t.position().cut, null);
  });

  it('delete-N applied and nothing read past the cut: the unread head decides', async () => {
    const cut = deleteJournal(12, 12);
    const t = setup(14, 12, { cut, logOffset: bytesOf(0, 12) });
    await new EmulatorKernelLog(t.kernel).deleteOldest(12);
    await new LogCutter(t.host, 'delete').recover();
    assert.equal(t.kernel.freedCount(), 12);
    assert.equal(t.position().logOffset, 0);
  });

  it('a list that is neither the archive at listBase nor at the cut is refused', async () => {
    const cut = deleteJournal(12, 12);
    const t = setup(20, 20, { cut, logOffset: bytesOf(0, 20) });
    await new EmulatorKernelLog(t.kernel).deleteOldest(5);
    await assert.rejects(new LogCutter(t.host, 'delete').recover(), (err: Error) =>
      hasCode(err, 'IMS_AGENT_KERNEL_STATE'),
    );
    assert.equal(t.kernel.freedCount(), 5, 'nothing more freed');
  });

  it('a staged list nobody journaled is refused, not guessed', async () => {
    const t = setup(10, 10, {});
    await new EmulatorKernelLog(t.kernel).stageAll();
    await assert.rejects(new LogCutter(t.host, 'stage').recover(), (err: Error) =>
      hasCode(err, 'IMS_AGENT_KERNEL_STATE'),
    );
    assert.equal(t.kernel.stagedCount(), 10, 'the staged records are kept');
  });

  it('stage intent without a staged list: A never ran, the journal is dropped', async () => {
    const t = setup(10, 10, {
      cut: { flavour: 'stage', phase: 'intent', cutSeq: 0, n: 0, cutBytes: 0, quoteId: null },
    });
    await new LogCutter(t.host, 'stage').recover();
    assert.equal(t.position().cut, null);
    assert.equal(t.kernel.count(), 10);
  });

  it('stage quoted: D only when the staged list is exactly the archived records of the cut', async () => {
    const journal: CutJournal = {
      flavour: 'stage',
      phase: 'quoted',
      cutSeq: 10,
      n: 0,
      cutBytes: 0,
      quoteId: 'q',
    };
    const ok = setup(10, 10, { cut: journal, logOffset: 0 });
    await new EmulatorKernelLog(ok.kernel).stageAll();
    await new LogCutter(ok.host, 'stage').recover();
    assert.equal(ok.kernel.stagedCount(), 0);
    assert.equal(ok.kernel.freedCount(), 10);
    assert.equal(ok.position().listBase, 10);

    const short = setup(10, 9, { cut: { ...journal, cutSeq: 9 }, logOffset: 0 });
    await new EmulatorKernelLog(short.kernel).stageAll();
    await assert.rejects(new LogCutter(short.host, 'stage').recover(), (err: Error) =>
      hasCode(err, 'IMS_AGENT_KERNEL_STATE'),
    );
    assert.equal(short.kernel.stagedCount(), 10, 'a record the archive lacks is never freed');
  });

  it('a busy file refuses A with a retryable error; the journal keeps the intent, nothing is staged', async () => {
    const t = setup(10, 10, { logOffset: bytesOf(0, 10) });
    const reader = t.kernel.open('cat', 'staged', 'r');
    await assert.rejects(
      new LogCutter(t.host, 'stage').cut(),
      (err: Error & { canRetry?: boolean }) => hasCode(err, 'IMS_AGENT_CUT_FAILED') && err.canRetry === true,
    );
    t.kernel.close(reader);
    assert.equal(t.position().cut?.phase, 'intent');
    assert.equal(t.kernel.stagedCount(), 0);
    assert.equal(t.kernel.count(), 10);
  });

  it('a busy file refuses N; the next try finishes the journaled cut instead of quoting a new one', async () => {
    const cut = deleteJournal(12, 12);
    const t = setup(20, 20, { cut, logOffset: bytesOf(0, 20) });
    const reader = t.kernel.open('cat', 'current', 'r');
    await assert.rejects(new LogCutter(t.host, 'delete').cut(), (err: Error) =>
      hasCode(err, 'IMS_AGENT_CUT_FAILED'),
    );
    assert.equal(t.kernel.freedCount(), 0);
    t.kernel.close(reader);
    await new LogCutter(t.host, 'delete').cut();
    assert.equal(t.kernel.freedCount(), 12);
    assert.equal(t.position().listBase, 12);
    assert.equal(t.position().cut, null);
  });
});
