/**
 * The Lua scripts of the replayer and quote-checker stores against the real Redis: the
 * compare-and-set that makes redelivery harmless, the outbox, and the join claim.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { QuoteStore } from '../../services/quote-checker/store.ts';
import { applyBatch } from '../../services/replayer/apply.ts';
import { hostKeys } from '../../services/replayer/keys.ts';
import { ReplayStore } from '../../services/replayer/store.ts';
import { bootEvent, logRecord } from '../services/replayer/fixtures.ts';
import { cleanHosts, connectTestRedis, uniqueHost } from '../services/replayer/pipeline.ts';

const redis = connectTestRedis();
const HOSTS: string[] = [];
after(async () => {
  await cleanHosts(redis, HOSTS);
  await redis.quit();
});

function host(label: string): string {
  const h = uniqueHost(label);
  HOSTS.push(h);
  return h;
}

describe('ReplayStore', () => {
  const store = new ReplayStore(redis);

  it('writes a batch only over the state it was applied to', async () => {
    const h = host('st-cas');
    const first = applyBatch({
      hostId: h,
      doc: null,
      pin: null,
      now: 1,
      events: [
        { type: 'BootEvent', value: bootEvent(h, 'b:1') },
        { type: 'LogRecord', value: logRecord(h, 'b:1', 0) },
      ],
    });
    assert.equal(await store.commit(h, null, first.doc!, [], null), true);
    // A second writer that also started from "no state" loses.
    assert.equal(await store.commit(h, null, first.doc!, [], null), false);

    const loaded = (await store.load([h])).get(h)!;
    assert.equal(loaded.doc?.nextSeq, 1);
    const next = applyBatch({
      hostId: h,
      doc: loaded.doc,
      pin: null,
      now: 2,
      events: [{ type: 'LogRecord', value: logRecord(h, 'b:1', 1) }],
    });
    assert.equal(await store.commit(h, loaded.raw, next.doc!, [], null), true);
    assert.equal(await store.commit(h, loaded.raw, next.doc!, [], null), false, 'stale expectation');
    assert.equal((await store.load([h])).get(h)?.doc?.nextSeq, 2);
  });

  it('stores checkpoints and the outbox with the state, and clears only the outbox it produced', async () => {
    const h = host('st-outbox');
    const r = applyBatch({
      hostId: h,
      doc: null,
      pin: null,
      now: 1,
      events: [{ type: 'BootEvent', value: bootEvent(h, 'b:1') }],
    });
    const checkpoint = { hostId: h, bootId: 'b:1', seq: 0, pcrs: [], schemes: ['perbank'], at: 1 };
    const outbox = { id: 'o-1', messages: [{ topic: 't', key: h, value: 'AA==' }] };
    assert.equal(await store.commit(h, null, r.doc!, [{ checkpoint, cut: null }], outbox), true);

    assert.ok((await redis.ttl(hostKeys.ckpt(h, 'b:1', 0))) > 0);
    assert.deepEqual((await store.load([h])).get(h)?.outbox, outbox);
    await store.clearOutbox(h, 'o-other');
    assert.deepEqual((await store.load([h])).get(h)?.outbox, outbox);
    await store.clearOutbox(h, 'o-1');
    assert.equal((await store.load([h])).get(h)?.outbox, null);
  });

  it('reports an unreadable stored state instead of failing the load', async () => {
    const h = host('st-corrupt');
    await redis.set(hostKeys.replay(h), '{"bootId": 7');
    const loaded = (await store.load([h])).get(h)!;

    assert.equal(loaded.doc, null);
    assert.equal(loaded.corrupt?.code, 'IMS_REPLAY_BAD_STATE');
    assert.equal(loaded.raw, '{"bootId": 7');
  });
});

describe('QuoteStore join', () => {
  const store = new QuoteStore(redis);
  const parked = { quoteId: 'q', hashAlg: 'sha256', attest: '00', quoted: null };

  it('lets exactly one arrival claim the join, whichever half comes second', async () => {
    const h = host('st-join');
    const lease = (token: string) => ({ token, now: Date.now(), ms: 30_000 });
    assert.equal((await store.joinCheckpoint(h, 'b:1', 5, lease('a'))).state, 'wait');
    assert.equal((await store.parkQuote(h, 'b:1', 5, parked, lease('a'))).state, 'parked');

    await redis.set(
      hostKeys.ckpt(h, 'b:1', 5),
      JSON.stringify({ hostId: h, bootId: 'b:1', seq: 5, pcrs: [], schemes: [], at: 0 }),
    );
    const claim = await store.joinCheckpoint(h, 'b:1', 5, lease('a'));
    assert.equal(claim.state, 'join');
    assert.equal((await store.joinCheckpoint(h, 'b:1', 5, lease('b'))).state, 'busy');
    assert.equal((await store.parkQuote(h, 'b:1', 5, parked, lease('b'))).state, 'busy');

    await store.recordVerdict(
      { hostId: h, bootId: 'b:1', seq: 5 },
      { shardId: 'x' },
      null,
      null,
      Buffer.alloc(0),
    );
    assert.equal((await store.joinCheckpoint(h, 'b:1', 5, lease('b'))).state, 'done');
  });

  it('hands an expired claim to the next arrival', async () => {
    const h = host('st-lease');
    await redis.set(
      hostKeys.ckpt(h, 'b:1', 1),
      JSON.stringify({ hostId: h, bootId: 'b:1', seq: 1, pcrs: [], schemes: [], at: 0 }),
    );
    const now = Date.now();
    assert.equal((await store.parkQuote(h, 'b:1', 1, parked, { token: 'a', now, ms: 10 })).state, 'join');

    const later = { token: 'b', now: now + 1_000, ms: 30_000 };
    const retaken = await store.parkQuote(h, 'b:1', 1, parked, later);
    assert.equal(retaken.state, 'join');
    assert.ok(retaken.state === 'join' && retaken.checkpoint !== undefined);
  });

  it('moves the closed end forward only', async () => {
    const h = host('st-closed');
    const closed = (endSeq: number) => ({ bootId: 'b:1', endSeq, scheme: 'perbank', endPcrs: [] });
    await store.recordVerdict(
      { hostId: h, bootId: 'b:1', seq: 20 },
      {},
      closed(20),
      {
        bootId: 'b:1',
        scheme: 'perbank',
      },
      Buffer.alloc(0),
    );
    await store.recordVerdict(
      { hostId: h, bootId: 'b:1', seq: 10 },
      {},
      closed(10),
      {
        bootId: 'b:1',
        scheme: 'perbank',
      },
      Buffer.alloc(0),
    );

    assert.equal((await store.closed(h))?.endSeq, 20);
    assert.equal(await redis.llen(hostKeys.shards(h)), 2);
    assert.deepEqual(JSON.parse((await redis.get(hostKeys.scheme(h)))!), {
      bootId: 'b:1',
      scheme: 'perbank',
    });
  });
});
