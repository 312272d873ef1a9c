import { type Consumer, Kafka, logLevel, type Producer } from 'kafkajs';
import type { HashAlg } from '../../lib/hash.ts';
import { templateDigestOf } from '../../lib/ima/digest.ts';
import { LEGACY_DIGEST_SIZE, LEGACY_IMA } from '../../lib/ima/record.ts';
import { decode, encode } from '../shared/codec.ts';
import type { LogRecord } from '../shared/records.ts';

/** What the relay does to the stream of one host, at one seq. */
export type TamperKind = 'change' | 'drop' | 'lose' | 'reorder' | 'insert';

export interface Tamper {
  kind: TamperKind;
  /** The record concerned (for reorder: it and the next one swap places). */
  seq: number;
}

/** What the relay actually did, for the demo's report. */
export interface TamperDone {
  kind: TamperKind;
  hostId: string;
  bootId: string;
  seq: number;
}

type Out = { key: string; value: Buffer };

/**
 * An attacker between an agent and the pipeline: consumes the agent's measurements from an
 * intercept topic and forwards them to ima.measurements, tampering with one place in flight.
 * - change: alters one record's template data and recomputes its template digest, so the record
 *   is self-consistent and only a quote can tell;
 * - drop: removes one record (and every resend of it);
 * - lose: removes the first copy of one record only, as a lost message would (resends pass);
 * - reorder: swaps the contents of two neighbouring records, seqs kept;
 * - insert: adds a forged record and renumbers every later record of the boot.
 * Everything else (BootEvent, QuoteTaken) passes unchanged. The verifier must alert the host.
 */
export class TamperRelay {
  readonly done: TamperDone[] = [];
  forwarded = 0;
  private readonly kafka: Kafka;
  private readonly from: string;
  private readonly to: string;
  private readonly tamper: Tamper;
  private consumer: Consumer | undefined;
  private producer: Producer | undefined;
  private held: LogRecord | undefined;

  constructor(brokers: string[], from: string, to: string, tamper: Tamper) {
    this.kafka = new Kafka({ clientId: 'imastream-demo-relay', brokers, logLevel: logLevel.NOTHING });
    this.from = from;
    this.to = to;
    this.tamper = tamper;
  }

  async start(): Promise<void> {
    this.producer = this.kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await this.producer.connect();
    this.consumer = this.kafka.consumer({ groupId: `imastream-relay-${this.from}`, sessionTimeout: 10_000 });
    const joined = new Promise<void>((resolve) =>
      this.consumer?.on(this.consumer.events.GROUP_JOIN, () => resolve()),
    );
    await this.consumer.connect();
    await this.consumer.subscribe({ topic: this.from, fromBeginning: true });
    await this.consumer.run({
      eachMessage: async ({ message }) => {
        if (message.value === null) return;
        const out = this.transform(message.key?.toString() ?? '', message.value);
        if (out.length === 0) return;
        await this.producer?.send({ topic: this.to, acks: -1, messages: out });
        this.forwarded += out.length;
      },
    });
    await joined;
  }

  async stop(): Promise<void> {
    await this.consumer?.disconnect().catch(() => undefined);
    await this.producer?.disconnect().catch(() => undefined);
  }

  /** The messages to forward for one consumed message. */
  transform(key: string, value: Buffer): Out[] {
    const decoded = decode(value);
    if (decoded.schema !== 'LogRecord') return [{ key, value }];
    const rec = decoded.value;
    const { kind, seq } = this.tamper;
    const send = (r: LogRecord): Out => ({ key, value: encode('LogRecord', r) });
    if (kind === 'change' && rec.seq === seq) return [send(this.note(changed(rec)))];
    if (kind === 'lose' && rec.seq === seq && !this.wasDone(rec)) {
      this.note(rec);
      return [];
    }
    if (kind === 'drop' && rec.seq === seq) {
      this.note(rec);
      return [];
    }
    if (kind === 'insert' && rec.seq >= seq) {
      const moved = { ...rec, seq: rec.seq + 1 };
      return rec.seq === seq && !this.wasDone(rec)
        ? [send(this.note(forged(rec))), send(moved)]
        : [send(moved)];
    }
    if (kind === 'reorder' && rec.seq === seq) {
      this.held = rec;
      return [];
    }
    if (kind === 'reorder' && rec.seq === seq + 1 && this.held !== undefined) {
      const first = this.held;
      this.held = undefined;
      this.note(first);
      return [send({ ...rec, seq }), send({ ...first, seq: seq + 1 })];
    }

    return [{ key, value }];
  }

  private wasDone(rec: LogRecord): boolean {
    return this.done.some((d) => d.bootId === rec.bootId);
  }

  private note(rec: LogRecord): LogRecord {
    this.done.push({ kind: this.tamper.kind, hostId: rec.hostId, bootId: rec.bootId, seq: this.tamper.seq });
    return rec;
  }
}

/** One byte of the file digest flipped; the template digest recomputed to match. */
export function changed(rec: LogRecord): LogRecord {
  const data = Buffer.from(rec.templateData);
  const le = rec.byteOrder !== 'BE';
  const firstField = data.length >= 4 ? (le ? data.readUInt32LE(0) : data.readUInt32BE(0)) : 0;
  const at =
    rec.templateName === LEGACY_IMA
      ? LEGACY_DIGEST_SIZE - 1
      : firstField > 0 && 4 + firstField <= data.length
        ? 3 + firstField
        : data.length - 1;
  data[at] = (data[at] ?? 0) ^ 0x01;

  return { ...rec, templateData: data, templateDigest: digestOf(rec, data) };
}

/** A plausible record the host never measured: the neighbour's data with a different name byte. */
export function forged(next: LogRecord): LogRecord {
  const data = Buffer.from(next.templateData);
  data[data.length - 2] = (data[data.length - 2] ?? 0) ^ 0x20;

  return { ...next, templateData: data, templateDigest: digestOf(next, data) };
}

function digestOf(rec: LogRecord, data: Buffer): Buffer {
  return Buffer.from(
    templateDigestOf({ templateName: rec.templateName, templateData: data }, rec.digestAlg as HashAlg),
  );
}
