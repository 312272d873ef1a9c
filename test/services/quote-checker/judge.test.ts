import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';

import { parseAttest } from '../../../lib/tpm/attest.ts';
import { parseSerializedPcrs } from '../../../lib/tpm/pcr-file.ts';
import {
  attestHashOf,
  type EnrolledAk,
  judgeQuote,
  type QuoteContext,
} from '../../../services/quote-checker/judge.ts';
import type { PcrValue, Quote } from '../../../services/shared/records.ts';

// A real TPM 2.0 quote with its AK (keylime test data; see corpus/keylime/README.md):
// RSASSA/SHA-256, nonce db1db298…, clock 5994, SHA-256 PCRs 15, 16, 22.
const BUNDLE = new URL('../../../../shared/corpus/keylime/quote-bundle/', import.meta.url);
const file = (name: string) => readFileSync(new URL(name, BUNDLE));
const NONCE = Buffer.from('db1db298db6d60e6385b7231743e9c3056a18003', 'hex');
const attest = file('quote.out');
const clock = parseAttest(attest).clockInfo;

const AK: EnrolledAk = {
  akPublic: file('ak.pub'),
  akName: file('ak.name'),
  status: 'active',
  policy: 'ek-cert',
};

function shippedPcrs(): PcrValue[] {
  const values = parseSerializedPcrs(file('quotepcr.out'));
  return [...values].flatMap(([bank, pcrs]) =>
    [...pcrs].map(([pcr, value]) => ({ scheme: 'tpm', bank, pcr, value: Buffer.from(value) })),
  );
}

function quote(over: Partial<Quote> = {}): Quote {
  return {
    hostId: 'host-q',
    bootId: 'b:1',
    seq: 7,
    quoteId: 'q-1',
    attest,
    signature: file('quotesig.out'),
    akName: file('ak.name'),
    nonce: NONCE,
    nonceEpoch: 3,
    pcrs: [],
    at: 0,
    ...over,
  };
}

function ctx(over: Partial<QuoteContext> = {}): QuoteContext {
  return {
    enrollment: AK,
    accepted: [{ nonce: NONCE, epoch: 3 }],
    last: null,
    seenAt: null,
    position: 'ima.quotes:0:10',
    now: 1,
    ...over,
  };
}

async function alertKinds(q: Quote, c: QuoteContext): Promise<string[]> {
  const j = await judgeQuote(q, c);
  return j.ok ? [] : j.alerts.map((a) => a.kind).sort();
}

describe('judgeQuote', () => {
  it('accepts a genuine quote from the enrolled AK with a recent nonce', async () => {
    const j = await judgeQuote(quote(), ctx());

    assert.ok(j.ok);
    assert.equal(j.quote.hashAlg, 'sha256');
    assert.equal(j.quote.clock.clock, clock.clock.toString());
    assert.equal(j.quote.attestHash, attestHashOf(attest));
    assert.equal(j.quote.quoted, null);
  });

  it('trusts shipped PCR values that hash to the signed digest, in selection order', async () => {
    const j = await judgeQuote(quote({ pcrs: shippedPcrs().reverse() }), ctx());

    assert.ok(j.ok);
    assert.deepEqual(
      j.quote.quoted?.map((p) => `${p.bank}:${p.pcr}`),
      ['sha256:15', 'sha256:16', 'sha256:22'],
    );
  });

  it('calls shipped PCR values that do not hash to the digest a malformed quote', async () => {
    const pcrs = shippedPcrs();
    pcrs[0] = { ...pcrs[0]!, value: Buffer.alloc(32, 7) };

    assert.deepEqual(await alertKinds(quote({ pcrs }), ctx()), ['MALFORMED_QUOTE']);
  });

  it('rejects a quote when no AK, or another AK, is enrolled for the host', async () => {
    assert.deepEqual(await alertKinds(quote(), ctx({ enrollment: null })), ['UNKNOWN_AK']);
    const other = { ...AK, akName: Buffer.alloc(34, 1) };
    assert.deepEqual(await alertKinds(quote(), ctx({ enrollment: other })), ['UNKNOWN_AK']);
    assert.deepEqual(await alertKinds(quote(), ctx({ enrollment: { ...AK, status: 'revoked' } })), [
      'UNKNOWN_AK',
    ]);
  });

  it("trusts only the enroller's active enrolments, not an agent's self-published TOFU record", async () => {
    const selfPublished = { ...AK, status: 'unverified-tofu', policy: 'tofu' };
    assert.deepEqual(await alertKinds(quote(), ctx({ enrollment: selfPublished })), ['UNKNOWN_AK']);
    const unknownPolicy = { ...AK, policy: 'whatever' };
    assert.deepEqual(await alertKinds(quote(), ctx({ enrollment: unknownPolicy })), ['UNKNOWN_AK']);
    for (const policy of ['ek-cert', 'ek-allow-list', 'tofu']) {
      assert.deepEqual(await alertKinds(quote(), ctx({ enrollment: { ...AK, policy } })), []);
    }
  });

  it("accepts a replaced AK's quote until the overlap ends, then UNKNOWN_AK", async () => {
    const replaced = {
      ...AK,
      akName: Buffer.alloc(34, 7),
      akPublic: Buffer.alloc(10),
      previous: { akPublic: AK.akPublic, akName: AK.akName, policy: 'tofu', until: 100 },
    };
    assert.deepEqual(await alertKinds(quote(), ctx({ enrollment: replaced, now: 100 })), []);
    assert.deepEqual(await alertKinds(quote(), ctx({ enrollment: replaced, now: 101 })), ['UNKNOWN_AK']);
  });

  it('rejects a nonce the fleet did not issue recently', async () => {
    assert.deepEqual(await alertKinds(quote(), ctx({ accepted: [{ nonce: Buffer.alloc(20), epoch: 9 }] })), [
      'NONCE_MISMATCH',
    ]);
  });

  it('rejects a claimed nonce that differs from the signed extraData', async () => {
    const other = Buffer.alloc(20, 5);
    const kinds = await alertKinds(quote({ nonce: other }), ctx({ accepted: [{ nonce: other, epoch: 4 }] }));

    assert.deepEqual(kinds, ['NONCE_MISMATCH']);
  });

  it('rejects a signature that does not verify', async () => {
    const signature = Buffer.from(file('quotesig.out'));
    signature[signature.length - 1]! ^= 0xff;

    assert.deepEqual(await alertKinds(quote({ signature }), ctx()), ['BAD_SIGNATURE']);
  });

  it('rejects bytes that are not a TPMS_ATTEST', async () => {
    const kinds = await alertKinds(quote({ attest: Buffer.from('not a quote') }), ctx());

    assert.deepEqual(kinds, ['MALFORMED_QUOTE']);
  });

  it('calls a quote whose clock went back within the TPM epoch stale', async () => {
    const last = {
      bootId: 'b:1',
      quoteId: 'q-0',
      attestHash: 'x',
      resetCount: clock.resetCount,
      restartCount: clock.restartCount,
      clock: (clock.clock + 1000n).toString(),
    };

    assert.deepEqual(await alertKinds(quote(), ctx({ last })), ['STALE_QUOTE']);
  });

  it('tells a replayed quote from a redelivered message by its position', async () => {
    assert.deepEqual(await alertKinds(quote(), ctx({ seenAt: 'ima.quotes:0:3' })), ['STALE_QUOTE']);
    const again = await judgeQuote(quote(), ctx({ seenAt: 'ima.quotes:0:10', accepted: [] }));
    assert.ok(again.ok);
    assert.equal(again.quote.redelivery, true);
  });

  it('gives each finding an id bound to the quote, stable across runs', async () => {
    const a = await judgeQuote(quote(), ctx({ enrollment: null }));
    const b = await judgeQuote(quote(), ctx({ enrollment: null, now: 99 }));

    assert.ok(!a.ok && !b.ok);
    assert.equal(a.alerts[0]?.alertId, b.alerts[0]?.alertId);
    assert.equal(a.alerts[0]?.seq, 7);
    assert.equal(a.alerts[0]?.bootId, 'b:1');
  });
});
