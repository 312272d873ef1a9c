/**
 * Graceful shutdown on SIGTERM/SIGINT: run the closers in order (consumers first, so they finish
 * their chunk and commit, then producers, then Redis), then exit. A second signal, or closers
 * that take longer than the grace period, end the process at once with status 1.
 */
import type { Logger } from './logger.ts';

export type Closer = () => Promise<unknown>;

/** Kubernetes waits 30 s after SIGTERM by default; finish before it sends SIGKILL. */
export const GRACE_MS = 25_000;

/** Runs `closers` in order, logging (not throwing) failures; resolves when all ran. */
export async function closeAll(logger: Logger, closers: Closer[]): Promise<void> {
  for (const close of closers) {
    try {
      await close();
    } catch (err) {
      logger.error({ err }, 'shutdown step failed');
    }
  }
}

/** Installs the signal handlers; returns a function that removes them (for tests). */
export function stopOnSignals(logger: Logger, closers: Closer[], graceMs = GRACE_MS): () => void {
  let closing = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (closing) {
      logger.warn({ signal }, 'second signal, exiting now');
      process.exit(1);
    }
    closing = true;
    logger.info({ signal }, 'stopping');
    const timer = setTimeout(() => {
      logger.error({ graceMs }, 'shutdown took too long, exiting');
      process.exit(1);
    }, graceMs);
    timer.unref();
    void closeAll(logger, closers).then(() => {
      logger.info('stopped');
      process.exit(0);
    });
  };

  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  return () => {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  };
}
