/**
 * A Linux 7.2 host that cuts its log (kernel emulator + real agent process, staging "stage all"),
 * through the real pipeline: the agent's records, QuoteTakens, SnapshotEvents and quotes on the
 * real topics, one replayer and two quote-checkers in-process. Every cut must come out as a
 * CLOSED shard labelled STAGING, the shards contiguous from the boot's start, with no alert.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { generateLog } from '../../lib/ima/synthetic.ts';
import { ensureAk, TpmTools } from '../../services/agent/tpm.ts';
import { newEpoch, publishEpoch } from '../../services/nonces/main.ts';
import { type QuoteCheckerHandle, startQuoteChecker } from '../../services/quote-checker/main.ts';
import { type ReplayerHandle, startReplayer } from '../../services/replayer/main.ts';
import type { ImsProducer } from '../../services/shared/kafka.ts';
import type { Verdict } from '../../services/shared/records.ts';
import { TOPIC } from '../../services/shared/topics.ts';
import {
  BROKERS,
  cleanHosts,
  connectProducer,
  connectTestRedis,
  eventually,
  produce,
  quietLogger,
  REDIS_URL,
  watchTopic,
} from '../services/replayer/pipeline.ts';
import { AK_HANDLE, StagingHost } from './staging-host.ts';

const HOST = `e2e-cuts-${randomUUID().slice(0, 8)}`;
const CUT_RECORDS = 20;
const RECORDS = 60;
const base = mkdtempSync(join(tmpdir(), 'ims-e2e-cuts-'));

describe('a host cutting its log, through the pipeline', () => {
  const redis = connectTestRedis();
  let producer: ImsProducer;
  let replayer: ReplayerHandle;
  const checkers: QuoteCheckerHandle[] = [];
  let host: StagingHost;
  let verdicts: Awaited<ReturnType<typeof watchTopic>>;
  let alerts: Awaited<ReturnType<typeof watchTopic>>;

  before(async () => {
    producer = await connectProducer();
    [verdicts, alerts] = await Promise.all([
      watchTopic(TOPIC.verdicts, [HOST]),
      watchTopic(TOPIC.alerts, [HOST]),
    ]);
    replayer = await startReplayer({
      brokers: BROKERS,
      redisUrl: REDIS_URL,
      logger: quietLogger('replayer'),
    });
    for (let i = 0; i < 2; i++) {
      checkers.push(
        await startQuoteChecker({
          brokers: BROKERS,
          redisUrl: REDIS_URL,
          logger: quietLogger(),
          deadlineMs: 120_000,
          sweepIntervalMs: 1_000,
        }),
      );
    }
    await Promise.all([replayer.joined, ...checkers.map((c) => c.joined)]);
    host = await StagingHost.start(
      {
        hostId: HOST,
        brokers: BROKERS.join(','),
        topic: TOPIC.measurements,
        cutArgs: ['--cut', 'stage', '--cut-records', `${CUT_RECORDS}`],
      },
      base,
    );
    // The AK the agent uses, enrolled on first use (enrolment has its own tests).
    mkdirSync(join(base, 'enrol-tools'), { recursive: true });
    const ak = await ensureAk(new TpmTools(host.tpm.tcti, join(base, 'enrol-tools')), AK_HANDLE, 'rsa');
    await produce(producer, TOPIC.enrollments, 'Enrollment', [
      {
        hostId: HOST,
        akPublic: Buffer.from(ak.akPublic),
        akName: Buffer.from(ak.akName),
        ekPublic: Buffer.from(ak.ekPublic),
        ekCertificate: null,
        policy: 'tofu',
        status: 'active',
        at: Date.now(),
      },
    ]);
    await publishEpoch(producer, newEpoch(Date.now(), 10 * 60_000));
  });

  after(async () => {
    await host?.stopAgent('SIGTERM').catch(() => undefined);
    await host?.stop();
    await Promise.all([replayer?.stop(), ...checkers.map((c) => c.stop())]);
    await Promise.all([verdicts?.stop(), alerts?.stop()]);
    await producer?.disconnect();
    await cleanHosts(redis, [HOST]);
    await redis.quit();
    rmSync(base, { recursive: true, force: true });
  });

  it('closes one STAGING shard per cut, contiguous from the boot start, without alerts', async () => {
    await host.startAgent();
    const source = generateLog({ records: RECORDS, seed: 11 }).records;
    const closed = () =>
      verdicts.seen
        .map((v) => v.value as unknown as Verdict)
        .filter((v) => v.status === 'CLOSED' && v.cutKind === 'STAGING');
    const cuts = Math.floor(RECORDS / CUT_RECORDS);
    // A cut's worth of records at a time, each cut attested before the next records come.
    for (let k = 1; k <= cuts; k++) {
      await host.measure(source.slice((k - 1) * CUT_RECORDS, k * CUT_RECORDS));
      await eventually(
        `a STAGING shard closed up to ${k * CUT_RECORDS}`,
        () => (closed().some((v) => (v.endSeq ?? 0) >= k * CUT_RECORDS) ? true : undefined),
        120_000,
      ).catch((err: Error) => {
        const seen = verdicts.seen.map((v) => `${v.value.status} ${v.value.shardId} ${v.value.cutKind}`);
        const raised = alerts.seen.map((a) => `${a.value.kind}: ${a.value.message}`);
        throw new Error(`${err.message}; verdicts: ${seen.join(', ')}; alerts: ${raised.join(' | ')}`);
      });
    }

    // Every quote closes a shard (the agent may also quote outside a cut): together they are
    // contiguous from 0, and each cut's shard says STAGING.
    const all = verdicts.seen
      .map((v) => v.value as unknown as Verdict)
      .filter((v) => v.status === 'CLOSED' || v.status === 'FAILED');
    const shards = [...new Map(all.map((v) => [v.shardId, v])).values()].sort(
      (a, b) => a.startSeq - b.startSeq,
    );
    const summary = shards.map((s) => `${s.status} ${s.startSeq}-${s.endSeq} ${s.cutKind}`).join(', ');
    assert.equal(shards[0]?.startSeq, 0, summary);
    for (let i = 1; i < shards.length; i++) assert.equal(shards[i]!.startSeq, shards[i - 1]!.endSeq, summary);
    assert.ok(
      shards.every((s) => s.status === 'CLOSED' && s.quote !== null && s.akPolicy === 'tofu'),
      summary,
    );
    assert.ok(shards.filter((s) => s.cutKind === 'STAGING').length >= cuts, summary);
    // The emulator logs each batch before it extends it, so quotes land while the TPM is behind
    // or ahead of what was sent; every one must still be checkpointed and judged: no alert at all.
    const raised = alerts.seen.map((a) => `${a.value.kind}: ${a.value.message}`);
    assert.deepEqual(raised, [], summary);
  });
});
