/**
 * Shards cut by the replayer (services/replayer/cuts.ts through applyBatch): each QuoteTaken or
 * quoted SnapshotEvent ends the shard that began at the previous cut, with the replay's values
 * there as its start; the agent's cut kind labels it; a kexec continues the chain under the new
 * bootId and a cold boot starts again from zeros.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { PcrReplay } from '../../../lib/ima/replay.ts';
import { applyBatch } from '../../../services/replayer/apply.ts';
import type { ReplayDoc } from '../../../services/replayer/doc.ts';
import type { MeasurementEvent, ReplayEffect } from '../../../services/replayer/events.ts';
import { pcrsToJson } from '../../../services/replayer/pcrs.ts';
import type { CutKind, LogRecord } from '../../../services/shared/records.ts';
import { bootEvent, logRecord, quoteTaken } from './fixtures.ts';

const H = 'host-cuts';
const B = 'boot-1:1';

const rec = (seq: number, bootId = B, name?: string): MeasurementEvent => ({
  type: 'LogRecord',
  value: logRecord(H, bootId, seq, name),
});
const taken = (seq: number, bootId = B): MeasurementEvent => ({
  type: 'QuoteTaken',
  value: quoteTaken(H, bootId, seq),
});
const cutEvent = (seq: number, kind: CutKind, quoteId: string | null = `q-${seq}`): MeasurementEvent => ({
  type: 'SnapshotEvent',
  value: { hostId: H, bootId: B, seq, kind, quoteId, at: 0 },
});
const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);

function run(doc: ReplayDoc | null, events: MeasurementEvent[]) {
  return applyBatch({ hostId: H, doc, pin: null, events, now: 1000 });
}

function checkpoints(effects: ReplayEffect[]) {
  return effects.flatMap((e) => (e.kind === 'checkpoint' ? [e] : []));
}

function offline(records: LogRecord[]): PcrReplay {
  const r = new PcrReplay();
  for (const x of records) r.extend(x);
  return r;
}

describe('shards cut by the replayer', () => {
  it('starts each shard at the previous cut, with the replay values there', () => {
    const out = run(null, [
      { type: 'BootEvent', value: bootEvent(H, B) },
      ...range(0, 3).map((s) => rec(s)),
      taken(3),
      ...range(3, 6).map((s) => rec(s)),
      taken(6),
    ]);
    const [first, second] = checkpoints(out.effects);

    assert.deepEqual([first?.cut?.startSeq, first?.cut?.startPcrs, first?.cut?.kind], [0, null, null]);
    assert.equal(second?.cut?.startSeq, 3);
    assert.deepEqual(second?.cut?.startPcrs, pcrsToJson(first!.checkpoint.pcrs));
    assert.deepEqual([out.doc?.shardStart, out.doc?.cuts.length], [6, 2]);
  });

  it('keeps only the live schemes in the start values once a quote pinned one', () => {
    const one = run(null, [
      { type: 'BootEvent', value: bootEvent(H, B) },
      ...range(0, 2).map((s) => rec(s)),
      taken(2),
    ]);
    const two = applyBatch({
      hostId: H,
      doc: one.doc,
      pin: { bootId: B, scheme: 'perbank' },
      events: [rec(2), taken(3)],
      now: 1000,
    });
    const [cp] = checkpoints(two.effects);

    assert.equal(cp?.cut?.startSeq, 2);
    assert.deepEqual(
      cp?.cut?.startPcrs,
      pcrsToJson(checkpoints(one.effects)[0]!.checkpoint.pcrs.filter((p) => p.scheme === 'perbank')),
    );
  });

  it('gives a redelivered QuoteTaken the same shard', () => {
    const one = run(null, [
      { type: 'BootEvent', value: bootEvent(H, B) },
      ...range(0, 4).map((s) => rec(s)),
      taken(4),
    ]);
    const again = run(one.doc, [taken(4)]);

    assert.deepEqual(checkpoints(again.effects)[0]?.cut, checkpoints(one.effects)[0]?.cut);
    assert.equal(again.doc?.shardStart, 4);
  });

  it('labels the shard with the kind of a SnapshotEvent that follows its QuoteTaken, once', () => {
    const out = run(null, [
      { type: 'BootEvent', value: bootEvent(H, B) },
      ...range(0, 4).map((s) => rec(s)),
      taken(4),
      cutEvent(4, 'STAGING'),
    ]);
    const cps = checkpoints(out.effects);

    assert.equal(cps.length, 1);
    assert.deepEqual([cps[0]?.checkpoint.seq, cps[0]?.cut?.startSeq, cps[0]?.cut?.kind], [4, 0, 'STAGING']);
  });

  it('labels it from a later batch too, checkpointing it again from the recent values', () => {
    const one = run(null, [
      { type: 'BootEvent', value: bootEvent(H, B) },
      ...range(0, 4).map((s) => rec(s)),
      taken(4),
    ]);
    const two = run(one.doc, [cutEvent(4, 'VIRTUAL')]);
    const [cp] = checkpoints(two.effects);

    assert.deepEqual([cp?.checkpoint.seq, cp?.cut?.startSeq, cp?.cut?.kind], [4, 0, 'VIRTUAL']);
    assert.deepEqual(cp?.checkpoint.pcrs, checkpoints(one.effects)[0]?.checkpoint.pcrs);
  });

  it('cuts at a SnapshotEvent that comes before its QuoteTaken, and past records not yet seen', () => {
    const out = run(null, [
      { type: 'BootEvent', value: bootEvent(H, B) },
      ...range(0, 2).map((s) => rec(s)),
      cutEvent(2, 'VIRTUAL'),
      taken(2),
      cutEvent(5, 'STAGING'),
    ]);
    assert.deepEqual(
      checkpoints(out.effects).map((c) => [c.checkpoint.seq, c.cut?.kind]),
      [[2, 'VIRTUAL']],
    );
    const later = run(
      out.doc,
      range(2, 5).map((s) => rec(s)),
    );
    const [cp] = checkpoints(later.effects);

    assert.deepEqual([cp?.checkpoint.seq, cp?.cut?.startSeq, cp?.cut?.kind], [5, 2, 'STAGING']);
  });

  it('moves only the next shard start at a cut without a quote', () => {
    const out = run(null, [
      { type: 'BootEvent', value: bootEvent(H, B) },
      ...range(0, 3).map((s) => rec(s)),
      cutEvent(3, 'SNAPSHOT_AGGREGATE', null),
      ...range(3, 5).map((s) => rec(s)),
      taken(5),
    ]);
    const cps = checkpoints(out.effects);

    assert.equal(cps.length, 1);
    assert.deepEqual([cps[0]?.cut?.startSeq, cps[0]?.cut?.kind], [3, null]);
  });
});

describe('kexec and reboot on the replayer side', () => {
  const B2 = 'boot-2:1';
  const B3 = 'boot-3:2';

  it('continues the PCR chain under the kexec bootId, a second boot_aggregate being an ordinary record', () => {
    const first = range(0, 4).map((s) => logRecord(H, B, s));
    const kexeced = [logRecord(H, B2, 4, 'boot_aggregate'), ...range(5, 8).map((s) => logRecord(H, B2, s))];
    const one = run(null, [
      { type: 'BootEvent', value: bootEvent(H, B) },
      ...first.map((value): MeasurementEvent => ({ type: 'LogRecord', value })),
      taken(4),
    ]);
    const two = run(one.doc, [
      { type: 'BootEvent', value: { ...bootEvent(H, B2, 'KEXEC'), firstSeq: 4 } },
      ...kexeced.map((value): MeasurementEvent => ({ type: 'LogRecord', value })),
      taken(8, B2),
    ]);

    assert.deepEqual(
      two.effects.map((e) => e.kind),
      ['checkpoint'],
      'no alert for the second boot_aggregate',
    );
    const [cp] = checkpoints(two.effects);
    assert.deepEqual([cp?.checkpoint.bootId, cp?.checkpoint.seq, cp?.cut?.startSeq], [B2, 8, 4]);
    assert.deepEqual(cp?.cut?.startPcrs, pcrsToJson(checkpoints(one.effects)[0]!.checkpoint.pcrs));
    const truth = offline([...first, ...kexeced]);
    const sha256 = cp?.checkpoint.pcrs.find((p) => p.scheme === 'perbank' && p.bank === 'sha256');
    assert.deepEqual(new Uint8Array(sha256!.value), truth.value('perbank', 'sha256', 10));
    assert.deepEqual([two.doc?.bootId, two.doc?.pastBoots], [B2, [B]]);

    // Events of the boot left behind are stale now, not a rewind.
    const stale = run(two.doc, [rec(8, B), taken(9, B)]);
    assert.equal(stale.doc?.nextSeq, 8);
    assert.deepEqual(stale.effects, []);
  });

  it('starts a cold boot (new resetCount) from zeros, its first shard at 0', () => {
    const one = run(null, [
      { type: 'BootEvent', value: bootEvent(H, B) },
      ...range(0, 4).map((s) => rec(s)),
      taken(4),
    ]);
    const cold = range(0, 3).map((s) => logRecord(H, B3, s));
    const two = run(one.doc, [
      { type: 'BootEvent', value: bootEvent(H, B3) },
      ...cold.map((value): MeasurementEvent => ({ type: 'LogRecord', value })),
      taken(3, B3),
    ]);
    const [cp] = checkpoints(two.effects);

    assert.deepEqual([cp?.checkpoint.bootId, cp?.cut?.startSeq, cp?.cut?.startPcrs], [B3, 0, null]);
    const sha1 = cp?.checkpoint.pcrs.find((p) => p.scheme === 'perbank' && p.bank === 'sha1');
    assert.deepEqual(new Uint8Array(sha1!.value), offline(cold).value('perbank', 'sha1', 10));
  });
});
