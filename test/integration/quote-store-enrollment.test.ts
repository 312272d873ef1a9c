/**
 * How the quote-checker keeps a host's enrolment in the real Redis: a re-enrolment with another
 * AK keeps the replaced AK as `previous` for the overlap window, a redelivery keeps that window,
 * a revocation keeps nothing, and an older record never overwrites a newer one.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { QuoteStore } from '../../services/quote-checker/store.ts';
import type { Enrollment } from '../../services/shared/records.ts';
import { cleanHosts, connectTestRedis, uniqueHost } from '../services/replayer/pipeline.ts';

const redis = connectTestRedis();
const host = uniqueHost('enrol-store');
after(async () => {
  await cleanHosts(redis, [host]);
  await redis.quit();
});

const record = (fill: number, at: number, status = 'active', policy = 'ek-cert'): Enrollment => ({
  hostId: host,
  akPublic: Buffer.alloc(8, fill),
  akName: Buffer.alloc(34, fill),
  ekPublic: Buffer.alloc(8, 9),
  ekCertificate: null,
  policy,
  status,
  at,
});

test('a replaced AK is kept for the overlap window; revocation and stale records do not reopen it', async () => {
  const store = new QuoteStore(redis);
  await store.saveEnrollment(record(1, 1000, 'active', 'tofu'), 500);
  assert.equal((await store.enrollment(host))?.previous, null);

  await store.saveEnrollment(record(2, 2000), 500);
  let held = await store.enrollment(host);
  assert.deepEqual(held?.akName, new Uint8Array(Buffer.alloc(34, 2)));
  assert.deepEqual(held?.previous?.akName, new Uint8Array(Buffer.alloc(34, 1)));
  assert.equal(held?.previous?.until, 2500);
  assert.equal(held?.previous?.policy, 'tofu');

  await store.saveEnrollment(record(2, 2000), 500); // redelivered
  assert.equal((await store.enrollment(host))?.previous?.until, 2500);

  await store.saveEnrollment(record(1, 1500), 500); // older than what is held
  assert.deepEqual((await store.enrollment(host))?.akName, new Uint8Array(Buffer.alloc(34, 2)));

  await store.saveEnrollment(record(2, 3000, 'revoked'), 500);
  held = await store.enrollment(host);
  assert.equal(held?.status, 'revoked');
  assert.equal(held?.previous, null);
});
