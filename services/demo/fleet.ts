import { Kafka, logLevel } from 'kafkajs';
import { SimHost } from './host.ts';
import type { LogSource } from './logs.ts';
import type { Manufacturer } from './manufacturer.ts';
import { type Tamper, TamperRelay } from './relay.ts';
import type { TrimSpec } from './trim.ts';
import type { WriterOptions } from './writer.ts';

export interface FleetHostSpec {
  hostId: string;
  source: LogSource;
  /** When set, the host's agent produces to an intercept topic and this relay tampers in flight. */
  tamper?: Tamper;
  /** AK key type (default rsa). */
  akAlg?: 'rsa' | 'rsapss' | 'ecc';
  /** Cut the host's log through the kernel emulator (demo --trim). */
  trim?: TrimSpec;
}

export interface FleetOptions {
  brokers: string[];
  baseDir: string;
  quoteIntervalS: number;
  writer: WriterOptions;
  agentEnv?: NodeJS.ProcessEnv;
  /** Gives every host's TPM a certified EK (the pipeline's, so its enroller trusts them). */
  manufacturer?: Manufacturer;
}

/** Simulated hosts, their relays, and the order to start and stop them in. */
export class Fleet {
  readonly hosts: SimHost[] = [];
  readonly relays = new Map<string, TamperRelay>();
  private readonly opts: FleetOptions;
  private stopped = false;

  private constructor(opts: FleetOptions) {
    this.opts = opts;
  }

  /** Starts every host's TPM, creates intercept topics and starts the relays (agents not yet). */
  static async create(specs: readonly FleetHostSpec[], opts: FleetOptions): Promise<Fleet> {
    const fleet = new Fleet(opts);
    const tampered = specs.filter((s) => s.tamper !== undefined);
    if (tampered.length > 0)
      await createTopics(
        opts.brokers,
        tampered.map((s) => interceptTopic(s.hostId)),
      );
    for (const spec of specs) {
      const measurementsTopic = spec.tamper === undefined ? undefined : interceptTopic(spec.hostId);
      const host = await SimHost.start(
        {
          hostId: spec.hostId,
          source: spec.source,
          measurementsTopic,
          brokers: opts.brokers.join(','),
          quoteIntervalS: opts.quoteIntervalS,
          akAlg: spec.akAlg,
          env: opts.agentEnv,
          trim: spec.trim,
        },
        opts.baseDir,
        opts.manufacturer,
      );
      fleet.hosts.push(host);
      if (spec.tamper !== undefined) {
        const relay = new TamperRelay(
          opts.brokers,
          interceptTopic(spec.hostId),
          'ima.measurements',
          spec.tamper,
        );
        await relay.start();
        fleet.relays.set(spec.hostId, relay);
      }
    }

    return fleet;
  }

  host(hostId: string): SimHost {
    const host = this.hosts.find((h) => h.hostId === hostId);
    if (host === undefined) throw new Error(`no host ${hostId}`);
    return host;
  }

  async startAgents(): Promise<void> {
    await Promise.all(this.hosts.map((h) => h.startAgent()));
  }

  /** Plays every host's log at once; resolves when all are written. */
  async play(): Promise<void> {
    await Promise.all(this.hosts.map((h) => h.play(this.opts.writer, () => this.stopped)));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.allSettled(this.hosts.map((h) => h.stop()));
    await Promise.allSettled([...this.relays.values()].map((r) => r.stop()));
  }
}

/** The topic a tampered host's agent is pointed at (`--measurements-topic`). */
export function interceptTopic(hostId: string): string {
  return `demo.intercept.${hostId}`;
}

async function createTopics(brokers: string[], topics: string[]): Promise<void> {
  const admin = new Kafka({ clientId: 'imastream-demo-admin', brokers, logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    await admin.createTopics({
      waitForLeaders: true,
      topics: topics.map((topic) => ({ topic, numPartitions: 1 })),
    });
  } finally {
    await admin.disconnect();
  }
}
