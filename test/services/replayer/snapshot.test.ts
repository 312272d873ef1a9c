import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';

import { toHex } from '../../../lib/bytes/hex.ts';
import { buildImaBuf } from '../../../lib/ima/encode.ts';
import { PcrReplay } from '../../../lib/ima/replay.ts';
import { type ApplyInput, applyBatch } from '../../../services/replayer/apply.ts';
import type { ReplayDoc } from '../../../services/replayer/doc.ts';
import type { MeasurementEvent, ReplayEffect } from '../../../services/replayer/events.ts';
import { parseClosedEnd, snapshotClaim } from '../../../services/replayer/snapshot.ts';
import type { LogRecord } from '../../../services/shared/records.ts';
import { bootEvent, logRecord, quoteTaken } from './fixtures.ts';

const H = 'host-s';
const B = 'boot-s:1';
const S = 6;

const file = (seq: number) => logRecord(H, B, seq);

/** An ima-buf `snapshot_aggregate` record at `seq` claiming `text`, as the 2023 RFC's kernel logs it. */
function snapshotRecord(seq: number, text: string): LogRecord {
  const buf = Buffer.from(text, 'latin1');
  const digest = createHash('sha256').update(buf).digest();
  const data = Buffer.from(buildImaBuf({ alg: 'sha256', digest, name: 'snapshot_aggregate', buf }));

  return { ...file(seq), templateName: 'ima-buf', templateData: data, templateDigest: sha1(data) };
}

const sha1 = (b: Uint8Array) => createHash('sha1').update(b).digest();

/** The claim a kernel would make at `seq`: PCR 10 of both banks after records [0, seq). */
function claimAfter(
  records: LogRecord[],
  tweak: (bank: string, hex: string) => string = (_, h) => h,
): string {
  const r = offline(records);
  const el = (bank: 'sha1' | 'sha256') => `${bank}:PCR10:${tweak(bank, toHex(r.value('perbank', bank, 10)))}`;

  return `Snapshot_Attempt_Count=1;${el('sha1')},${el('sha256')};`;
}

function offline(records: LogRecord[]): PcrReplay {
  const r = new PcrReplay();
  for (const x of records) r.extend(x);
  return r;
}

const before = () => Array.from({ length: S }, (_, i) => file(i));
const ev = (value: LogRecord): MeasurementEvent => ({ type: 'LogRecord', value });
const run = (doc: ReplayDoc | null, events: MeasurementEvent[], extra: Partial<ApplyInput> = {}) =>
  applyBatch({ hostId: H, doc, pin: null, events, now: 1000, ...extra });
const kinds = (effects: ReplayEffect[]) =>
  effects.map((e) => (e.kind === 'alert' ? `alert:${e.alert.kind}` : e.kind));
const alertOf = (effects: ReplayEffect[]) => effects.flatMap((e) => (e.kind === 'alert' ? [e.alert] : []))[0];

describe('snapshotClaim', () => {
  it('recognises a snapshot_aggregate record and reads its claim', () => {
    const claim = snapshotClaim(snapshotRecord(S, claimAfter(before())));

    assert.ok(claim?.ok);
    assert.deepEqual([...claim.agg.pcrs.keys()], ['sha1', 'sha256']);
    assert.equal(snapshotClaim(file(3)), undefined);
  });

  it('reports a claim that does not parse instead of throwing', () => {
    const claim = snapshotClaim(snapshotRecord(S, 'Snapshot_Attempt_Count=x;'));

    assert.equal(claim?.ok, false);
  });
});

describe('parseClosedEnd', () => {
  it('reads the quote-checker closed end and ignores junk', () => {
    assert.deepEqual(parseClosedEnd('{"bootId":"b","endSeq":4,"scheme":"perbank"}'), {
      bootId: 'b',
      endSeq: 4,
    });
    assert.equal(parseClosedEnd('{"bootId":"b"}'), null);
    assert.equal(parseClosedEnd('not json'), null);
    assert.equal(parseClosedEnd(null), null);
  });
});

describe('applyBatch with snapshot_aggregate', () => {
  it('accepts a snapshot that agrees with the replay and extends it like any record', () => {
    const snap = snapshotRecord(S, claimAfter(before()));
    const all = [...before(), snap, file(S + 1)];
    const out = run(null, [{ type: 'BootEvent', value: bootEvent(H, B) }, ...all.map(ev)]);

    assert.deepEqual(kinds(out.effects), []);
    assert.deepEqual([out.doc?.nextSeq, out.doc?.status], [S + 2, 'ok']);
    assert.deepEqual(out.doc?.replay, offline(all).state());
  });

  it('raises SNAPSHOT_MISMATCH naming the first bank and PCR that differ, and keeps replaying', () => {
    const lie = claimAfter(before(), (bank, hex) => (bank === 'sha256' ? `00${hex.slice(2)}` : hex));
    const snap = snapshotRecord(S, lie);
    const all = [...before(), snap, file(S + 1)];
    const out = run(null, [{ type: 'BootEvent', value: bootEvent(H, B) }, ...all.map(ev)]);

    assert.deepEqual(kinds(out.effects), ['alert:SNAPSHOT_MISMATCH']);
    const alert = alertOf(out.effects)!;
    assert.deepEqual(
      [alert.hostId, alert.bootId, alert.seq, alert.bank, alert.pcr, alert.severity],
      [H, B, S, 'sha256', 10, 'CRITICAL'],
    );
    assert.deepEqual([out.doc?.nextSeq, out.doc?.status], [S + 2, 'mismatch']);
    assert.deepEqual(out.doc?.replay, offline(all).state());
  });

  it('raises SNAPSHOT_MISMATCH without a bank for a claim that cannot be read', () => {
    const out = run(null, [
      { type: 'BootEvent', value: bootEvent(H, B) },
      ...before().map(ev),
      ev(snapshotRecord(S, 'Snapshot_Attempt_Count=1;sha1:PCR10:00;')),
    ]);

    assert.deepEqual(kinds(out.effects), ['alert:SNAPSHOT_MISMATCH']);
    assert.equal(alertOf(out.effects)?.bank, null);
    assert.equal(out.doc?.nextSeq, S + 1);
  });

  it('lets a replayer with no state start from a snapshot, unverified, and checkpoint the true values', () => {
    const snap = snapshotRecord(S, claimAfter(before()));
    const out = run(null, [
      ev(snap),
      ev(file(S + 1)),
      { type: 'QuoteTaken', value: quoteTaken(H, B, S + 2) },
    ]);

    assert.deepEqual(kinds(out.effects), ['checkpoint']);
    assert.deepEqual(
      [out.doc?.nextSeq, out.doc?.status, out.doc?.unverifiedFrom, out.doc?.shardStart],
      [S + 2, 'unverified', S, S + 2],
    );
    // The first shard starts at the snapshot, from the values it claims.
    const cut = out.effects[0]?.kind === 'checkpoint' ? out.effects[0].cut : null;
    assert.equal(cut?.startSeq, S);
    assert.deepEqual(cut?.startPcrs, out.doc?.startPcrs);
    const claimed = out.doc?.startPcrs?.find((p) => p.scheme === 'perbank' && p.bank === 'sha256');
    assert.equal(claimed?.value, toHex(offline(before()).value('perbank', 'sha256', 10)));
    // The records before the snapshot were never seen, yet the checkpoint is what the TPM holds.
    const truth = offline([...before(), snap, file(S + 1)]);
    const first = out.effects[0];
    const ckpt = first?.kind === 'checkpoint' ? first.checkpoint : undefined;
    for (const bank of ['sha1', 'sha256'] as const) {
      const v = ckpt?.pcrs.find((p) => p.scheme === 'perbank' && p.bank === bank && p.pcr === 10);
      assert.equal(toHex(v!.value), toHex(truth.value('perbank', bank, 10)));
    }
  });

  it('starts from a snapshot after a BootEvent of the boot, but not once records were replayed', () => {
    const snap = snapshotRecord(S, claimAfter(before()));
    const fresh = run(null, [{ type: 'BootEvent', value: bootEvent(H, B) }, ev(snap)]);
    assert.deepEqual([fresh.doc?.nextSeq, fresh.doc?.status], [S + 1, 'unverified']);

    const started = run(null, [{ type: 'BootEvent', value: bootEvent(H, B) }, ev(file(0))]);
    const held = run(started.doc, [ev(snap)]);
    assert.deepEqual(kinds(held.effects), ['alert:SEQUENCE_GAP', 'resend']);
    assert.equal(held.doc?.unverifiedFrom, null);
  });

  it('stays unverified until a quote closes a shard of the boot past the snapshot', () => {
    const snap = snapshotRecord(S, claimAfter(before()));
    const start = run(null, [ev(snap)]);
    const next = [ev(file(S + 1))];

    const otherBoot = run(start.doc, next, { closed: { bootId: 'other:1', endSeq: 99 } });
    assert.equal(otherBoot.doc?.status, 'unverified');
    const notPast = run(start.doc, next, { closed: { bootId: B, endSeq: S } });
    assert.equal(notPast.doc?.status, 'unverified');

    const confirmed = run(start.doc, next, { closed: { bootId: B, endSeq: S + 1 } });
    assert.deepEqual(
      [confirmed.doc?.status, confirmed.doc?.unverifiedFrom, confirmed.doc?.startPcrs],
      ['ok', null, null],
    );
  });

  it('stays unverified across a gap that closes', () => {
    const snap = snapshotRecord(S, claimAfter(before()));
    const held = run(null, [ev(snap), ev(file(S + 2))]);
    assert.equal(held.doc?.status, 'gap');
    const filled = run(held.doc, [ev(file(S + 1)), ev(file(S + 2))]);

    assert.deepEqual([filled.doc?.nextSeq, filled.doc?.status], [S + 3, 'unverified']);
  });
});
