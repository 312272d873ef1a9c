/** Where a command writes; tests pass in-memory sinks. */
export interface CliIO {
  out(line: string): void;
  err(line: string): void;
}

export const processIO: CliIO = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
};

/** Exit codes shared by every command. */
export const EXIT = {
  ok: 0,
  /** Verification failed: a mismatch, a bad quote. */
  failed: 1,
  /** Unusable input or usage: nothing was verified. */
  unusable: 2,
} as const;

/** A command module: `cli/commands/<name>.ts` exports `run`. */
export type Command = (argv: string[], io: CliIO) => Promise<number>;
