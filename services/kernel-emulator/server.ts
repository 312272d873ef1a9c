import { rename, writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { isHashAlg } from '../../lib/hash.ts';
import { EmulatorKernelLog } from './emulator-log.ts';
import { errnoOf, KernelFileError } from './errors.ts';
import type { EmulatedKernel, Measurement } from './kernel.ts';
import {
  type KernelStateView,
  MAX_BATCH,
  MAX_LINE,
  type Request,
  type Response,
  type WireMeasurement,
} from './protocol.ts';

export interface EmulatorServerOptions {
  /** Unix socket path the agent connects to. */
  socketPath: string;
  /** When set, the files are rewritten there after every change, for `cat` and `xxd` in demos. */
  mirrorDir?: string;
  /** Called for every measurement (e.g. to extend a swtpm PCR the way the kernel extends the TPM). */
  onMeasure?: (m: Measurement) => Promise<void>;
  /**
   * Called once for a batch (`measureMany`), after the records are in the list, like the kernel
   * which appends a record before extending it; falls back to onMeasure per record.
   */
  onMeasureMany?: (ms: readonly Measurement[]) => Promise<void>;
}

/**
 * Serves one {@link EmulatedKernel} to other processes over a Unix socket (see protocol.ts).
 * Each connection is one owner for the open rules; its files are closed when it goes away.
 */
export class EmulatorServer {
  private server: Server | undefined;
  private connections = 0;
  private mirroring: Promise<void> = Promise.resolve();
  private readonly sockets = new Set<Socket>();

  constructor(
    readonly kernel: EmulatedKernel,
    private readonly opts: EmulatorServerOptions,
  ) {}

  async listen(): Promise<void> {
    const server = createServer((socket) => this.serve(socket));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.opts.socketPath, () => resolve());
    });
    await this.mirror();
  }

  async close(): Promise<void> {
    const server = this.server;
    if (server === undefined) return;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const socket of this.sockets) socket.destroy();
    await closed;
  }

  private serve(socket: Socket): void {
    const owner = `conn-${++this.connections}`;
    this.sockets.add(socket);
    const fds = new Set<number>();
    let pending = '';
    let queue = Promise.resolve();
    socket.on('data', (chunk) => {
      pending += chunk.toString('utf8');
      if (pending.length > MAX_LINE) socket.destroy();
      let nl = pending.indexOf('\n');
      while (nl >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        queue = queue
          .then(() => this.answer(line, owner, fds))
          .then((r) => void socket.write(`${JSON.stringify(r)}\n`));
        nl = pending.indexOf('\n');
      }
    });
    socket.on('close', () => {
      this.sockets.delete(socket);
      for (const fd of fds) this.kernel.close(fd);
    });
    socket.on('error', () => socket.destroy());
  }

  private async answer(line: string, owner: string, fds: Set<number>): Promise<Response> {
    let id = 0;
    try {
      const req = JSON.parse(line) as Request;
      id = typeof req.id === 'number' ? req.id : 0;
      const result = await this.dispatch(req, owner, fds);
      return { id, ok: true, result };
    } catch (err) {
      const code = errnoOf(err) ?? 'EINVAL';
      return { id, ok: false, code, message: err instanceof Error ? err.message : String(err) };
    }
  }

  private async dispatch(req: Request, owner: string, fds: Set<number>): Promise<unknown> {
    const bank = 'bank' in req && req.bank !== undefined && isHashAlg(req.bank) ? req.bank : undefined;
    const log = new EmulatorKernelLog(this.kernel, { owner, bank });
    switch (req.op) {
      case 'read':
        return Buffer.from(await log.read(req.which, req.fromOffset ?? 0)).toString('base64');
      case 'count':
        return log.count();
      case 'state':
        return this.state();
      case 'open': {
        const fd = this.kernel.open(owner, req.which, req.mode);
        fds.add(fd);
        return fd;
      }
      case 'close':
        fds.delete(req.fd);
        this.kernel.close(req.fd);
        return undefined;
      default:
        return this.mutate(req, log);
    }
  }

  /** Operations that change the lists; the mirror is refreshed after each. */
  private async mutate(req: Request, log: EmulatorKernelLog): Promise<undefined> {
    if (req.op === 'stageAll') await log.stageAll();
    else if (req.op === 'deleteStaged') await log.deleteStaged();
    else if (req.op === 'deleteOldest') await log.deleteOldest(req.n);
    else if (req.op === 'suspendForKexec') this.kernel.suspendForKexec();
    else if (req.op === 'measureMany') await this.measureMany(req.records);
    else if (req.op === 'measure' || req.op === 'completeKexec') {
      const m = measurementOf(req);
      if (req.op === 'measure') this.kernel.measure(m);
      else this.kernel.completeKexec(m);
      if (this.opts.onMeasure !== undefined) await this.opts.onMeasure(m);
      else await this.opts.onMeasureMany?.([m]);
    } else throw new KernelFileError('EINVAL', `unknown operation ${(req as { op?: unknown }).op}`);
    await this.mirror();

    return undefined;
  }

  /** A batch of measurements: checked whole before any is logged, then extended in one call. */
  private async measureMany(records: unknown): Promise<void> {
    if (!Array.isArray(records) || records.length > MAX_BATCH)
      throw new KernelFileError('EINVAL', `measureMany needs at most ${MAX_BATCH} records`);
    const ms = records.map((r) => measurementOf(r as WireMeasurement));
    for (const m of ms) this.kernel.measure(m);
    if (this.opts.onMeasureMany !== undefined) await this.opts.onMeasureMany(ms);
    else for (const m of ms) await this.opts.onMeasure?.(m);
  }

  private state(): KernelStateView {
    const k = this.kernel;
    return { count: k.count(), staged: k.stagedCount(), freed: k.freedCount(), suspended: k.isSuspended() };
  }

  /** Writes the files (write to a temporary name, then rename) so a reader never sees half a file. */
  /**
   * Mirrors are written one at a time: connections are served concurrently, and two writers of
   * the same temporary name would rename each other's file away (ENOENT).
   */
  private mirror(): Promise<void> {
    const next = this.mirroring.then(() => this.writeMirror());
    this.mirroring = next.catch(() => undefined);
    return next;
  }

  private async writeMirror(): Promise<void> {
    const dir = this.opts.mirrorDir;
    if (dir === undefined) return;
    const files: [string, Uint8Array | string][] = [
      ['runtime_measurements_count', `${this.kernel.count()}\n`],
    ];
    for (const bank of this.kernel.banks) {
      const base = bank === 'sha1' ? 'binary_runtime_measurements' : `binary_runtime_measurements_${bank}`;
      files.push(
        [base, this.kernel.render('current', bank)],
        [`${base}_staged`, this.kernel.render('staged', bank)],
      );
    }
    for (const [name, content] of files) {
      await writeFile(join(dir, `.${name}.tmp`), content);
      await rename(join(dir, `.${name}.tmp`), join(dir, name));
    }
  }
}

function measurementOf(req: {
  pcr: number;
  templateName: string;
  templateData: string;
  violation?: boolean;
}) {
  const ok =
    Number.isInteger(req.pcr) && typeof req.templateName === 'string' && typeof req.templateData === 'string';
  if (!ok) throw new KernelFileError('EINVAL', 'measurement needs pcr, templateName, templateData');

  return {
    pcr: req.pcr,
    templateName: req.templateName,
    templateData: new Uint8Array(Buffer.from(req.templateData, 'base64')),
    violation: req.violation === true,
  };
}
