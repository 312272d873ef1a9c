/**
 * The shard lifecycle through the real pipeline: Kafka, Redis, swtpm quotes, one replayer and two
 * quote-checker instances in-process. Each shard is published OPEN, CUT, then CLOSED or FAILED
 * under one key per shard; a kexec continues the PCR chain under the new bootId, a cold boot
 * starts again from zeros; quotes judged out of order still close the ranges the replayer cut.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';

import { parseSerializedPcrs } from '../../lib/tpm/pcr-file.ts';
import { newEpoch, publishEpoch } from '../../services/nonces/main.ts';
import { type QuoteCheckerHandle, startQuoteChecker } from '../../services/quote-checker/main.ts';
import { type ReplayerHandle, startReplayer } from '../../services/replayer/main.ts';
import type { ImsProducer } from '../../services/shared/kafka.ts';
import type { LogRecord, PcrValue, Quote, Verdict } from '../../services/shared/records.ts';
import { TOPIC } from '../../services/shared/topics.ts';
import { type AkHandle, Swtpm } from '../helpers/swtpm.ts';
import { bootEvent, logRecord, quoteTaken } from '../services/replayer/fixtures.ts';
import {
  BROKERS,
  cleanHosts,
  connectProducer,
  connectTestRedis,
  enrolOnFirstUse,
  eventually,
  produce,
  quietLogger,
  REDIS_URL,
  type Seen,
  uniqueHost,
  watchTopic,
} from '../services/replayer/pipeline.ts';

const SELECTION = 'sha1:10+sha256:10';
const DEADLINE_MS = 6_000;
const H = {
  life: uniqueHost('sl-life'),
  deadline: uniqueHost('sl-deadline'),
  kexec: uniqueHost('sl-kexec'),
  order: uniqueHost('sl-order'),
  burst: uniqueHost('sl-burst'),
};
const HOSTS = Object.values(H);
const WAIT_MS = 60_000;

describe('shard lifecycle on Kafka, Redis and swtpm', () => {
  const redis = connectTestRedis();
  let tpm: Swtpm;
  let ak: AkHandle;
  let producer: ImsProducer;
  let replayer: ReplayerHandle;
  const checkers: QuoteCheckerHandle[] = [];
  let verdicts: Awaited<ReturnType<typeof watchTopic>>;
  let alerts: Awaited<ReturnType<typeof watchTopic>>;

  before(async () => {
    tpm = await Swtpm.start();
    const ek = await tpm.createEk();
    ak = await tpm.createAk(ek, { scheme: 'rsassa', persist: '0x81010002' });
    producer = await connectProducer();
    [verdicts, alerts] = await Promise.all([
      watchTopic(TOPIC.verdicts, HOSTS),
      watchTopic(TOPIC.alerts, HOSTS),
    ]);
    await enrolOnFirstUse(producer, HOSTS, ek, ak);
    replayer = await startReplayer({
      brokers: BROKERS,
      redisUrl: REDIS_URL,
      logger: quietLogger('replayer'),
    });
    for (let i = 0; i < 2; i++) {
      const options = { deadlineMs: DEADLINE_MS, sweepIntervalMs: 500 };
      checkers.push(
        await startQuoteChecker({ brokers: BROKERS, redisUrl: REDIS_URL, logger: quietLogger(), ...options }),
      );
    }
    await Promise.all([replayer.joined, ...checkers.map((c) => c.joined)]);
  });

  after(async () => {
    await Promise.all([replayer?.stop(), ...checkers.map((c) => c.stop())]);
    await Promise.all([verdicts?.stop(), alerts?.stop()]);
    await producer?.disconnect();
    await tpm?.stop();
    await cleanHosts(redis, HOSTS);
    await redis.quit();
  });

  /** Extends the TPM's PCR 10 with records as the kernel would (per-bank template digests). */
  async function measure(records: readonly LogRecord[]): Promise<void> {
    for (const r of records) {
      const sha1 = createHash('sha1').update(r.templateData).digest();
      const sha256 = createHash('sha256').update(r.templateData).digest();
      await tpm.pcrExtend(10, { sha1, sha256 });
    }
  }

  /** Takes a quote of the TPM as it is now, with a fresh epoch nonce, as the agent would. */
  async function takeQuote(host: string, boot: string, seq: number): Promise<Quote> {
    const epoch = newEpoch(Date.now(), 60_000);
    await publishEpoch(producer, epoch);
    const files = await tpm.quote(ak, { selection: SELECTION, nonce: epoch.nonce });
    const pcrs: PcrValue[] = [...parseSerializedPcrs(files.pcrs)].flatMap(([bank, values]) =>
      [...values].map(([pcr, value]) => ({ scheme: 'tpm', bank, pcr, value: Buffer.from(value) })),
    );

    return {
      hostId: host,
      bootId: boot,
      seq,
      quoteId: `${host}-${boot}-q${seq}`,
      attest: Buffer.from(files.attest),
      signature: Buffer.from(files.signature),
      akName: Buffer.from(ak.name),
      nonce: epoch.nonce,
      nonceEpoch: epoch.epoch,
      at: Date.now(),
      pcrs,
    };
  }

  const records = (host: string, boot: string, from: number, to: number) =>
    Array.from({ length: to - from }, (_, i) => logRecord(host, boot, from + i));

  const verdictsOf = (host: string) =>
    verdicts.seen.filter((v) => v.value.hostId === host).map((v) => v as Seen & { value: Verdict });

  const stateOf = (host: string, shardId: string, status: Verdict['status']) =>
    eventually(
      `${status} ${shardId}`,
      () => verdictsOf(host).find((v) => v.value.shardId === shardId && v.value.status === status),
      WAIT_MS,
    );

  /** The last state of every shard of the host, as a compacted read of the topic would keep it. */
  function lastStates(host: string): Map<string, Verdict> {
    const out = new Map<string, Verdict>();
    for (const v of verdictsOf(host)) out.set(v.key ?? '', v.value);
    return out;
  }

  it('publishes OPEN, CUT and CLOSED, with the closing quote, the cut kind and the AK policy', async () => {
    const host = H.life;
    const boot = `${host}-b:1`;
    const first = records(host, boot, 0, 6);
    await tpm.reset();
    await measure(first);
    await produce(producer, TOPIC.measurements, 'BootEvent', [bootEvent(host, boot)]);
    await produce(producer, TOPIC.measurements, 'LogRecord', first);
    await produce(producer, TOPIC.measurements, 'QuoteTaken', [quoteTaken(host, boot, 6)]);

    // Cut, not yet attested: its quote has not been sent.
    const cut = await stateOf(host, `${boot}:0-6`, 'CUT');
    assert.equal(cut.key, `${host}/${boot}:0-6`);
    assert.deepEqual([cut.value.quoteId, cut.value.quote, cut.value.akPolicy], [null, null, 'tofu']);
    const open = await stateOf(host, `${boot}:6-`, 'OPEN');
    assert.deepEqual([open.value.startSeq, open.value.endSeq], [6, null]);

    const q6 = await takeQuote(host, boot, 6);
    await produce(producer, TOPIC.quotes, 'Quote', [q6]);
    const closed = await stateOf(host, `${boot}:0-6`, 'CLOSED');
    assert.equal(closed.key, cut.key);
    assert.equal(closed.value.quoteId, q6.quoteId);
    assert.deepEqual(closed.value.quote?.attest, q6.attest);
    assert.deepEqual(closed.value.quote?.signature, q6.signature);
    assert.deepEqual(closed.value.quote?.nonce, q6.nonce);
    assert.deepEqual(
      [closed.value.akPolicy, closed.value.cutKind, closed.value.scheme],
      ['tofu', null, 'perbank'],
    );
    assert.ok(closed.value.startPcrs.every((p) => p.value.equals(Buffer.alloc(p.value.length))));

    // The agent cuts its log at 10 (Linux 7.2 staging): QuoteTaken, the quote, then the
    // SnapshotEvent naming that quote, which may come after the shard was judged.
    const second = records(host, boot, 6, 10);
    await measure(second);
    const q10 = await takeQuote(host, boot, 10);
    await produce(producer, TOPIC.measurements, 'LogRecord', second);
    await produce(producer, TOPIC.measurements, 'QuoteTaken', [quoteTaken(host, boot, 10)]);
    await stateOf(host, `${boot}:10-`, 'OPEN');
    await produce(producer, TOPIC.quotes, 'Quote', [q10]);
    const plain = await stateOf(host, `${boot}:6-10`, 'CLOSED');
    assert.equal(plain.value.cutKind, null);
    assert.deepEqual(plain.value.startPcrs, closed.value.endPcrs);
    await produce(producer, TOPIC.measurements, 'SnapshotEvent', [
      { hostId: host, bootId: boot, seq: 10, kind: 'STAGING', quoteId: q10.quoteId, at: Date.now() },
    ]);
    const staged = await eventually(
      'the staging label',
      () => verdictsOf(host).find((v) => v.value.shardId === `${boot}:6-10` && v.value.cutKind === 'STAGING'),
      WAIT_MS,
    );
    assert.deepEqual([staged.value.status, staged.value.quoteId], ['CLOSED', q10.quoteId]);

    // On the compacted topic the judged state is what stays of each shard.
    const last = lastStates(host);
    assert.equal(last.get(`${host}/${boot}:0-6`)?.status, 'CLOSED');
    assert.deepEqual(
      [last.get(`${host}/${boot}:6-10`)?.status, last.get(`${host}/${boot}:6-10`)?.cutKind],
      ['CLOSED', 'STAGING'],
    );
    assert.equal(alerts.seen.filter((a) => a.value.hostId === host).length, 0);
  });

  it('fails a cut shard whose quote never comes, after the deadline', async () => {
    const host = H.deadline;
    const boot = `${host}-b:1`;
    await produce(producer, TOPIC.measurements, 'BootEvent', [bootEvent(host, boot)]);
    await produce(producer, TOPIC.measurements, 'LogRecord', records(host, boot, 0, 4));
    await produce(producer, TOPIC.measurements, 'QuoteTaken', [quoteTaken(host, boot, 4)]);

    const failed = await stateOf(host, `${boot}:0-4`, 'FAILED');
    assert.match(failed.value.reasons[0] ?? '', /^SHARD_DEADLINE/);
    assert.equal(failed.value.quote, null);
    await eventually(
      'SHARD_DEADLINE',
      () => alerts.seen.find((a) => a.value.hostId === host && a.value.kind === 'SHARD_DEADLINE'),
      WAIT_MS,
    );
    assert.equal(lastStates(host).get(`${host}/${boot}:0-4`)?.status, 'FAILED');
  });

  it('continues the chain across a kexec (a second boot_aggregate included) and restarts it at a cold boot', async () => {
    const host = H.kexec;
    const one = `${host}-one:1`;
    const two = `${host}-two:1`;
    const three = `${host}-three:2`;
    await tpm.reset();

    const before = records(host, one, 0, 5);
    await measure(before);
    await produce(producer, TOPIC.measurements, 'BootEvent', [bootEvent(host, one)]);
    await produce(producer, TOPIC.measurements, 'LogRecord', before);
    await produce(producer, TOPIC.measurements, 'QuoteTaken', [quoteTaken(host, one, 5)]);
    await produce(producer, TOPIC.quotes, 'Quote', [await takeQuote(host, one, 5)]);
    const closedOne = await stateOf(host, `${one}:0-5`, 'CLOSED');

    // kexec: the PCRs are kept, the new kernel's log starts with its own boot_aggregate at seq 5.
    const after = [logRecord(host, two, 5, 'boot_aggregate'), ...records(host, two, 6, 9)];
    await measure(after);
    const kexec = { ...bootEvent(host, two, 'KEXEC'), firstSeq: 5 };
    await produce(producer, TOPIC.measurements, 'BootEvent', [kexec]);
    await produce(producer, TOPIC.measurements, 'LogRecord', after);
    await produce(producer, TOPIC.measurements, 'QuoteTaken', [quoteTaken(host, two, 9)]);
    await produce(producer, TOPIC.quotes, 'Quote', [await takeQuote(host, two, 9)]);
    const closedTwo = await stateOf(host, `${two}:5-9`, 'CLOSED');
    assert.deepEqual(closedTwo.value.startPcrs, closedOne.value.endPcrs);

    // A cold boot: TPM reset (resetCount + 1), the replay starts again from zeros.
    await tpm.reset();
    const cold = records(host, three, 0, 3);
    await measure(cold);
    await produce(producer, TOPIC.measurements, 'BootEvent', [{ ...bootEvent(host, three), resetCount: 2 }]);
    await produce(producer, TOPIC.measurements, 'LogRecord', cold);
    await produce(producer, TOPIC.measurements, 'QuoteTaken', [quoteTaken(host, three, 3)]);
    await produce(producer, TOPIC.quotes, 'Quote', [await takeQuote(host, three, 3)]);
    const closedThree = await stateOf(host, `${three}:0-3`, 'CLOSED');
    assert.ok(closedThree.value.startPcrs.every((p) => p.value.equals(Buffer.alloc(p.value.length))));

    const kinds = alerts.seen.filter((a) => a.value.hostId === host).map((a) => a.value.kind);
    assert.deepEqual(kinds, [], 'no alert for the kexec, its boot_aggregate or the cold boot');
    assert.equal(verdictsOf(host).filter((v) => v.value.status === 'FAILED').length, 0);
  });

  it('judges the range the replayer cut even when the quote before it never comes', async () => {
    const host = H.order;
    const boot = `${host}-b:1`;
    await tpm.reset();
    const a = records(host, boot, 0, 4);
    const b = records(host, boot, 4, 8);
    await measure([...a, ...b]);
    await produce(producer, TOPIC.measurements, 'BootEvent', [bootEvent(host, boot)]);
    await produce(producer, TOPIC.measurements, 'LogRecord', [...a, ...b]);
    await produce(producer, TOPIC.measurements, 'QuoteTaken', [
      quoteTaken(host, boot, 4),
      quoteTaken(host, boot, 8),
    ]);
    await stateOf(host, `${boot}:4-8`, 'CUT');

    // The quote at 4 is lost: the one at 8 still judges [4, 8) (before, the range ran from the
    // last closed end, [0, 8), and two instances joining at once could both start there).
    await produce(producer, TOPIC.quotes, 'Quote', [await takeQuote(host, boot, 8)]);
    const closed = await stateOf(host, `${boot}:4-8`, 'CLOSED');
    const failed = await stateOf(host, `${boot}:0-4`, 'FAILED');
    assert.match(failed.value.reasons[0] ?? '', /^SHARD_DEADLINE/);
    assert.deepEqual(
      closed.value.startPcrs,
      failed.value.endPcrs.filter((p) => p.scheme === 'perbank'),
    );

    const judged = verdictsOf(host).filter((v) => v.value.status === 'CLOSED' || v.value.status === 'FAILED');
    assert.deepEqual([...new Set(judged.map((v) => `${v.value.status} ${v.value.shardId}`))].sort(), [
      `CLOSED ${boot}:4-8`,
      `FAILED ${boot}:0-4`,
    ]);
  });

  it('judges contiguous, disjoint shards when the quotes of many cuts arrive at once', async () => {
    const host = H.burst;
    const boot = `${host}-b:1`;
    const CUTS = [3, 5, 8, 10, 13, 15];
    await tpm.reset();
    const log = records(host, boot, 0, CUTS.at(-1)!);
    const quotes: Quote[] = [];
    let at = 0;
    for (const end of CUTS) {
      await measure(log.slice(at, end));
      quotes.push(await takeQuote(host, boot, end));
      at = end;
    }
    // As the agent sends them: each QuoteTaken right after the records it covers.
    await produce(producer, TOPIC.measurements, 'BootEvent', [bootEvent(host, boot)]);
    at = 0;
    for (const end of CUTS) {
      await produce(producer, TOPIC.measurements, 'LogRecord', log.slice(at, end));
      await produce(producer, TOPIC.measurements, 'QuoteTaken', [quoteTaken(host, boot, end)]);
      at = end;
    }
    await produce(producer, TOPIC.quotes, 'Quote', quotes);

    const want = CUTS.map((end, i) => `${boot}:${i === 0 ? 0 : CUTS[i - 1]}-${end}`);
    for (const shardId of want) await stateOf(host, shardId, 'CLOSED');
    const judged = verdictsOf(host).filter((v) => v.value.status === 'CLOSED' || v.value.status === 'FAILED');
    assert.deepEqual([...new Set(judged.map((v) => v.value.shardId))].sort(), [...want].sort());
    assert.ok(judged.every((v) => v.value.status === 'CLOSED'));
  });
});
