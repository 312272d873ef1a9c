import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { TOPIC } from '../shared/topics.ts';
import { Manufacturer } from './manufacturer.ts';
import {
  crashed,
  type PipelineOptions,
  pipelineGroups,
  pipelineServices,
  type ServiceProcess,
  startGroupsAtEnd,
  startService,
  stopServices,
} from './services.ts';

/** The fleet-side processes of one demo or test run, started and stopped together. */
export class Pipeline {
  readonly services: ServiceProcess[];
  /** The CA whose EK certificates this pipeline's enroller trusts; give it to the fleet. */
  readonly manufacturer: Manufacturer;

  private constructor(services: ServiceProcess[], manufacturer: Manufacturer) {
    this.services = services;
    this.manufacturer = manufacturer;
  }

  /**
   * Starts the nonce service, two replayers and a quote-checker (`imastream …` child processes)
   * with their logs in `logDir`, their stream groups starting at the current end of the topics,
   * and gives the groups a moment to form.
   */
  static async start(
    runId: string,
    logDir: string,
    brokers: string[],
    opts: PipelineOptions & { env?: NodeJS.ProcessEnv; settleMs?: number } = {},
  ): Promise<Pipeline> {
    mkdirSync(logDir, { recursive: true });
    const groups = pipelineGroups(runId);
    await startGroupsAtEnd(brokers, [groups.replayer, groups.checker]);
    // Other runs' enrolment requests are not this enroller's to answer.
    await startGroupsAtEnd(brokers, [groups.enroller], [TOPIC.enrolRequests]);
    const manufacturer = await Manufacturer.create(join(logDir, 'manufacturer'));
    const withBrokers = { IMASTREAM_KAFKA_BROKERS: brokers.join(','), ...opts.env };
    const services = pipelineServices(runId, { trustStore: manufacturer.trustDir, ...opts }).map((s) =>
      startService(s.name, s.args, logDir, withBrokers),
    );
    await sleep(opts.settleMs ?? 3000);

    return new Pipeline(services, manufacturer);
  }

  /** Processes that exited on their own. */
  crashed(): string[] {
    return crashed(this.services);
  }

  async stop(): Promise<Record<string, number | null>> {
    return stopServices(this.services);
  }
}
