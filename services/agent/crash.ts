/**
 * TEST-ONLY fault injection: `IMASTREAM_AGENT_CRASH_AT=<step>[:<n>]` kills the agent with SIGKILL
 * the n-th time (default 1) it reaches the named step, so the integration tests can prove that a
 * crash at any step of a cut loses nothing and sends nothing twice. Unset (production), every
 * call is a no-op. SIGKILL, not an exception: no finally block, no flush, no clean close runs,
 * exactly like a power cut of the process.
 *
 * Steps (docs/agent.md, "Cut protocol"): cut-begin, cut-staged, cut-archived, cut-produced,
 * cut-quoted, cut-journaled, cut-deleted.
 */
export const CRASH_STEPS = [
  'cut-begin',
  'cut-staged',
  'cut-archived',
  'cut-produced',
  'cut-quoted',
  'cut-journaled',
  'cut-deleted',
] as const;

export type CrashStep = (typeof CRASH_STEPS)[number];

interface Plan {
  step: string;
  nth: number;
}

export function parseCrashPlan(spec: string | undefined): Plan | undefined {
  if (spec === undefined || spec === '') return undefined;
  const [step, n] = spec.split(':');
  const nth = n === undefined ? 1 : Number(n);
  if (!CRASH_STEPS.includes(step as CrashStep) || !Number.isSafeInteger(nth) || nth < 1) {
    throw new RangeError(`IMASTREAM_AGENT_CRASH_AT=${spec}: expected <step>[:<n>], step in ${CRASH_STEPS}`);
  }

  return { step: step as string, nth };
}

const plan = parseCrashPlan(process.env.IMASTREAM_AGENT_CRASH_AT);
let reached = 0;

/** Marks a step of the cut; dies here if the test asked for it. */
export function crashPoint(step: CrashStep): void {
  if (plan === undefined || plan.step !== step) return;
  reached++;
  if (reached === plan.nth) process.kill(process.pid, 'SIGKILL');
}
