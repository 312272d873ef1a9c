import { bytesEqual } from '../../lib/bytes/hex.ts';
import { ImastreamError } from '../../lib/errors.ts';
import type { HashAlg } from '../../lib/hash.ts';
import { errnoOf } from '../kernel-emulator/errors.ts';
import type { KernelLog } from '../kernel-emulator/kernel-log.ts';
import type { CutMode } from './config.ts';
import { crashPoint } from './crash.ts';
import { readList } from './kernel-source.ts';
import type { AgentPosition, CutJournal } from './position.ts';

/** Records compared when deciding where the kernel's list starts (see {@link locateListStart}). */
const COMPARE_RECORDS = 8;

/** What the cut needs from the agent; every call runs under the agent's one lock. */
export interface CutHost {
  readonly kernel: KernelLog;
  readonly digestAlg: HashAlg;
  position(): AgentPosition;
  /** Saves the position with these changes (atomic, fsync'd). */
  update(change: Partial<AgentPosition>): void;
  /** Reads, archives (fsync), produces (broker ack) and saves past everything the cursor can read. */
  readAll(): Promise<void>;
  /**
   * Quotes until a quote covers [0, from); sends it and the SnapshotEvent (at `from`, or with
   * `atQuote` at the quote's own seq); returns the cut's seq and quoteId.
   */
  quoteAtCut(from: number, atQuote: boolean): Promise<{ seq: number; quoteId: string }>;
  /** Archived raw records [from, to). */
  archived(from: number, to: number): Uint8Array[];
}

/**
 * The agent's side of Linux 7.2 staging (DOMAIN §3.4), in the fixed order that makes a kill -9
 * at any step harmless: read (A then the _staged list; or the N oldest of the current list),
 * archive with fsync, produce and wait for the broker's ack, quote at the cut, save the cut
 * journal, and only then delete in the kernel (D, or N). The journal in the position file
 * (position.ts, CutJournal) and the kernel's own lists tell a restarted agent where it was;
 * {@link recover} finishes or abandons the cut.
 *
 * The kernel is trusted for nothing but holding records until they are deleted: which records a
 * list holds is checked against the archive before anything is deleted or skipped.
 */
export class LogCutter {
  constructor(
    private readonly host: CutHost,
    private readonly mode: CutMode,
  ) {}

  /** Runs one cut of the configured flavour from wherever the journal says it stands. */
  async cut(): Promise<void> {
    if (this.mode === 'stage') await this.stageCut();
    else if (this.mode === 'delete') await this.deleteCut();
  }

  /** At start: finishes a cut found in flight (journal and kernel state). */
  async recover(): Promise<void> {
    const { cut } = this.host.position();
    const staged = (await this.host.kernel.read('staged')).byteLength > 0;
    if (cut === null) {
      if (staged) {
        throw new ImastreamError(
          'IMS_AGENT_KERNEL_STATE',
          'a staged list exists but no cut of this agent was in flight: another process staged the log',
        );
      }
      return;
    }
    if (cut.flavour === 'delete') {
      await this.finishDelete(cut);
      return;
    }
    if (cut.phase === 'intent' && !staged) {
      // A was never written: nothing happened in the kernel.
      this.host.update({ cut: null });
      return;
    }
    await this.stageCut();
  }

  /** Stage flavour, resumable at every phase. */
  private async stageCut(): Promise<void> {
    const host = this.host;
    let cut = host.position().cut;
    if (cut === null) {
      cut = journal('stage', 'intent');
      host.update({ cut });
      crashPoint('cut-begin');
    }
    if (cut.phase === 'intent') {
      // A may have been refused (EBUSY: someone reading) on an earlier try: write it only if
      // nothing is staged yet.
      if ((await host.kernel.read('staged')).byteLength === 0) {
        await this.kernelCall('A', () => host.kernel.stageAll());
      }
      crashPoint('cut-staged');
      // The old current list is now the staged list, byte for byte: the cursor moves with it.
      const pos = host.position();
      cut = { ...cut, phase: 'staged' };
      host.update({ cut, cursor: pos.cursor === 'current' ? 'staged' : pos.cursor });
    }
    if (cut.phase === 'staged') {
      await host.readAll();
      const pos = host.position();
      if (pos.cursor !== 'current' || pos.cut === null) {
        throw new ImastreamError('IMS_AGENT_KERNEL_STATE', 'the staged list was not read to its end');
      }
      const cutSeq = pos.cut.cutSeq;
      const { quoteId } = await host.quoteAtCut(cutSeq, false);
      crashPoint('cut-quoted');
      cut = { ...pos.cut, phase: 'quoted', cutSeq, quoteId };
      host.update({ cut });
      crashPoint('cut-journaled');
    }
    const staged = (await host.kernel.read('staged')).byteLength > 0;
    if (staged) {
      await this.checkStaged(cut);
      await this.kernelCall('D', () => host.kernel.deleteStaged());
    }
    crashPoint('cut-deleted');
    host.update({ listBase: cut.cutSeq, cut: null });
  }

  /** Delete-N flavour: everything read is archived and acked, then quoted, journaled, freed. */
  private async deleteCut(): Promise<void> {
    const host = this.host;
    const pending = host.position().cut;
    // N refused on an earlier try (EBUSY): finish that cut rather than quote a new one.
    if (pending !== null && pending.flavour === 'delete' && pending.phase === 'quoted') {
      await this.finishDelete(pending);
      return;
    }
    crashPoint('cut-begin');
    await host.readAll();
    const pos = host.position();
    if (pos.cursorSeq <= pos.listBase || pos.cursor !== 'current' || pos.cursorSeq !== pos.nextSeq) return;
    // N is chosen at the quote's own seq, so the cut and its closing quote are the same point
    // (every record below it was archived and acknowledged: a quote is placed within what was read).
    const { seq: cutSeq, quoteId } = await host.quoteAtCut(pos.listBase + 1, true);
    crashPoint('cut-quoted');
    const n = cutSeq - pos.listBase;
    const cutBytes = await this.headBytes(n);
    const cut: CutJournal = { ...journal('delete', 'quoted'), cutSeq, n, cutBytes, quoteId };
    host.update({ cut });
    crashPoint('cut-journaled');
    await this.finishDelete(cut);
  }

  /** Applies N unless the kernel already did (decided by comparing its list with the archive). */
  private async finishDelete(cut: CutJournal): Promise<void> {
    const host = this.host;
    const pos = host.position();
    const start = await this.locateListStart([pos.listBase, cut.cutSeq]);
    if (start === pos.listBase && cut.n === 0) {
      // A staged cut interrupted by a kexec before D: the records stayed; cut them again later.
      host.update({ cut: null });
      return;
    }
    if (start === pos.listBase) {
      await this.kernelCall(`${cut.n}`, () => host.kernel.deleteOldest(cut.n));
    }
    crashPoint('cut-deleted');
    const after = host.position();
    // The cursor past the cut moves back by the freed bytes; a cursor reset by a kexec (offset
    // 0 at listBase) restarts at the new head.
    const moved =
      after.cursor === 'current' && after.cursorSeq >= cut.cutSeq && after.logOffset >= cut.cutBytes
        ? { logOffset: after.logOffset - cut.cutBytes }
        : { logOffset: 0, cursorSeq: cut.cutSeq, cursor: 'current' as const };
    host.update({ ...moved, listBase: cut.cutSeq, cut: null });
  }

  /** Bytes of the first `n` records of the current list (checked against the archive). */
  private async headBytes(n: number): Promise<number> {
    const pos = this.host.position();
    const { records } = await readList(this.host.kernel, 'current', 0, this.host.digestAlg);
    const archived = this.host.archived(pos.listBase, pos.listBase + n);
    const head = records.slice(0, n);
    if (
      head.length !== n ||
      archived.length !== n ||
      !head.every((r, i) => bytesEqual(r.raw, archived[i] as Uint8Array))
    ) {
      throw new ImastreamError(
        'IMS_AGENT_KERNEL_STATE',
        `the current list does not start with the ${n} archived records of the cut`,
        {
          details: { listBase: pos.listBase, n },
        },
      );
    }

    return head.reduce((sum, r) => sum + r.raw.byteLength, 0);
  }

  /** The staged list about to be freed must be exactly the archived records [listBase, cutSeq). */
  private async checkStaged(cut: CutJournal): Promise<void> {
    const pos = this.host.position();
    const { records } = await readList(this.host.kernel, 'staged', 0, this.host.digestAlg);
    const archived = this.host.archived(pos.listBase, cut.cutSeq);
    const same =
      records.length === cut.cutSeq - pos.listBase &&
      archived.length === records.length &&
      records.every((r, i) => bytesEqual(r.raw, archived[i] as Uint8Array));
    if (!same) {
      throw new ImastreamError(
        'IMS_AGENT_KERNEL_STATE',
        'the staged list is not the archived records of the cut',
        {
          details: { listBase: pos.listBase, cutSeq: cut.cutSeq, staged: records.length },
        },
      );
    }
  }

  /**
   * Which of the candidate seqs the kernel's current list starts at: its first records are
   * compared with the archived records at each candidate. A list that fits none, or several, is
   * an error: guessing would skip or repeat records.
   */
  async locateListStart(candidates: readonly number[]): Promise<number> {
    const { records } = await readList(this.host.kernel, 'current', 0, this.host.digestAlg);
    const head = records.slice(0, COMPARE_RECORDS);
    // An empty list: only a completed cut (or a cut of everything) leaves it empty.
    if (head.length === 0) return Math.max(...candidates);
    const fits: number[] = [];
    const unknown: number[] = [];
    for (const seq of new Set(candidates)) {
      const archived = this.host.archived(seq, seq + head.length);
      if (archived.length === 0) unknown.push(seq);
      else if (archived.every((raw, i) => bytesEqual(raw, (head[i] as { raw: Uint8Array }).raw)))
        fits.push(seq);
    }
    // Records past the archive (never read) cannot be compared: such a candidate is the answer
    // only when no candidate with archived records fits.
    const found = fits.length > 0 ? fits : unknown;
    if (found.length !== 1) {
      throw new ImastreamError(
        'IMS_AGENT_KERNEL_STATE',
        `the kernel's list starts at none or several of seqs ${candidates.join(', ')}`,
        { details: { candidates: [...candidates], fits, unknown } },
      );
    }

    return found[0] as number;
  }

  private async kernelCall(command: string, call: () => Promise<void>): Promise<void> {
    try {
      await call();
    } catch (err) {
      throw new ImastreamError(
        'IMS_AGENT_CUT_FAILED',
        `the kernel refused "${command}": ${(err as Error).message}`,
        {
          cause: err,
          details: { errno: errnoOf(err) },
          canRetry: errnoOf(err) === 'EBUSY',
        },
      );
    }
  }
}

function journal(flavour: CutJournal['flavour'], phase: CutJournal['phase']): CutJournal {
  return { flavour, phase, cutSeq: 0, n: 0, cutBytes: 0, quoteId: null };
}
