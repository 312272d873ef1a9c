import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { PcrReplay } from '../../../lib/ima/replay.ts';
import { type ApplyInput, applyBatch, RECENT_PCRS_KEPT } from '../../../services/replayer/apply.ts';
import type { ReplayDoc } from '../../../services/replayer/doc.ts';
import type { MeasurementEvent, ReplayEffect } from '../../../services/replayer/events.ts';
import { QUOTE_TRAIL_MAX } from '../../../services/shared/quote-trail.ts';
import type { LogRecord } from '../../../services/shared/records.ts';
import { bootEvent, logRecord, quoteTaken, snapshot } from './fixtures.ts';

const H = 'host-a';
const B = 'boot-1:1';

const rec = (seq: number, bootId = B): MeasurementEvent => ({
  type: 'LogRecord',
  value: logRecord(H, bootId, seq),
});
const boot = (bootId = B, kind: 'COLD' | 'KEXEC' = 'COLD'): MeasurementEvent => ({
  type: 'BootEvent',
  value: bootEvent(H, bootId, kind),
});
const taken = (seq: number, bootId = B): MeasurementEvent => ({
  type: 'QuoteTaken',
  value: quoteTaken(H, bootId, seq),
});

function run(doc: ReplayDoc | null, events: MeasurementEvent[], extra: Partial<ApplyInput> = {}) {
  return applyBatch({ hostId: H, doc, pin: null, events, now: 1000, ...extra });
}

function offline(records: LogRecord[]): PcrReplay {
  const r = new PcrReplay();
  for (const x of records) r.extend(x);
  return r;
}

const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);
function nth<K extends ReplayEffect['kind']>(effects: ReplayEffect[], i: number, kind: K) {
  const e = effects[i];
  assert.equal(e?.kind, kind);
  return e as Extract<ReplayEffect, { kind: K }>;
}

const kinds = (effects: ReplayEffect[]) =>
  effects.map((e) => (e.kind === 'alert' ? `alert:${e.alert.kind}` : e.kind));

describe('applyBatch', () => {
  it('replays an honest stream and checkpoints where the agent quoted', () => {
    const out = run(null, [boot(), ...range(0, 5).map((s) => rec(s)), taken(5)]);

    assert.equal(out.applied, 5);
    assert.equal(out.doc?.nextSeq, 5);
    assert.equal(out.doc?.status, 'ok');
    assert.deepEqual(kinds(out.effects), ['checkpoint']);
    const ckpt = nth(out.effects, 0, 'checkpoint').checkpoint;
    const want = offline(range(0, 5).map((s) => logRecord(H, B, s)));
    const sha256 = ckpt?.pcrs.find((p) => p.scheme === 'perbank' && p.bank === 'sha256' && p.pcr === 10);
    assert.deepEqual(new Uint8Array(sha256!.value), want.value('perbank', 'sha256', 10));
    assert.deepEqual(ckpt?.schemes, ['perbank', 'padded']);
    assert.equal(ckpt?.pcrs.length, 4);
  });

  it('applies nothing twice when a batch is delivered again', () => {
    const events = [boot(), ...range(0, 4).map((s) => rec(s))];
    const first = run(null, events);
    const again = run(first.doc, events);

    assert.equal(again.applied, 0);
    assert.equal(again.skipped, 5);
    assert.equal(again.changed, false);
    assert.equal(PcrReplay.fromState(again.doc?.replay).count, 4);
  });

  it('stores a checkpoint announced alone in a later batch (the join looks for it in Redis)', () => {
    const records = run(null, [boot(), ...range(0, 3).map((s) => rec(s))]);
    const alone = run(records.doc, [taken(3)]);

    assert.equal(alone.changed, true);
    assert.deepEqual(kinds(alone.effects), ['checkpoint']);
    assert.equal(alone.doc?.nextSeq, 3);
  });

  it('gives the same state whether records come in one batch or several', () => {
    const whole = run(null, [boot(), ...range(0, 6).map((s) => rec(s))]);
    const a = run(null, [boot(), ...range(0, 2).map((s) => rec(s))]);
    const b = run(
      a.doc,
      range(0, 4).map((s) => rec(s)),
    );
    const c = run(
      b.doc,
      range(4, 6).map((s) => rec(s)),
    );

    assert.deepEqual(c.doc?.replay, whole.doc?.replay);
    assert.equal(b.applied + c.applied + a.applied, 6);
  });

  it('holds a host at a gap, asks for the range, and resumes when it arrives', () => {
    const held = run(null, [boot(), rec(0), rec(1), rec(3)]);
    assert.deepEqual(kinds(held.effects), ['alert:SEQUENCE_GAP', 'resend']);
    const gapAlert = nth(held.effects, 0, 'alert').alert;
    assert.equal(gapAlert?.seq, 2);
    assert.equal(gapAlert?.bootId, B);
    const resend = nth(held.effects, 1, 'resend').request;
    assert.deepEqual(
      [resend.hostId, resend.bootId, resend.fromSeq, resend.toSeq, resend.reason, resend.at],
      [H, B, 2, 4, 'SEQUENCE_GAP', 1000],
    );
    assert.match(resend.requestId, /^[0-9a-f]{32}$/);
    assert.equal(held.doc?.status, 'gap');
    assert.equal(held.doc?.nextSeq, 2);

    const later = run(held.doc, [rec(4)]);
    assert.deepEqual(kinds(later.effects), []);
    assert.equal(later.doc?.gap?.heldTo, 5);

    const filled = run(later.doc, [rec(2), rec(3)]);
    assert.equal(filled.doc?.nextSeq, 4);
    assert.deepEqual(kinds(filled.effects), ['resend']);
    const again = nth(filled.effects, 0, 'resend').request;
    assert.deepEqual([again?.fromSeq, again?.toSeq], [4, 5]);

    const done = run(filled.doc, [rec(4), rec(5)]);
    assert.equal(done.doc?.status, 'ok');
    assert.equal(done.doc?.gap, null);
    assert.deepEqual(done.doc?.replay, run(null, [boot(), ...range(0, 6).map((s) => rec(s))]).doc?.replay);
  });

  it('raises the same gap alert and resend ids when the gap is seen again after a redelivery', () => {
    const a = run(null, [boot(), rec(0), rec(2)]);
    const b = run(null, [boot(), rec(0), rec(2)], { now: 5000 });
    const ids = (r: typeof a) =>
      r.effects.map((e) =>
        e.kind === 'alert' ? e.alert.alertId : e.kind === 'resend' ? e.request.requestId : '',
      );

    assert.deepEqual(ids(a), ids(b));
    const other = run(null, [boot(), rec(0), rec(3)]);
    assert.notEqual(nth(other.effects, 1, 'resend').request.requestId, ids(a)[1]);
  });

  it('asks no second time when the resent range and the records dropped meanwhile come together', () => {
    const held = run(null, [boot(), rec(0), rec(2)]);
    const later = run(held.doc, [rec(3), rec(4)]);
    assert.deepEqual(kinds(later.effects), []);

    const filled = run(later.doc, [rec(1), rec(2), rec(3), rec(4)]);
    assert.deepEqual(kinds(filled.effects), []);
    assert.deepEqual([filled.doc?.nextSeq, filled.doc?.status, filled.doc?.gap], [5, 'ok', null]);
    assert.deepEqual(later.doc?.gap, { fromSeq: 1, toSeq: 3, heldTo: 5 });
  });

  it('checkpoints a quote announced beyond a gap once the records arrive', () => {
    const held = run(null, [boot(), rec(0), taken(3)]);
    assert.deepEqual(held.doc?.pendingQuotes, [{ seq: 3, quoteId: 'q-3' }]);
    assert.deepEqual(kinds(held.effects), ['alert:SEQUENCE_GAP', 'resend']);

    const filled = run(held.doc, [rec(1), rec(2)]);
    assert.deepEqual(kinds(filled.effects), ['checkpoint']);
    const ckpt = nth(filled.effects, 0, 'checkpoint').checkpoint;
    assert.equal(ckpt?.seq, 3);
    assert.equal(filled.doc?.status, 'ok');
  });

  it('starts a new boot from zeros and ignores the old boot when redelivered', () => {
    const one = run(null, [boot(), rec(0), rec(1)]);
    const two = run(one.doc, [boot('boot-2:2'), rec(0, 'boot-2:2')]);
    assert.equal(two.doc?.bootId, 'boot-2:2');
    assert.equal(two.doc?.nextSeq, 1);
    assert.deepEqual(two.doc?.pastBoots, [B]);

    const stale = run(two.doc, [boot(), rec(0), rec(1), rec(2)]);
    assert.equal(stale.applied, 0);
    assert.equal(stale.doc?.bootId, 'boot-2:2');
    assert.equal(PcrReplay.fromState(stale.doc?.replay).count, 1);
  });

  it('keeps the PCRs across a kexec', () => {
    const one = run(null, [boot(), rec(0), rec(1)]);
    const kexec = run(one.doc, [boot('boot-1b:1', 'KEXEC'), rec(2, 'boot-1b:1')]);
    const straight = run(null, [boot(), rec(0), rec(1), rec(2)]);

    assert.equal(kexec.doc?.nextSeq, 3);
    assert.deepEqual(kexec.doc?.replay, straight.doc?.replay);
  });

  it('alerts on data that does not match its digest and extends the data as received', () => {
    const tampered = logRecord(H, B, 1);
    const data = Buffer.from(tampered.templateData);
    data[data.length - 2]! ^= 0x01;
    tampered.templateData = data;
    const out = run(null, [boot(), rec(0), { type: 'LogRecord', value: tampered }, rec(2)]);

    assert.deepEqual(kinds(out.effects), ['alert:TEMPLATE_DIGEST_MISMATCH']);
    const alert = nth(out.effects, 0, 'alert').alert;
    assert.deepEqual([alert?.seq, alert?.bootId, alert?.hostId, alert?.severity], [1, B, H, 'CRITICAL']);
    assert.equal(out.doc?.nextSeq, 3);
    assert.equal(out.doc?.status, 'mismatch');
    const honest = run(null, [boot(), rec(0), rec(1), rec(2)]);
    assert.notDeepEqual(out.doc?.replay, honest.doc?.replay);
  });

  it('does not take a violation (all-zero digest) for tampering', () => {
    const violation = logRecord(H, B, 1);
    violation.templateDigest = Buffer.alloc(20);
    const out = run(null, [boot(), rec(0), { type: 'LogRecord', value: violation }]);

    assert.deepEqual(kinds(out.effects), []);
    assert.equal(out.doc?.nextSeq, 2);
  });

  it('says the state was lost when records arrive part-way into a boot with no state', () => {
    const out = run(null, [rec(5)]);

    assert.deepEqual(kinds(out.effects), ['alert:REPLAY_STATE_LOST', 'alert:SEQUENCE_GAP', 'resend']);
    const resend = nth(out.effects, 2, 'resend').request;
    assert.deepEqual([resend?.fromSeq, resend?.toSeq], [0, 6]);
  });

  it('drops the other scheme once a quote pinned one', () => {
    const one = run(null, [boot(), rec(0)]);
    const pinned = run(one.doc, [rec(1), taken(2)], { pin: { bootId: B, scheme: 'perbank' } });

    assert.deepEqual(pinned.doc?.schemes, ['perbank']);
    const ckpt = nth(pinned.effects, 0, 'checkpoint').checkpoint;
    assert.deepEqual(ckpt?.schemes, ['perbank']);
    assert.ok(ckpt?.pcrs.every((p) => p.scheme === 'perbank'));
  });

  it('ignores a pin of another boot', () => {
    const one = run(null, [boot(), rec(0)]);
    const out = run(one.doc, [rec(1)], { pin: { bootId: 'other:9', scheme: 'padded' } });

    assert.deepEqual(out.doc?.schemes, ['perbank', 'padded']);
  });

  it('marks the shard start at a cut', () => {
    const out = run(null, [
      boot(),
      rec(0),
      rec(1),
      { type: 'SnapshotEvent', value: snapshot(H, B, 2) },
      rec(2),
    ]);

    assert.equal(out.doc?.shardStart, 2);
    assert.equal(out.doc?.nextSeq, 3);
  });
});

describe('applyBatch with a QuoteTaken behind the records', () => {
  const valueAt = (
    ckpt: { pcrs: { scheme: string; bank: string; pcr: number; value: Buffer }[] },
    bank: string,
  ) => ckpt.pcrs.find((p) => p.scheme === 'perbank' && p.bank === bank && p.pcr === 10)?.value;
  const truthAt = (seq: number) => offline(range(0, seq).map((s) => logRecord(H, B, s)));

  it('checkpoints a seq the batch already passed with the PCR values at that seq', () => {
    const out = run(null, [boot(), ...range(0, 5).map((s) => rec(s)), taken(3)]);

    assert.deepEqual(kinds(out.effects), ['checkpoint']);
    const ckpt = nth(out.effects, 0, 'checkpoint').checkpoint;
    assert.equal(ckpt.seq, 3);
    assert.deepEqual(ckpt.schemes, ['perbank', 'padded']);
    assert.equal(ckpt.pcrs.length, 4);
    assert.deepEqual(new Uint8Array(valueAt(ckpt, 'sha256')!), truthAt(3).value('perbank', 'sha256', 10));
    assert.notDeepEqual(new Uint8Array(valueAt(ckpt, 'sha256')!), truthAt(5).value('perbank', 'sha256', 10));
    assert.equal(out.doc?.nextSeq, 5);
  });

  it('checkpoints it from the stored ring when it comes in a later batch, and the same again on redelivery', () => {
    const records = run(null, [boot(), ...range(0, 6).map((s) => rec(s))]);
    const late = run(records.doc, [taken(4)]);
    const again = run(late.doc, [taken(4)]);

    const ckpt = nth(late.effects, 0, 'checkpoint').checkpoint;
    assert.equal(ckpt.seq, 4);
    assert.deepEqual(new Uint8Array(valueAt(ckpt, 'sha1')!), truthAt(4).value('perbank', 'sha1', 10));
    assert.deepEqual(nth(again.effects, 0, 'checkpoint').checkpoint, ckpt);
  });

  it('checkpoints a QuoteTaken however far it trails its records inside one batch', () => {
    const n = RECENT_PCRS_KEPT + 12;
    const out = run(null, [boot(), ...range(0, n).map((s) => rec(s)), taken(3), rec(n), taken(n - 1)]);

    const ckpts = out.effects.filter((e) => e.kind === 'checkpoint').map((e) => e.checkpoint);
    assert.deepEqual(
      ckpts.map((c) => c.seq),
      [3, n - 1],
    );
    assert.deepEqual(new Uint8Array(valueAt(ckpts[0]!, 'sha1')!), truthAt(3).value('perbank', 'sha1', 10));
    assert.deepEqual(
      new Uint8Array(valueAt(ckpts[1]!, 'sha1')!),
      truthAt(n - 1).value('perbank', 'sha1', 10),
    );
    // The named seqs are not stored: the doc's ring still holds only the batch's last seqs.
    assert.deepEqual(
      out.doc?.recent.map((r) => r.seq),
      range(n + 1 - RECENT_PCRS_KEPT + 1, n + 2),
    );
  });

  it('keeps a bounded ring for later batches, so a QuoteTaken too far behind them is skipped', () => {
    const n = RECENT_PCRS_KEPT + 12;
    const records = run(null, [boot(), ...range(0, n).map((s) => rec(s))]);
    const trailing = QUOTE_TRAIL_MAX;
    const inReach = run(records.doc, [taken(n - trailing)]);
    const tooFar = run(records.doc, [taken(n - RECENT_PCRS_KEPT)]);

    assert.deepEqual(
      records.doc?.recent.map((r) => r.seq),
      range(n - RECENT_PCRS_KEPT + 1, n + 1),
    );
    assert.equal(nth(inReach.effects, 0, 'checkpoint').checkpoint.seq, n - trailing);
    assert.deepEqual(kinds(tooFar.effects), []);
    assert.equal(tooFar.skipped, 1);
  });

  it('checkpoints only the scheme pinned since the values were kept', () => {
    const records = run(null, [boot(), ...range(0, 4).map((s) => rec(s))]);
    const late = run(records.doc, [taken(2)], { pin: { bootId: B, scheme: 'perbank' } });

    const ckpt = nth(late.effects, 0, 'checkpoint').checkpoint;
    assert.deepEqual(ckpt.schemes, ['perbank']);
    assert.ok(ckpt.pcrs.length > 0 && ckpt.pcrs.every((p) => p.scheme === 'perbank'));
  });
});
