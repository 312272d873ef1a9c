/**
 * End to end: forged or replayed quotes on ima.quotes, next to an honest agent, through the real
 * replayers and quote-checker. An attacker who can write to Kafka and even use another TPM must
 * not get a quote accepted for the victim: each attempt raises its own alert kind naming the host
 * and the boot.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Kafka, logLevel, type Producer } from 'kafkajs';
import { Fleet } from '../../services/demo/fleet.ts';
import { REPO_DIR, type SimHost } from '../../services/demo/host.ts';
import { corpusLog } from '../../services/demo/logs.ts';
import { Observer } from '../../services/demo/observer.ts';
import { Pipeline } from '../../services/demo/pipeline.ts';
import { Tap } from '../../services/demo/tap.ts';
import { encode } from '../../services/shared/codec.ts';
import type { Alert, Enrollment, Quote } from '../../services/shared/records.ts';

const BROKERS = (process.env.IMASTREAM_KAFKA_BROKERS ?? '127.0.0.1:19092').split(',');
const run = randomUUID().slice(0, 8);
const dir = mkdtempSync(join(tmpdir(), 'ims-e2e-quote-'));
const source = corpusLog('keylime/ascii_runtime_measurements_ima', 'sha1', 400);
const VICTIM = `e2e-${run}-victim`;
const OTHER = `e2e-${run}-other`;
let pipeline: Pipeline;
let fleet: Fleet;
let observer: Observer;
let tap: Tap;
let producer: Producer;

before(async () => {
  pipeline = await Pipeline.start(run, join(REPO_DIR, '.stack/e2e', run), BROKERS);
  observer = new Observer(BROKERS, [VICTIM, OTHER]);
  tap = new Tap(BROKERS, [VICTIM, OTHER]);
  await Promise.all([observer.start(), tap.start(['ima.quotes', 'ima.enrollments', 'ima.nonces'])]);
  producer = new Kafka({ clientId: 'e2e-attacker', brokers: BROKERS, logLevel: logLevel.NOTHING }).producer();
  await producer.connect();
  fleet = await Fleet.create(
    [
      { hostId: VICTIM, source },
      { hostId: OTHER, source },
    ],
    { brokers: BROKERS, baseDir: join(dir, 'hosts'), quoteIntervalS: 1, writer: { batch: 100, pauseMs: 20 } },
  );
  await fleet.startAgents();
  await fleet.play();
  const attested = await tap.until(() => observer.attested(VICTIM, source.records.length), 90_000);
  assert.ok(attested, 'the victim is attested before the attacks');
  // The tap reads from the end of the topics when it joins: an epoch published before that is not
  // seen, so wait for the next one (the nonce service publishes every 10 s).
  const nonceSeen = await tap.until(() => tap.latestNonce() !== undefined, 30_000);
  assert.ok(nonceSeen, 'a nonce epoch is seen before the attacks');
});

after(async () => {
  await producer?.disconnect();
  await fleet?.stop();
  await pipeline?.stop();
  await observer?.stop();
  await tap?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** The victim's last accepted quote (the attacker can read ima.quotes). */
function lastVictimQuote(): Quote {
  const closed = new Set(observer.closed(VICTIM).map((v) => v.quoteId));
  const quotes = tap.values<Quote>('Quote', VICTIM).filter((q) => closed.has(q.quoteId));
  assert.ok(quotes.length > 0, 'a verified victim quote exists');
  return quotes.at(-1)!;
}

/** A real TPM2_Quote from `host`'s TPM and AK (persistent handle), with any nonce. */
async function quoteOn(host: SimHost, nonce: Uint8Array): Promise<{ attest: Buffer; signature: Buffer }> {
  const msg = join(dir, `${randomUUID()}.msg`);
  const sig = join(dir, `${randomUUID()}.sig`);
  const args = ['-c', '0x81010002', '-l', 'sha1:10+sha256:10', '-q', Buffer.from(nonce).toString('hex')];
  await host.tpm.tool('tpm2_quote', [...args, '-g', 'sha256', '-m', msg, '-s', sig]);
  return { attest: readFileSync(msg), signature: readFileSync(sig) };
}

async function publish(quote: Quote): Promise<void> {
  await producer.send({
    topic: 'ima.quotes',
    acks: -1,
    messages: [{ key: quote.hostId, value: encode('Quote', quote) }],
  });
}

async function alertFor(quoteId: string, kind: string): Promise<Alert> {
  const find = () => observer.alerts(VICTIM).find((a) => a.kind === kind && a.details.includes(quoteId));
  const mine = () =>
    observer.alerts(VICTIM).filter((a) => a.details.includes(quoteId) || a.message.includes(quoteId));
  await tap.until(() => find() !== undefined || pipeline.crashed().length > 0, 60_000);
  assert.deepEqual(pipeline.crashed(), []);
  const alert = find();
  assert.ok(
    alert !== undefined,
    `expected ${kind} for ${quoteId}, saw [${mine()
      .map((a) => a.kind)
      .join(', ')}]`,
  );
  assert.equal(alert.hostId, VICTIM);

  return alert;
}

function akNameOf(hostId: string): Buffer {
  return tap.values<Enrollment>('Enrollment', hostId).at(-1)!.akName;
}

test('a quote signed by another host’s AK, under that AK’s name, is UNKNOWN_AK', async () => {
  const genuine = lastVictimQuote();
  const nonce = tap.latestNonce()!;
  const forged = await quoteOn(fleet.host(OTHER), nonce.nonce);
  const quoteId = `forged-ak-${randomUUID()}`;
  await publish({
    ...genuine,
    ...forged,
    quoteId,
    akName: akNameOf(OTHER),
    nonce: nonce.nonce,
    nonceEpoch: nonce.epoch,
    at: Date.now(),
  });
  const alert = await alertFor(quoteId, 'UNKNOWN_AK');
  assert.equal(alert.bootId, genuine.bootId);
});

test('a quote signed by another AK but claiming the enrolled AK is BAD_SIGNATURE', async () => {
  const genuine = lastVictimQuote();
  const nonce = tap.latestNonce()!;
  const forged = await quoteOn(fleet.host(OTHER), nonce.nonce);
  const quoteId = `forged-sig-${randomUUID()}`;
  await publish({
    ...genuine,
    ...forged,
    quoteId,
    akName: akNameOf(VICTIM),
    nonce: nonce.nonce,
    nonceEpoch: nonce.epoch,
    at: Date.now(),
  });
  const alert = await alertFor(quoteId, 'BAD_SIGNATURE');
  assert.equal(alert.bootId, genuine.bootId);
});

test('an accepted quote replayed under a new id is STALE_QUOTE', async () => {
  const genuine = lastVictimQuote();
  const quoteId = `replayed-${randomUUID()}`;
  await publish({ ...genuine, quoteId, at: Date.now() });
  const alert = await alertFor(quoteId, 'STALE_QUOTE');
  assert.equal(alert.bootId, genuine.bootId);
});

test('a real quote of the victim’s own TPM with a nonce the fleet never issued is NONCE_MISMATCH', async () => {
  const genuine = lastVictimQuote();
  const nonce = randomBytes(20);
  const quoted = await quoteOn(fleet.host(VICTIM), nonce);
  const quoteId = `bad-nonce-${randomUUID()}`;
  await publish({ ...genuine, ...quoted, quoteId, nonce, nonceEpoch: null, at: Date.now() });
  const alert = await alertFor(quoteId, 'NONCE_MISMATCH');
  assert.equal(alert.bootId, genuine.bootId);
});
