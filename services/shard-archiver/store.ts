import {
  closeSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';

/** `<startSeq>-<endSeq>.imsshard`, the name the agent gives its files too. */
const SHARD_FILE = /^(\d{1,16})-(\d{1,16})\.imsshard$/;

/** One stored shard file of a boot. */
export interface StoredShard {
  startSeq: number;
  endSeq: number;
  path: string;
}

/**
 * The fleet's shard archive on disk: `<root>/<hostId>/<bootId>/<startSeq>-<endSeq>.imsshard`,
 * every file verified before it was stored (archiver.ts). Files are written to a temporary name,
 * fsync'd and renamed, so a crash never leaves a torn shard under a real name.
 *
 * Host and boot ids come from the network: they are percent-encoded (and a leading dot escaped),
 * so no id can name a path outside the root.
 */
export class ShardStore {
  readonly root: string;

  constructor(root: string) {
    this.root = root;
    mkdirSync(root, { recursive: true });
  }

  bootDir(hostId: string, bootId: string): string {
    return join(this.root, safeName(hostId), safeName(bootId));
  }

  pathOf(hostId: string, bootId: string, startSeq: number, endSeq: number): string {
    return join(this.bootDir(hostId, bootId), `${startSeq}-${endSeq}.imsshard`);
  }

  /** The boot's stored shards in chain order (by endSeq). */
  list(hostId: string, bootId: string): StoredShard[] {
    const dir = this.bootDir(hostId, bootId);
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const out: StoredShard[] = [];
    for (const name of names) {
      const m = SHARD_FILE.exec(name);
      if (m !== null) out.push({ startSeq: Number(m[1]), endSeq: Number(m[2]), path: join(dir, name) });
    }

    return out.sort((a, b) => a.endSeq - b.endSeq || a.startSeq - b.startSeq);
  }

  read(path: string): Uint8Array {
    return new Uint8Array(readFileSync(path));
  }

  /** Stores a verified file atomically (temporary name, fsync, rename, fsync of the folder). */
  put(hostId: string, bootId: string, startSeq: number, endSeq: number, file: Uint8Array): string {
    const dir = this.bootDir(hostId, bootId);
    mkdirSync(dir, { recursive: true });
    const path = this.pathOf(hostId, bootId, startSeq, endSeq);
    const tmp = `${path}.tmp`;
    const fd = openSync(tmp, 'w', 0o644);
    try {
      writeSync(fd, file);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
    const dirFd = openSync(dir, 'r');
    try {
      fsyncSync(dirFd);
    } finally {
      closeSync(dirFd);
    }

    return path;
  }
}

/** A file-name-safe form of an id: percent-encoded, and never `.`/`..` or hidden. */
export function safeName(id: string): string {
  return encodeURIComponent(id).replace(/^\./, '%2E');
}
