import { closeSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { ImastreamError } from '../../lib/errors.ts';

/**
 * Where the agent is in one boot's log. Saved only after every record before `nextSeq` has been
 * archived (fsync'd) and acknowledged by the broker. A restarted agent resumes at `logOffset`
 * and learns from the broker's tail which records after `nextSeq` were acknowledged anyway, so it
 * sends none twice.
 */
export interface AgentPosition {
  /** `<hostBootId>:<resetCount>`. */
  bootId: string;
  hostBootId: string;
  resetCount: number;
  /** Byte offset in the `cursor` list of the record at `cursorSeq` (always a record boundary). */
  logOffset: number;
  /** Absolute seq of the record at `logOffset`. */
  nextSeq: number;
  /** Whether this boot's BootEvent has been acknowledged. */
  bootAnnounced: boolean;
  updatedAt: number;
  /**
   * The boot whose archive holds this replay chain: the cold boot's id (a kexec renames the boot
   * but continues its seqs, its archive and its replay).
   */
  archiveBootId: string;
  /** Absolute seq of the first record the kernel still holds (staged list first, then current). */
  listBase: number;
  /** The list `logOffset` is in: `staged` while a staged list is being read during a cut. */
  cursor: ListCursor;
  /**
   * Absolute seq of the record at `logOffset`. Equal to `nextSeq`, except after a kexec: the new
   * kernel's list is read again from its start and records below `nextSeq` are only checked
   * against the archive, not sent.
   */
  cursorSeq: number;
  /** The cut in flight, if any (see {@link CutJournal}). */
  cut: CutJournal | null;
}

export type ListCursor = 'current' | 'staged';

/**
 * The cut journal: what a restarted agent needs to finish or abandon a cut (docs/agent.md).
 * - `intent` (stage flavour): saved just before `A` is written; a staged list found at restart
 *   with this phase is ours, and its records are the old current list at the saved offset.
 * - `staged`: `A` was written; the cursor walks the staged list, then the new current list.
 * - `quoted`: every record up to `cutSeq` is archived, acknowledged and covered by a quote
 *   (`quoteId`); only the kernel delete (`D`, or `N`) is left.
 */
export interface CutJournal {
  flavour: 'stage' | 'delete';
  phase: 'intent' | 'staged' | 'quoted';
  /** Absolute seq of the first record after the cut (phase `quoted`). */
  cutSeq: number;
  /** Delete flavour: N, the records freed, and their bytes at the head of the current list. */
  n: number;
  cutBytes: number;
  quoteId: string | null;
}

export const POSITION_FILE = 'position.json';

/** The position file in `stateDir`, or undefined on a first start. A damaged file is an error. */
export function loadPosition(stateDir: string): AgentPosition | undefined {
  const file = join(stateDir, POSITION_FILE);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ImastreamError('IMS_AGENT_IO', `cannot read ${file}`, { cause: err });
  }

  return parsePosition(text, file);
}

/** Checks every field: a position that is wrong in any way would skip or repeat records. */
export function parsePosition(text: string, file = POSITION_FILE): AgentPosition {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw corrupt(file, 'not JSON', err);
  }
  if (typeof raw !== 'object' || raw === null) throw corrupt(file, 'not an object');
  const p = raw as Record<string, unknown>;
  for (const key of ['logOffset', 'nextSeq', 'resetCount', 'updatedAt']) {
    if (!Number.isSafeInteger(p[key]) || (p[key] as number) < 0) throw corrupt(file, `bad ${key}`);
  }
  for (const key of ['bootId', 'hostBootId']) {
    if (typeof p[key] !== 'string' || p[key] === '') throw corrupt(file, `bad ${key}`);
  }
  if (typeof p.bootAnnounced !== 'boolean') throw corrupt(file, 'bad bootAnnounced');
  if (p.bootId !== bootIdOf(p.hostBootId as string, p.resetCount as number)) {
    throw corrupt(file, 'bootId does not match hostBootId and resetCount');
  }
  // Positions written before log cuts existed lack the cut fields: the whole boot is one list.
  const pos = {
    archiveBootId: p.bootId,
    listBase: 0,
    cursor: 'current',
    cursorSeq: p.nextSeq,
    cut: null,
    ...p,
  } as Record<string, unknown>;
  if (typeof pos.archiveBootId !== 'string' || pos.archiveBootId === '')
    throw corrupt(file, 'bad archiveBootId');
  for (const key of ['listBase', 'cursorSeq']) {
    if (!Number.isSafeInteger(pos[key]) || (pos[key] as number) < 0) throw corrupt(file, `bad ${key}`);
  }
  if (pos.cursor !== 'current' && pos.cursor !== 'staged') throw corrupt(file, 'bad cursor');
  const ordered =
    (pos.listBase as number) <= (pos.cursorSeq as number) &&
    (pos.cursorSeq as number) <= (p.nextSeq as number);
  if (!ordered) throw corrupt(file, 'listBase <= cursorSeq <= nextSeq does not hold');
  if (pos.cut !== null) checkJournal(pos.cut, file);

  return pos as unknown as AgentPosition;
}

function checkJournal(cut: unknown, file: string): void {
  if (typeof cut !== 'object' || cut === null) throw corrupt(file, 'bad cut');
  const c = cut as Record<string, unknown>;
  if (c.flavour !== 'stage' && c.flavour !== 'delete') throw corrupt(file, 'bad cut.flavour');
  if (c.phase !== 'intent' && c.phase !== 'staged' && c.phase !== 'quoted')
    throw corrupt(file, 'bad cut.phase');
  for (const key of ['cutSeq', 'n', 'cutBytes']) {
    if (!Number.isSafeInteger(c[key]) || (c[key] as number) < 0) throw corrupt(file, `bad cut.${key}`);
  }
  if (c.quoteId !== null && typeof c.quoteId !== 'string') throw corrupt(file, 'bad cut.quoteId');
}

/**
 * Writes the position atomically: a temp file is written and fsync'd, renamed over the old one,
 * then the directory is fsync'd so the rename itself survives a power cut.
 */
export function savePosition(stateDir: string, pos: AgentPosition): void {
  const file = join(stateDir, POSITION_FILE);
  writeFileAtomic(file, `${JSON.stringify(pos)}\n`);
}

export function writeFileAtomic(file: string, data: string | Uint8Array): void {
  const tmp = `${file}.tmp`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    if (typeof data === 'string') writeSync(fd, data);
    else writeSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
  fsyncDir(dirname(file));
}

export function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** The boot identity the pipeline keys replay state by. */
export function bootIdOf(hostBootId: string, resetCount: number): string {
  return `${hostBootId}:${resetCount}`;
}

/** A fresh position at the start of a boot. */
export function bootStart(hostBootId: string, resetCount: number, now = Date.now()): AgentPosition {
  return {
    bootId: bootIdOf(hostBootId, resetCount),
    hostBootId,
    resetCount,
    logOffset: 0,
    nextSeq: 0,
    bootAnnounced: false,
    updatedAt: now,
    archiveBootId: bootIdOf(hostBootId, resetCount),
    listBase: 0,
    cursor: 'current',
    cursorSeq: 0,
    cut: null,
  };
}

function corrupt(file: string, why: string, cause?: unknown): ImastreamError {
  return new ImastreamError('IMS_AGENT_STATE_CORRUPT', `${file}: ${why}`, { cause, details: { file } });
}
