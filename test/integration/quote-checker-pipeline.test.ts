/**
 * The whole fleet side on the real broker, Redis and a software TPM: records and quotes produced
 * as an agent would (PCR 10 extended in swtpm with each true record, quotes taken by tpm2_quote),
 * a replayer and two quote-checker instances in-process, verdicts and alerts read back from Kafka.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';

import { toHex } from '../../lib/bytes/hex.ts';
import { PcrReplay } from '../../lib/ima/replay.ts';
import { parseSerializedPcrs } from '../../lib/tpm/pcr-file.ts';
import { newEpoch, publishEpoch } from '../../services/nonces/main.ts';
import { type QuoteCheckerHandle, startQuoteChecker } from '../../services/quote-checker/main.ts';
import { type ReplayerHandle, startReplayer } from '../../services/replayer/main.ts';
import type { ImsProducer } from '../../services/shared/kafka.ts';
import type { LogRecord, PcrValue, Quote } from '../../services/shared/records.ts';
import { TOPIC } from '../../services/shared/topics.ts';
import { type AkHandle, type EkHandle, Swtpm } from '../helpers/swtpm.ts';
import { bootEvent, logRecord, quoteTaken } from '../services/replayer/fixtures.ts';
import {
  BROKERS,
  cleanHosts,
  connectProducer,
  connectTestRedis,
  enrolOnFirstUse,
  eventually,
  judged,
  produce,
  quietLogger,
  REDIS_URL,
  type Seen,
  uniqueHost,
  watchTopic,
} from '../services/replayer/pipeline.ts';

const SELECTION = 'sha1:10+sha256:10';
const DEADLINE_MS = 8_000;
const H = {
  honest: uniqueHost('qc-honest'),
  changed: uniqueHost('qc-changed'),
  dropped: uniqueHost('qc-dropped'),
  reordered: uniqueHost('qc-reordered'),
  inserted: uniqueHost('qc-inserted'),
  otherAk: uniqueHost('qc-otherak'),
  badNonce: uniqueHost('qc-nonce'),
  late: uniqueHost('qc-late'),
  trailing: uniqueHost('qc-trailing'),
};
const HOSTS = Object.values(H);

const truth = (host: string, boot: string, n: number) =>
  Array.from({ length: n }, (_, i) => logRecord(host, boot, i));
const renumber = (records: LogRecord[]) => records.map((r, seq) => ({ ...r, seq }));

describe('quote-checker on Kafka, Redis and swtpm', () => {
  const redis = connectTestRedis();
  let tpm: Swtpm;
  let ek: EkHandle;
  let ak: AkHandle;
  let otherAk: AkHandle;
  let producer: ImsProducer;
  let replayer: ReplayerHandle;
  const checkers: QuoteCheckerHandle[] = [];
  let verdicts: Awaited<ReturnType<typeof watchTopic>>;
  let alerts: Awaited<ReturnType<typeof watchTopic>>;

  before(async () => {
    tpm = await Swtpm.start();
    ek = await tpm.createEk();
    ak = await tpm.createAk(ek, { scheme: 'rsassa', persist: '0x81010002' });
    otherAk = await tpm.createAk(ek, { scheme: 'rsassa', persist: '0x81010003' });
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
  async function measure(records: LogRecord[]): Promise<void> {
    for (const r of records) {
      const sha1 = createHash('sha1').update(r.templateData).digest();
      const sha256 = createHash('sha256').update(r.templateData).digest();
      await tpm.pcrExtend(10, { sha1, sha256 });
    }
  }

  /** A fresh epoch nonce, published as the nonce service does. */
  async function freshNonce(): Promise<{ nonce: Buffer; epoch: number }> {
    const epoch = newEpoch(Date.now(), 60_000);
    await publishEpoch(producer, epoch);
    return { nonce: epoch.nonce, epoch: epoch.epoch };
  }

  /** Takes a quote and produces it as the agent would; returns the Quote record sent. */
  async function sendQuote(
    host: string,
    boot: string,
    seq: number,
    opts: { signer?: AkHandle; nonce?: Buffer } = {},
  ) {
    const fresh = await freshNonce();
    const nonce = opts.nonce ?? fresh.nonce;
    const signer = opts.signer ?? ak;
    const files = await tpm.quote(signer, { selection: SELECTION, nonce });
    const pcrs: PcrValue[] = [...parseSerializedPcrs(files.pcrs)].flatMap(([bank, values]) =>
      [...values].map(([pcr, value]) => ({ scheme: 'tpm', bank, pcr, value: Buffer.from(value) })),
    );
    const quote: Quote = {
      hostId: host,
      bootId: boot,
      seq,
      quoteId: `${host}-q${seq}`,
      attest: Buffer.from(files.attest),
      signature: Buffer.from(files.signature),
      akName: Buffer.from(signer.name),
      nonce,
      nonceEpoch: opts.nonce === undefined ? fresh.epoch : null,
      at: Date.now(),
      pcrs,
    };
    await produce(producer, TOPIC.quotes, 'Quote', [quote]);
    return quote;
  }

  async function stream(host: string, boot: string, records: LogRecord[], quoteAt: number): Promise<void> {
    await produce(producer, TOPIC.measurements, 'BootEvent', [bootEvent(host, boot)]);
    await produce(producer, TOPIC.measurements, 'LogRecord', records);
    await produce(producer, TOPIC.measurements, 'QuoteTaken', [quoteTaken(host, boot, quoteAt)]);
  }

  const verdictOf = (host: string, shardId: string) =>
    eventually(
      `verdict ${shardId}`,
      () => verdicts.seen.find((v) => v.value.hostId === host && v.value.shardId === shardId && judged(v)),
      40_000,
    );
  const alertOf = (host: string, kind: string) =>
    eventually(
      `${kind} for ${host}`,
      () => alerts.seen.find((a) => a.key === host && a.value.kind === kind),
      40_000,
    );

  /** A tampered log against the true one measured into the TPM: a FAILED verdict and PCR_MISMATCH. */
  async function expectMismatch(host: string, tamper: (t: LogRecord[]) => LogRecord[]): Promise<Seen> {
    const boot = `${host}:1`;
    const real = truth(host, boot, 10);
    await tpm.reset();
    await measure(real);
    const tpmSha1Pcr10 = Buffer.from((await tpm.pcrRead('sha1:10')).get('sha1')!.get(10)!);
    const sent = tamper(real);
    await stream(host, boot, sent, sent.length);
    await sendQuote(host, boot, sent.length);

    const verdict = await verdictOf(host, `${boot}:0-${sent.length}`);
    assert.equal(verdict.value.status, 'FAILED');
    const alert = await alertOf(host, 'PCR_MISMATCH');
    assert.deepEqual([alert.value.hostId, alert.value.bootId, alert.value.seq], [host, boot, sent.length]);
    // The swtpm's PCR values shipped with the quote hash to its pcrDigest, so they are trusted and
    // name the first diverging (bank, PCR) in the quote's selection order: sha1 before sha256.
    assert.deepEqual([alert.value.bank, alert.value.pcr], ['sha1', 10]);
    assert.match(
      String(alert.value.message),
      /sha1 PCR 10: TPM [0-9a-f]{40}, replay \(perbank\) [0-9a-f]{40}/,
    );
    const details = JSON.parse(String(alert.value.details)) as { quoted: string; replayed: string };
    assert.equal(details.quoted, tpmSha1Pcr10.toString('hex'));
    const replayed = new PcrReplay();
    for (const r of sent) replayed.extend(r);
    assert.equal(details.replayed, toHex(replayed.value('perbank', 'sha1', 10)));
    assert.equal(
      alerts.seen.filter((a) => a.key === host && a.value.kind === 'TEMPLATE_DIGEST_MISMATCH').length,
      0,
    );

    return alert;
  }

  it('closes the shards of an honest host, each from the end of the last', async () => {
    const boot = `${H.honest}:1`;
    const log = truth(H.honest, boot, 15);
    await tpm.reset();
    await measure(log.slice(0, 10));
    await stream(H.honest, boot, log.slice(0, 10), 10);
    const first = await sendQuote(H.honest, boot, 10);
    const v1 = await verdictOf(H.honest, `${boot}:0-10`);
    assert.equal(v1.value.status, 'CLOSED');
    assert.equal(v1.value.scheme, 'perbank');

    await measure(log.slice(10));
    await produce(producer, TOPIC.measurements, 'LogRecord', log.slice(10));
    await produce(producer, TOPIC.measurements, 'QuoteTaken', [quoteTaken(H.honest, boot, 15)]);
    await sendQuote(H.honest, boot, 15);
    const v2 = await verdictOf(H.honest, `${boot}:10-15`);
    assert.equal(v2.value.status, 'CLOSED');
    assert.deepEqual(v2.value.startPcrs, v1.value.endPcrs);

    // The first quote again, at a new offset: an old quote replayed.
    await produce(producer, TOPIC.quotes, 'Quote', [first]);
    const stale = await alertOf(H.honest, 'STALE_QUOTE');
    assert.deepEqual([stale.value.bootId, stale.value.seq], [boot, 10]);
    assert.equal(alerts.seen.filter((a) => a.key === H.honest && a.value.kind === 'PCR_MISMATCH').length, 0);
  });

  it('fails a shard whose record was changed (with a consistent digest)', async () => {
    await expectMismatch(H.changed, (t) =>
      t.map((r, i) => (i === 4 ? logRecord(r.hostId, r.bootId, 4, '/usr/bin/evil') : r)),
    );
  });

  it('fails a shard with a record dropped and the rest renumbered', async () => {
    await expectMismatch(H.dropped, (t) => renumber(t.filter((_, i) => i !== 6)));
  });

  it('fails a shard whose records were reordered', async () => {
    await expectMismatch(H.reordered, (t) => renumber([t[0]!, t[1]!, t[3]!, t[2]!, ...t.slice(4)]));
  });

  it('fails a shard with a record inserted', async () => {
    await expectMismatch(H.inserted, (t) =>
      renumber([...t.slice(0, 5), logRecord(t[0]!.hostId, t[0]!.bootId, 99, '/tmp/x'), ...t.slice(5)]),
    );
  });

  it('rejects a quote signed by an AK not enrolled to the host', async () => {
    const boot = `${H.otherAk}:1`;
    await sendQuote(H.otherAk, boot, 0, { signer: otherAk });
    const alert = await alertOf(H.otherAk, 'UNKNOWN_AK');
    assert.deepEqual([alert.value.bootId, alert.value.seq], [boot, 0]);
  });

  it('rejects a quote whose nonce the fleet never issued', async () => {
    const boot = `${H.badNonce}:1`;
    await sendQuote(H.badNonce, boot, 0, { nonce: randomBytes(32) });
    const alert = await alertOf(H.badNonce, 'NONCE_MISMATCH');
    assert.deepEqual([alert.value.bootId, alert.value.seq], [boot, 0]);
  });

  it('closes the shard of a QuoteTaken that arrives after later records', async () => {
    const boot = `${H.trailing}:1`;
    const log = truth(H.trailing, boot, 10);
    await tpm.reset();
    await measure(log.slice(0, 8));
    await sendQuote(H.trailing, boot, 8);
    await measure(log.slice(8));
    // The log ran ahead of the quote: records 8 and 9 reach the replayer before QuoteTaken(8).
    await produce(producer, TOPIC.measurements, 'BootEvent', [bootEvent(H.trailing, boot)]);
    await produce(producer, TOPIC.measurements, 'LogRecord', log);
    await produce(producer, TOPIC.measurements, 'QuoteTaken', [quoteTaken(H.trailing, boot, 8)]);

    const verdict = await verdictOf(H.trailing, `${boot}:0-8`);
    assert.equal(verdict.value.status, 'CLOSED');
    assert.deepEqual(
      alerts.seen.filter((a) => a.key === H.trailing).map((a) => a.value.kind),
      [],
    );
  });

  it('raises SHARD_DEADLINE when a checkpoint never meets its quote', async () => {
    const boot = `${H.late}:1`;
    await stream(H.late, boot, truth(H.late, boot, 3), 3);
    const alert = await alertOf(H.late, 'SHARD_DEADLINE');
    assert.deepEqual([alert.value.bootId, alert.value.seq], [boot, 3]);
  });
});
