import { mkdirSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { crashed, pipelineServices, type ServiceProcess, startService, stopServices } from './services.ts';

/** The fleet-side processes of one demo or test run, started and stopped together. */
export class Pipeline {
  readonly services: ServiceProcess[];

  private constructor(services: ServiceProcess[]) {
    this.services = services;
  }

  /**
   * Starts the nonce service, two replayers and a quote-checker (`imastream …` child processes)
   * with their logs in `logDir`, and gives their consumer groups a moment to form.
   */
  static async start(
    runId: string,
    logDir: string,
    env: NodeJS.ProcessEnv,
    settleMs = 3000,
  ): Promise<Pipeline> {
    mkdirSync(logDir, { recursive: true });
    const services = pipelineServices(runId).map((s) => startService(s.name, s.args, logDir, env));
    await sleep(settleMs);

    return new Pipeline(services);
  }

  /** Processes that exited on their own. */
  crashed(): string[] {
    return crashed(this.services);
  }

  async stop(): Promise<Record<string, number | null>> {
    return stopServices(this.services);
  }
}
