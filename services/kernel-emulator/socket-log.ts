import { connect, type Socket } from 'node:net';
import type { HashAlg } from '../../lib/hash.ts';
import type { KernelLog, ListKind } from './kernel-log.ts';
import type { KernelStateView, Request, Response } from './protocol.ts';

type Body = Request extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never;

/** A failure the emulator reported, with its errno as `code` like a node:fs error. */
export class EmulatorError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'EmulatorError';
  }
}

/**
 * {@link KernelLog} of an emulator in another process (services/kernel-emulator/main.ts), over its
 * Unix socket. One connection is one owner for the open rules. Also exposes the control
 * operations a test or the demo needs (measure, kexec, open/close to hold a file).
 */
export class SocketKernelLog implements KernelLog {
  private nextId = 1;
  private buffer = '';
  private readonly waiting = new Map<number, (r: Response) => void>();

  private constructor(
    private readonly socket: Socket,
    private readonly bank: HashAlg | undefined,
  ) {
    socket.on('data', (chunk) => this.onData(chunk.toString('utf8')));
    socket.on('close', () => {
      for (const [id, resolve] of this.waiting)
        resolve({ id, ok: false, code: 'EPIPE', message: 'emulator went away' });
      this.waiting.clear();
    });
  }

  static async connect(socketPath: string, opts: { bank?: HashAlg } = {}): Promise<SocketKernelLog> {
    const socket = connect(socketPath);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });

    return new SocketKernelLog(socket, opts.bank);
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.socket.end(resolve));
  }

  async read(which: ListKind, fromOffset = 0): Promise<Uint8Array> {
    const data = (await this.call({ op: 'read', which, fromOffset, bank: this.bank })) as string;
    return new Uint8Array(Buffer.from(data, 'base64'));
  }

  async stageAll(): Promise<void> {
    await this.call({ op: 'stageAll' });
  }

  async deleteStaged(): Promise<void> {
    await this.call({ op: 'deleteStaged' });
  }

  async deleteOldest(n: number): Promise<void> {
    await this.call({ op: 'deleteOldest', n });
  }

  async count(): Promise<number> {
    return (await this.call({ op: 'count' })) as number;
  }

  /** Control: the emulated kernel measures something. */
  async measure(m: { pcr: number; templateName: string; templateData: Uint8Array; violation?: boolean }) {
    await this.call({ op: 'measure', ...m, templateData: Buffer.from(m.templateData).toString('base64') });
  }

  /** Control: the emulated kernel measures a batch (appended, then extended in one go). */
  async measureMany(
    ms: readonly { pcr: number; templateName: string; templateData: Uint8Array; violation?: boolean }[],
  ) {
    const records = ms.map((m) => ({ ...m, templateData: Buffer.from(m.templateData).toString('base64') }));
    await this.call({ op: 'measureMany', records });
  }

  /** Control: kexec execute (measurements suspended; stage and delete refused). */
  async suspendForKexec(): Promise<void> {
    await this.call({ op: 'suspendForKexec' });
  }

  /** Control: the new kernel is up; carried-over lists plus its own boot_aggregate. */
  async completeKexec(bootAggregate: { pcr: number; templateName: string; templateData: Uint8Array }) {
    await this.call({
      op: 'completeKexec',
      ...bootAggregate,
      templateData: Buffer.from(bootAggregate.templateData).toString('base64'),
    });
  }

  async state(): Promise<KernelStateView> {
    return (await this.call({ op: 'state' })) as KernelStateView;
  }

  /** Sends one request; resolves with its result or rejects with an {@link EmulatorError}. */
  async call(body: Body): Promise<unknown> {
    const id = this.nextId++;
    const response = await new Promise<Response>((resolve) => {
      this.waiting.set(id, resolve);
      this.socket.write(`${JSON.stringify({ ...body, id })}\n`);
    });
    if (!response.ok) throw new EmulatorError(response.code, response.message);

    return response.result;
  }

  private onData(text: string): void {
    this.buffer += text;
    let nl = this.buffer.indexOf('\n');
    while (nl >= 0) {
      const response = JSON.parse(this.buffer.slice(0, nl)) as Response;
      this.buffer = this.buffer.slice(nl + 1);
      this.waiting.get(response.id)?.(response);
      this.waiting.delete(response.id);
      nl = this.buffer.indexOf('\n');
    }
  }
}
