import { randomUUID } from 'node:crypto';
import { type Consumer, Kafka, logLevel } from 'kafkajs';
import { decode } from '../shared/codec.ts';
import type { Alert, Verdict } from '../shared/records.ts';

/** What the pipeline has said about one host. */
export interface HostFindings {
  verdicts: Verdict[];
  alerts: Alert[];
}

/**
 * Listens to ima.verdicts and ima.alerts (from now on, in a private group) and keeps what
 * concerns the hosts it watches. This is how the demo and the end-to-end tests see the outcome:
 * through the pipeline's own output topics, as a security team would.
 */
export class Observer {
  private readonly kafka: Kafka;
  private readonly hosts: Map<string, HostFindings>;
  private consumer: Consumer | undefined;

  constructor(brokers: string[], hostIds: readonly string[]) {
    this.kafka = new Kafka({ clientId: 'imastream-demo-observer', brokers, logLevel: logLevel.NOTHING });
    this.hosts = new Map(hostIds.map((h) => [h, { verdicts: [], alerts: [] }]));
  }

  async start(topics = { verdicts: 'ima.verdicts', alerts: 'ima.alerts' }): Promise<void> {
    this.consumer = this.kafka.consumer({
      groupId: `imastream-observer-${randomUUID()}`,
      sessionTimeout: 10_000,
    });
    const joined = new Promise<void>((resolve) =>
      this.consumer?.on(this.consumer.events.GROUP_JOIN, () => resolve()),
    );
    await this.consumer.connect();
    await this.consumer.subscribe({ topics: [topics.verdicts, topics.alerts], fromBeginning: false });
    await this.consumer.run({ eachMessage: async ({ message }) => this.take(message.value) });
    await joined;
  }

  async stop(): Promise<void> {
    await this.consumer?.disconnect().catch(() => undefined);
  }

  watch(hostId: string): void {
    if (!this.hosts.has(hostId)) this.hosts.set(hostId, { verdicts: [], alerts: [] });
  }

  findings(hostId: string): HostFindings {
    return this.hosts.get(hostId) ?? { verdicts: [], alerts: [] };
  }

  /** Closed shards of the host, newest last. */
  closed(hostId: string): Verdict[] {
    return this.findings(hostId).verdicts.filter((v) => v.status === 'CLOSED');
  }

  /** Whether closed shards of one boot cover records [0, records) of the host. */
  attested(hostId: string, records: number): boolean {
    return this.closed(hostId).some((v) => (v.endSeq ?? 0) >= records);
  }

  alerts(hostId: string, kind?: string): Alert[] {
    return this.findings(hostId).alerts.filter((a) => kind === undefined || a.kind === kind);
  }

  private take(value: Buffer | null): void {
    if (value === null) return;
    let decoded: ReturnType<typeof decode>;
    try {
      decoded = decode(value);
    } catch {
      return;
    }
    if (decoded.schema === 'Verdict') this.hosts.get(decoded.value.hostId)?.verdicts.push(decoded.value);
    if (decoded.schema === 'Alert') this.hosts.get(decoded.value.hostId)?.alerts.push(decoded.value);
  }
}
