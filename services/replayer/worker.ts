import { hasCode, ImastreamError } from '../../lib/errors.ts';
import type { HashAlg } from '../../lib/hash.ts';
import { decode } from '../shared/codec.ts';
import type { HandlerContext, ImsProducer, InMessage } from '../shared/kafka.ts';
import type { Logger } from '../shared/logger.ts';
import { checkKeyPart } from '../shared/redis.ts';
import { type ApplyResult, applyBatch } from './apply.ts';
import type { ReplayDoc } from './doc.ts';
import { byTopic, effectMessages } from './effects.ts';
import { MEASUREMENT_TYPES, type MeasurementEvent } from './events.ts';
import type { OutboxMessage, ReplayStore, StoredHost } from './store.ts';

/** Compare-and-set attempts per host per batch before the chunk is retried by the adapter. */
const CAS_ATTEMPTS = 5;

/** Counters for logs and benchmarks. */
export interface ReplayerStats {
  records: number;
  skipped: number;
  batches: number;
  conflicts: number;
}

export interface WorkerOptions {
  banks?: readonly HashAlg[];
  now?: () => number;
}

/**
 * The replayer's Kafka handler: per chunk (one partition), decode every message first (a bad one
 * fails the chunk before anything is written, and the adapter dead-letters it alone), group the
 * events by host, apply each host's events with one compare-and-set, then produce the effects and
 * clear the outboxes. The adapter commits the offsets only after this resolves.
 */
export class ReplayWorker {
  readonly stats: ReplayerStats = { records: 0, skipped: 0, batches: 0, conflicts: 0 };
  private readonly now: () => number;

  constructor(
    private readonly store: ReplayStore,
    private readonly producer: ImsProducer,
    private readonly logger: Logger,
    private readonly options: WorkerOptions = {},
  ) {
    this.now = options.now ?? Date.now;
  }

  readonly handleBatch = async (messages: InMessage[], _ctx: HandlerContext): Promise<void> => {
    const byHost = groupByHost(messages.map(decodeMeasurement));
    const outcomes = await Promise.all(
      [...byHost].map(([hostId, events]) => this.processHost(hostId, events)),
    );
    await this.produce(outcomes.flatMap((o) => o.messages));
    await Promise.all(
      outcomes.map((o) => (o.outboxId === null ? null : this.store.clearOutbox(o.hostId, o.outboxId))),
    );
    this.stats.batches++;
  };

  /** Applies one host's events; returns the messages to produce once every host is stored. */
  private async processHost(hostId: string, events: MeasurementEvent[]): Promise<HostOutcome> {
    for (let attempt = 1; attempt <= CAS_ATTEMPTS; attempt++) {
      const stored = (await this.store.load([hostId])).get(hostId)!;
      if (stored.outbox !== null) await this.flushOutbox(hostId, stored.outbox);
      const result = this.apply(hostId, stored, events);
      const outcome = await this.commit(hostId, stored, result);
      if (outcome !== null) return outcome;
      this.stats.conflicts++;
    }
    throw new ImastreamError('IMS_STATE_CONFLICT', `replay state of ${hostId} kept changing under us`, {
      details: { hostId },
      canRetry: true,
    });
  }

  /** Applies the events; stored state that cannot be read is treated as lost, not as bad input. */
  private apply(hostId: string, stored: StoredHost, events: MeasurementEvent[]): ApplyResult {
    const input = {
      hostId,
      pin: stored.pin,
      closed: stored.closed,
      events,
      now: this.now(),
      ...this.bankOption(),
    };
    if (stored.corrupt !== null)
      this.logger.error({ err: stored.corrupt, hostId }, 'replay state unreadable');
    try {
      return applyBatch({ ...input, doc: stored.doc });
    } catch (err) {
      if (!hasCode(err, 'IMS_REPLAY_BAD_STATE')) throw err;
      this.logger.error({ err, hostId }, 'replay state unreadable, starting over');
      return applyBatch({ ...input, doc: null });
    }
  }

  private bankOption(): { banks?: readonly HashAlg[] } {
    return this.options.banks === undefined ? {} : { banks: this.options.banks };
  }

  /** Stores a result; null when the compare-and-set lost (reload and apply again). */
  private async commit(hostId: string, stored: StoredHost, result: ApplyResult): Promise<HostOutcome | null> {
    const messages = effectMessages(result.effects);
    this.logEffects(hostId, result);
    if (!result.changed || result.doc === null) return { hostId, messages, outboxId: null };
    const doc: ReplayDoc = result.doc;
    const outbox =
      messages.length === 0 ? null : { id: `${doc.bootId}:${doc.nextSeq}:${this.now()}`, messages };
    const checkpoints = result.effects.flatMap((e) => (e.kind === 'checkpoint' ? [e] : []));
    if (!(await this.store.commit(hostId, stored.raw, doc, checkpoints, outbox))) return null;
    this.stats.records += result.applied;
    this.stats.skipped += result.skipped;

    return { hostId, messages, outboxId: outbox?.id ?? null };
  }

  private logEffects(hostId: string, result: ApplyResult): void {
    for (const e of result.effects) {
      if (e.kind === 'alert') this.logger.warn({ hostId, alert: e.alert }, 'alert raised');
      if (e.kind === 'checkpoint') this.logger.debug({ hostId, seq: e.checkpoint.seq }, 'checkpoint');
      if (e.kind === 'resend') this.logger.info({ hostId, request: e.request }, 'asking for a resend');
    }
  }

  /** Produces what a crashed run stored but may not have sent (duplicates carry the same ids). */
  private async flushOutbox(
    hostId: string,
    outbox: { id: string; messages: OutboxMessage[] },
  ): Promise<void> {
    this.logger.info(
      { hostId, outbox: outbox.id, messages: outbox.messages.length },
      'flushing stored effects',
    );
    await this.produce(outbox.messages);
    await this.store.clearOutbox(hostId, outbox.id);
  }

  private async produce(messages: readonly OutboxMessage[]): Promise<void> {
    await Promise.all([...byTopic(messages)].map(([topic, list]) => this.producer.send(topic, list)));
  }
}

interface HostOutcome {
  hostId: string;
  messages: OutboxMessage[];
  outboxId: string | null;
}

/**
 * Decodes one message of ima.measurements. Throws IMS_WIRE_* (dead letter) for anything
 * undecodable, oversized, of another record type, or with ids that cannot be Redis key parts.
 */
export function decodeMeasurement(m: InMessage): MeasurementEvent {
  if (m.value === null) throw new ImastreamError('IMS_WIRE_BAD_FRAME', 'message has no value');
  const decoded = decode(m.value);
  if (!MEASUREMENT_TYPES.has(decoded.schema)) {
    throw new ImastreamError(
      'IMS_WIRE_UNKNOWN_SCHEMA',
      `${decoded.schema} does not belong on ima.measurements`,
    );
  }
  const event = { type: decoded.schema, value: decoded.value } as MeasurementEvent;
  checkKeyPart('hostId', event.value.hostId);
  checkKeyPart('bootId', event.value.bootId);

  return event;
}

/** Each host's events in their partition order. */
export function groupByHost(events: readonly MeasurementEvent[]): Map<string, MeasurementEvent[]> {
  const out = new Map<string, MeasurementEvent[]>();
  for (const e of events) {
    const list = out.get(e.value.hostId) ?? [];
    list.push(e);
    out.set(e.value.hostId, list);
  }

  return out;
}
