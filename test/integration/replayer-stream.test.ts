/**
 * The replayer on the real broker and Redis: records produced as an agent would, a replayer
 * started in-process, and the outcome read back from Redis and from the output topics.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { PcrReplay } from '../../lib/ima/replay.ts';
import { hostKeys } from '../../services/replayer/keys.ts';
import { type ReplayerHandle, startReplayer } from '../../services/replayer/main.ts';
import { schemaCatalogue } from '../../services/shared/codec.ts';
import type { ImsProducer } from '../../services/shared/kafka.ts';
import type { LogRecord } from '../../services/shared/records.ts';
import { TOPIC } from '../../services/shared/topics.ts';
import { bootEvent, logRecord, quoteTaken } from '../services/replayer/fixtures.ts';
import {
  BROKERS,
  cleanHosts,
  connectProducer,
  connectTestRedis,
  eventually,
  produce,
  quietLogger,
  REDIS_URL,
  uniqueHost,
  watchTopic,
} from '../services/replayer/pipeline.ts';

const BOOT = 'boot-a:1';
const HONEST = uniqueHost('rp-honest');
const GAPPY = uniqueHost('rp-gap');
const TAMPERED = uniqueHost('rp-tamper');
const POISONED = uniqueHost('rp-poison');
const AFTER_POISON = uniqueHost('rp-after');
const HOSTS = [HONEST, GAPPY, TAMPERED, POISONED, AFTER_POISON];

const records = (host: string, from: number, to: number) =>
  Array.from({ length: to - from }, (_, i) => logRecord(host, BOOT, from + i));

describe('replayer on Kafka and Redis', () => {
  const redis = connectTestRedis();
  let producer: ImsProducer;
  let replayer: ReplayerHandle;
  let alerts: Awaited<ReturnType<typeof watchTopic>>;
  let checkpoints: Awaited<ReturnType<typeof watchTopic>>;
  let deadLetters: Awaited<ReturnType<typeof watchTopic>>;
  let challenges: Awaited<ReturnType<typeof watchTopic>>;

  const doc = async (host: string) => {
    const raw = await redis.get(hostKeys.replay(host));
    return raw === null
      ? undefined
      : (JSON.parse(raw) as { nextSeq: number; status: string; replay: unknown });
  };
  const docAt = (host: string, nextSeq: number, status = 'ok') =>
    eventually(`${host} at ${nextSeq}`, async () => {
      const d = await doc(host);
      return d !== undefined && d.nextSeq === nextSeq && d.status === status ? d : undefined;
    });
  const alertsOf = (host: string, kind: string) =>
    alerts.seen.filter((s) => s.value.hostId === host && s.value.kind === kind).map((s) => s.value);

  before(async () => {
    producer = await connectProducer();
    [alerts, checkpoints, deadLetters, challenges] = await Promise.all([
      watchTopic(TOPIC.alerts, HOSTS),
      watchTopic(TOPIC.checkpoints, HOSTS),
      watchTopic(TOPIC.deadLetter, HOSTS),
      watchTopic(TOPIC.challenges, HOSTS),
    ]);
    replayer = await startReplayer({
      brokers: BROKERS,
      redisUrl: REDIS_URL,
      logger: quietLogger('replayer'),
    });
    await replayer.joined;
  });

  after(async () => {
    await replayer?.stop();
    await Promise.all([alerts?.stop(), checkpoints?.stop(), deadLetters?.stop(), challenges?.stop()]);
    await producer?.disconnect();
    await cleanHosts(redis, HOSTS);
    await redis.quit();
  });

  it('replays an honest host exactly as an offline replay, and checkpoints where it quoted', async () => {
    const log = records(HONEST, 0, 300);
    await produce(producer, TOPIC.measurements, 'BootEvent', [bootEvent(HONEST, BOOT)]);
    await produce(producer, TOPIC.measurements, 'LogRecord', log);
    await produce(producer, TOPIC.measurements, 'QuoteTaken', [quoteTaken(HONEST, BOOT, 300)]);

    const d = await docAt(HONEST, 300);
    const offline = new PcrReplay();
    for (const r of log) offline.extend(r);
    assert.deepEqual(d.replay, offline.state());

    const ckpt = await eventually('checkpoint', () =>
      checkpoints.seen.find((s) => s.value.hostId === HONEST && s.value.seq === 300),
    );
    const pcrs = ckpt.value.pcrs as { scheme: string; bank: string; pcr: number; value: Buffer }[];
    const sha256 = pcrs.find((p) => p.scheme === 'perbank' && p.bank === 'sha256' && p.pcr === 10);
    assert.deepEqual(new Uint8Array(sha256!.value), offline.value('perbank', 'sha256', 10));
    assert.ok(await redis.exists(hostKeys.ckpt(HONEST, BOOT, 300)));
    assert.deepEqual(
      alerts.seen.filter((s) => s.value.hostId === HONEST),
      [],
    );
  });

  it('holds a host at a gap with SEQUENCE_GAP naming the first missing seq, and resumes on resend', async () => {
    await produce(producer, TOPIC.measurements, 'BootEvent', [bootEvent(GAPPY, BOOT)]);
    await produce(producer, TOPIC.measurements, 'LogRecord', [
      ...records(GAPPY, 0, 5),
      ...records(GAPPY, 6, 10),
    ]);

    await docAt(GAPPY, 5, 'gap');
    const [gap] = await eventually('gap alert', () => {
      const a = alertsOf(GAPPY, 'SEQUENCE_GAP');
      return a.length > 0 ? a : undefined;
    });
    assert.deepEqual([gap?.seq, gap?.bootId, gap?.hostId], [5, BOOT, GAPPY]);
    // The agent is asked, on ima.challenges, for the missing record up to the first one seen past it.
    const request = await eventually('resend request', () =>
      challenges.seen.find((s) => s.key === GAPPY && s.schema === 'ResendRequest'),
    );
    const { fromSeq, toSeq, bootId, hostId, reason, requestId } = request.value;
    assert.deepEqual([hostId, bootId, fromSeq, toSeq, reason], [GAPPY, BOOT, 5, 7, 'SEQUENCE_GAP']);
    assert.match(String(requestId), /^[0-9a-f]{32}$/);

    await produce(producer, TOPIC.measurements, 'LogRecord', records(GAPPY, 5, 10));
    const d = await docAt(GAPPY, 10);
    const offline = new PcrReplay();
    for (const r of records(GAPPY, 0, 10)) offline.extend(r);
    assert.deepEqual(d.replay, offline.state());
  });

  it('raises TEMPLATE_DIGEST_MISMATCH for a record changed in transit', async () => {
    const log = records(TAMPERED, 0, 6);
    const data = Buffer.from(log[3]!.templateData);
    data[data.length - 3]! ^= 0x20;
    log[3] = { ...log[3]!, templateData: data };
    await produce(producer, TOPIC.measurements, 'BootEvent', [bootEvent(TAMPERED, BOOT)]);
    await produce(producer, TOPIC.measurements, 'LogRecord', log);

    await docAt(TAMPERED, 6, 'mismatch');
    const [alert] = await eventually('digest alert', () => {
      const a = alertsOf(TAMPERED, 'TEMPLATE_DIGEST_MISMATCH');
      return a.length > 0 ? a : undefined;
    });
    assert.deepEqual(
      [alert?.seq, alert?.bootId, alert?.bank, alert?.severity],
      [3, BOOT, 'sha1', 'CRITICAL'],
    );
  });

  it('dead-letters a malformed and an oversized record, and other hosts go on', async () => {
    const logRecordId = schemaCatalogue().current('LogRecord').id;
    const malformed = Buffer.concat([Buffer.from([0, 0, 0, 0, logRecordId]), Buffer.from('not avro at all')]);
    const huge: LogRecord = { ...logRecord(POISONED, BOOT, 1), templateData: Buffer.alloc(70 * 1024, 1) };
    const oversized = Buffer.concat([
      Buffer.from([0, 0, 0, 0, logRecordId]),
      schemaCatalogue().current('LogRecord').type.toBuffer(huge),
    ]);
    await produce(producer, TOPIC.measurements, 'BootEvent', [bootEvent(POISONED, BOOT)]);
    await producer.send(TOPIC.measurements, [
      { key: POISONED, value: malformed },
      { key: POISONED, value: oversized },
    ]);
    await produce(producer, TOPIC.measurements, 'LogRecord', records(AFTER_POISON, 0, 3));

    await docAt(AFTER_POISON, 3);
    // Every group reading ima.measurements (other tests, the demo) dead-letters them too: judge
    // each poisoned message once, by its offset.
    const byOffset = await eventually('a dead letter per poisoned message', () => {
      const m = new Map(
        deadLetters.seen.filter((s) => s.key === POISONED).map((l) => [Number(l.value.offset), l.value]),
      );
      return m.size >= 2 ? m : undefined;
    });
    const [first, second] = [...byOffset.keys()].sort((a, b) => a - b);
    assert.equal(byOffset.size, 2);
    assert.equal(second, first! + 1);
    assert.equal(byOffset.get(first!)?.reason, 'IMS_WIRE_DECODE');
    assert.equal(byOffset.get(second!)?.reason, 'IMS_WIRE_OVERSIZED');
    assert.ok([...byOffset.values()].every((l) => l.topic === TOPIC.measurements));
    assert.equal((await doc(POISONED))?.nextSeq, 0);
  });
});
