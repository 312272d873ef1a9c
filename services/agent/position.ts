import { closeSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { ImastreamError } from '../../lib/errors.ts';

/**
 * Where the agent is in one boot's log. Saved only after every record before `nextSeq` has been
 * archived (fsync'd) and acknowledged by the broker, so a restarted agent resumes at `logOffset`
 * with `nextSeq` and re-sends at most the records that were read but not yet acknowledged.
 */
export interface AgentPosition {
  /** `<hostBootId>:<resetCount>`. */
  bootId: string;
  hostBootId: string;
  resetCount: number;
  /** Byte offset in the binary log of the first record not yet saved (always a record boundary). */
  logOffset: number;
  /** Absolute seq of the record at `logOffset`. */
  nextSeq: number;
  /** Whether this boot's BootEvent has been acknowledged. */
  bootAnnounced: boolean;
  updatedAt: number;
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

  return p as unknown as AgentPosition;
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
  };
}

function corrupt(file: string, why: string, cause?: unknown): ImastreamError {
  return new ImastreamError('IMS_AGENT_STATE_CORRUPT', `${file}: ${why}`, { cause, details: { file } });
}
