/**
 * A late-joining replayer (no Redis state for the host) that starts from a `snapshot_aggregate`
 * record (2023 RFC) and is then confirmed by a real swtpm quote. The TPM's PCR 10 is extended
 * with the whole log, including the records before the snapshot, which the replayer never sees;
 * the snapshot's claim is the TPM's own PCR values read at the cut, as the RFC's kernel reads them.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';

import { toHex } from '../../lib/bytes/hex.ts';
import { buildImaBuf } from '../../lib/ima/encode.ts';
import { parseSerializedPcrs } from '../../lib/tpm/pcr-file.ts';
import { newEpoch, publishEpoch } from '../../services/nonces/main.ts';
import { type QuoteCheckerHandle, startQuoteChecker } from '../../services/quote-checker/main.ts';
import { hostKeys } from '../../services/replayer/keys.ts';
import { type ReplayerHandle, startReplayer } from '../../services/replayer/main.ts';
import type { ImsProducer } from '../../services/shared/kafka.ts';
import type { LogRecord, PcrValue, Quote } from '../../services/shared/records.ts';
import { TOPIC } from '../../services/shared/topics.ts';
import { type AkHandle, Swtpm } from '../helpers/swtpm.ts';
import { logRecord, quoteTaken } from '../services/replayer/fixtures.ts';
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
  uniqueHost,
  watchTopic,
} from '../services/replayer/pipeline.ts';

const SELECTION = 'sha1:10+sha256:10';
const CUT = 6;
const END = 10;
const HONEST = uniqueHost('rp-snap');
const FORGED = uniqueHost('rp-snap-forged');
const HOSTS = [HONEST, FORGED];

/** An ima-buf `snapshot_aggregate` record claiming `text`. */
function snapshotRecord(host: string, boot: string, seq: number, text: string): LogRecord {
  const buf = Buffer.from(text, 'latin1');
  const digest = createHash('sha256').update(buf).digest();
  const data = Buffer.from(buildImaBuf({ alg: 'sha256', digest, name: 'snapshot_aggregate', buf }));
  const templateDigest = createHash('sha1').update(data).digest();

  return { ...logRecord(host, boot, seq), templateName: 'ima-buf', templateData: data, templateDigest };
}

describe('replayer starting from a snapshot_aggregate, confirmed by swtpm', () => {
  const redis = connectTestRedis();
  let tpm: Swtpm;
  let ak: AkHandle;
  let producer: ImsProducer;
  let replayer: ReplayerHandle;
  let checker: QuoteCheckerHandle;
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
    checker = await startQuoteChecker({
      brokers: BROKERS,
      redisUrl: REDIS_URL,
      logger: quietLogger(),
      deadlineMs: 30_000,
      sweepIntervalMs: 1_000,
    });
    await Promise.all([replayer.joined, checker.joined]);
  });

  after(async () => {
    await Promise.all([replayer?.stop(), checker?.stop()]);
    await Promise.all([verdicts?.stop(), alerts?.stop()]);
    await producer?.disconnect();
    await tpm?.stop();
    await cleanHosts(redis, HOSTS);
    await redis.quit();
  });

  /** Extends the TPM's PCR 10 as the kernel would (per-bank template digests). */
  async function measure(records: LogRecord[]): Promise<void> {
    for (const r of records) {
      const sha1 = createHash('sha1').update(r.templateData).digest();
      const sha256 = createHash('sha256').update(r.templateData).digest();
      await tpm.pcrExtend(10, { sha1, sha256 });
    }
  }

  /** The RFC's claim: the TPM's PCR 10 values read at the cut, before the record is extended. */
  async function claimFromTpm(tweak: (bank: string, hex: string) => string = (_, h) => h): Promise<string> {
    const read = await tpm.pcrRead(SELECTION);
    const el = (bank: 'sha1' | 'sha256') => `${bank}:PCR10:${tweak(bank, toHex(read.get(bank)!.get(10)!))}`;

    return `Snapshot_Attempt_Count=1;${el('sha1')},${el('sha256')};`;
  }

  async function sendQuote(host: string, boot: string, seq: number): Promise<void> {
    const epoch = newEpoch(Date.now(), 60_000);
    await publishEpoch(producer, epoch);
    const files = await tpm.quote(ak, { selection: SELECTION, nonce: epoch.nonce });
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
      akName: Buffer.from(ak.name),
      nonce: epoch.nonce,
      nonceEpoch: epoch.epoch,
      pcrs,
      at: Date.now(),
    };
    await produce(producer, TOPIC.quotes, 'Quote', [quote]);
  }

  const doc = async (host: string) => {
    const raw = await redis.get(hostKeys.replay(host));
    return raw === null
      ? undefined
      : (JSON.parse(raw) as { nextSeq: number; status: string; unverifiedFrom: unknown });
  };
  const docWhere = (host: string, nextSeq: number, status: string) =>
    eventually(`${host} at ${nextSeq} ${status}`, async () => {
      const d = await doc(host);
      return d?.nextSeq === nextSeq && d.status === status ? d : undefined;
    });
  const verdictAt = (host: string, endSeq: number) =>
    eventually(
      `verdict of ${host} at ${endSeq}`,
      () => verdicts.seen.find((v) => v.value.hostId === host && v.value.endSeq === endSeq && judged(v)),
      40_000,
    );
  const alertKinds = (host: string) => alerts.seen.filter((a) => a.key === host).map((a) => a.value.kind);

  /**
   * Measures the whole log into the TPM, but streams only the snapshot and what follows: the
   * replayer has no state for the host and never sees records [0, CUT).
   */
  async function lateJoin(host: string, tweak?: (bank: string, hex: string) => string) {
    const boot = `${host}:1`;
    await tpm.reset();
    const early = Array.from({ length: CUT }, (_, i) => logRecord(host, boot, i));
    await measure(early);
    const claimed = await tpm.pcrRead(SELECTION);
    const snap = snapshotRecord(host, boot, CUT, await claimFromTpm(tweak));
    const later = Array.from({ length: END - CUT - 1 }, (_, i) => logRecord(host, boot, CUT + 1 + i));
    await measure([snap, ...later]);
    await produce(producer, TOPIC.measurements, 'LogRecord', [snap, ...later]);
    await produce(producer, TOPIC.measurements, 'QuoteTaken', [quoteTaken(host, boot, END)]);
    const d = await docWhere(host, END, 'unverified');
    assert.equal(d.unverifiedFrom, CUT);
    await sendQuote(host, boot, END);

    return { boot, claimed, verdict: await verdictAt(host, END) };
  }

  it('starts from the snapshot, unverified, and a quote past it confirms the chain', async () => {
    const { boot, verdict, claimed } = await lateJoin(HONEST);
    assert.equal(verdict.value.status, 'CLOSED');
    // The shard is what was replayed: from the snapshot, with its claimed values as start PCRs.
    assert.equal(verdict.value.shardId, `${boot}:${CUT}-${END}`);
    const start = verdict.value.startPcrs as PcrValue[];
    const sha256 = start.find((p) => p.scheme === 'perbank' && p.bank === 'sha256' && p.pcr === 10);
    assert.equal(toHex(sha256!.value), toHex(claimed.get('sha256')!.get(10)!));

    // The next batch of the host sees the closed shard and lifts the mark.
    const next = logRecord(HONEST, boot, END);
    await measure([next]);
    await produce(producer, TOPIC.measurements, 'LogRecord', [next]);
    const d = await docWhere(HONEST, END + 1, 'ok');
    assert.equal(d.unverifiedFrom, null);
    assert.deepEqual(alertKinds(HONEST), []);
  });

  it('fails the first shard when the snapshot it started from claimed other values', async () => {
    const forge = (bank: string, hex: string) => (bank === 'sha256' ? `ff${hex.slice(2)}` : hex);
    const { verdict } = await lateJoin(FORGED, forge);
    assert.equal(verdict.value.status, 'FAILED');
    const mismatch = await eventually('PCR_MISMATCH', () =>
      alerts.seen.find((a) => a.key === FORGED && a.value.kind === 'PCR_MISMATCH'),
    );
    assert.deepEqual([mismatch.value.bank, mismatch.value.pcr, mismatch.value.seq], ['sha256', 10, END]);
    assert.equal((await doc(FORGED))?.status, 'unverified');
  });
});
