/**
 * Placing a quote in the log (services/agent/quoter.ts) against a real swtpm: the quote must land
 * at the seq whose replay it reproduces, and the records sent past that seq before its QuoteTaken
 * must stay within QUOTE_TRAIL_MAX (docs/contract.md), whether the TPM is ahead of what the agent
 * has sent or behind it. The test plays the kernel: it extends the TPM with the records it "logs"
 * and feeds the matcher as the agent's reads would.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import type { ImaRecord } from '../../lib/ima/record.ts';
import { generateLog } from '../../lib/ima/synthetic.ts';
import { parseSelectionSpec } from '../../lib/tpm/pcr-selection.ts';
import { parsePublic } from '../../lib/tpm/public.ts';
import { verifyQuote } from '../../lib/tpm/quote.ts';
import { type PlacedQuote, quoteAndPlace, RETAKE_BUDGET_MS } from '../../services/agent/quoter.ts';
import { BankTracker, SeqMatcher } from '../../services/agent/seq-match.ts';
import { ensureAk } from '../../services/agent/tpm.ts';
import { tpmExtender } from '../../services/kernel-emulator/tpm-extend.ts';
import { QUOTE_TRAIL_MAX } from '../../services/shared/quote-trail.ts';
import { Swtpm } from '../helpers/swtpm.ts';

const AK = '0x81010002';
const log = generateLog({ records: 400, seed: 21 }).records;
let tpm: Swtpm;
let akPublic: Uint8Array;
/** Records extended into the TPM so far (the TPM is never reset: each test continues the log). */
let extended = 0;

before(async () => {
  tpm = await Swtpm.start();
  akPublic = (await ensureAk(tpm.tools, AK, 'rsa')).akPublic;
});

after(async () => {
  await tpm?.stop();
});

async function extendTo(n: number): Promise<void> {
  await tpmExtender(tpm.tools)(log.slice(extended, n));
  extended = n;
}

/** The agent's view: `sent` records read and produced, and a reader that produces more on demand. */
function agentAt(sent: number, readable: () => number) {
  const matcher = new SeqMatcher(
    new BankTracker(['sha1', 'sha256']),
    parseSelectionSpec('sha1:10+sha256:10'),
    'sha256',
  );
  for (const r of log.slice(0, sent)) matcher.add(r);
  const asked: number[] = [];
  const readMore = async (limit: number): Promise<number> => {
    asked.push(limit);
    const more: ImaRecord[] = log.slice(matcher.count, Math.min(readable(), matcher.count + limit));
    for (const r of more) matcher.add(r);
    return more.length;
  };
  return { matcher, asked, deps: { tpm: tpm.tools, akHandle: AK, akAlg: 'rsa' as const, matcher, readMore } };
}

async function assertReproduced(placed: PlacedQuote, nonce: Uint8Array, matcher: SeqMatcher): Promise<void> {
  assert.ok(placed.matched, 'a prefix of the log reproduces the quote');
  const verdict = await verifyQuote({
    attest: placed.raw.attest,
    signature: placed.raw.signature,
    akPublic: parsePublic(akPublic),
    nonce,
    pcrValues: matcher.valuesAt(placed.seq),
  });
  assert.deepEqual(verdict.failures, [], `the quote verifies against the replay of [0, ${placed.seq})`);
}

test('a TPM ahead of what was sent: more log is read a few records at a time, the trail stays in bounds', async () => {
  await extendTo(140);
  const agent = agentAt(100, () => 160);
  const nonce = randomBytes(20);
  const placed = await quoteAndPlace(agent.deps, nonce);

  assert.equal(placed.seq, 140, 'the quote covers what the TPM holds');
  assert.ok(
    agent.asked.length >= Math.ceil(40 / QUOTE_TRAIL_MAX),
    `read in steps (${agent.asked.join(',')})`,
  );
  assert.ok(agent.asked.every((n) => n <= QUOTE_TRAIL_MAX));
  const trail = agent.matcher.count - placed.seq;
  assert.ok(trail <= QUOTE_TRAIL_MAX, `trail ${trail} <= ${QUOTE_TRAIL_MAX}`);
  await assertReproduced(placed, nonce, agent.matcher);
});

test('a TPM behind what was sent, catching up: the quote is taken again and lands at the records sent', async () => {
  // Forty records sent, not yet extended; the "kernel" extends them while the agent quotes.
  const agent = agentAt(180, () => 180);
  const nonce = randomBytes(20);
  const [placed] = await Promise.all([quoteAndPlace(agent.deps, nonce), extendTo(180)]);

  assert.equal(placed.seq, 180);
  await assertReproduced(placed, nonce, agent.matcher);
});

test('a TPM that stays behind: after the retake budget the quote is kept where it matched', async () => {
  const agent = agentAt(extended + 30, () => extended + 30);
  const nonce = randomBytes(20);
  const started = Date.now();
  const placed = await quoteAndPlace(agent.deps, nonce);

  assert.ok(Date.now() - started >= RETAKE_BUDGET_MS, 'quoted again for the whole budget');
  assert.equal(placed.seq, extended, 'placed where the TPM is, not where the log is');
  await assertReproduced(placed, nonce, agent.matcher);
});

test('a TPM that no prefix of the log reproduces is placed at the records read, unmatched', async () => {
  await tpm.pcrExtend(10, { sha1: new Uint8Array(20).fill(0xab), sha256: new Uint8Array(32).fill(0xab) });
  const agent = agentAt(extended, () => extended);
  const placed = await quoteAndPlace(agent.deps, randomBytes(20));

  assert.equal(placed.matched, false);
  assert.equal(placed.seq, extended);
});
