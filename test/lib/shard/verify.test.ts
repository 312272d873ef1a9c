import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { toHex } from '../../../lib/bytes/hex.ts';
import { parseBinaryLog } from '../../../lib/ima/binary.ts';
import { templateDigestOf } from '../../../lib/ima/digest.ts';
import { encodeBinaryRecord } from '../../../lib/ima/encode.ts';
import type { ImaRecord } from '../../../lib/ima/record.ts';
import { PcrReplay } from '../../../lib/ima/replay.ts';
import type { SealedShard } from '../../../lib/shard/types.ts';
import type { ShardFailureCode } from '../../../lib/shard/verdict.ts';
import { verifyShardChain } from '../../../lib/shard/verify.ts';
import { buildChain, type Chain, quotedValues, SELECTION, sealChain, softAk, softQuote } from './fixtures.ts';

function codes(verdict: Awaited<ReturnType<typeof verifyShardChain>>, index: number): ShardFailureCode[] {
  return [...new Set(verdict.shards[index]!.failures.map((f) => f.code))];
}

/** A fresh chain whose shards the test may change and reseal. */
function chain(opts: Parameters<typeof buildChain>[0] = {}): Chain {
  return buildChain({ records: 12, cut: 4, ...opts });
}

/** Re-signs a shard's closing quote with other clock values, keeping its PCRs and nonce. */
function requote(
  c: Chain,
  shard: SealedShard,
  clock: { clock?: bigint; resetCount?: number; restartCount?: number },
) {
  const q = shard.closingQuote;
  Object.assign(q, softQuote(c.ak, { nonce: q.nonce, pcrs: q.pcrs, selection: SELECTION, ...clock }));
}

/** Replaces one record with a well-formed record of other content (digest consistent). */
function replaceRecord(shard: SealedShard, index: number, original: ImaRecord): void {
  const templateData = original.templateData.slice();
  flip(templateData, templateData.byteLength - 2, 0x20);
  const rec = {
    ...original,
    templateData,
    templateDigest: templateDigestOf({ ...original, templateData }, 'sha1'),
  };
  shard.records[index] = encodeBinaryRecord(rec);
}

function flip(bytes: Uint8Array, at: number, mask: number): void {
  bytes[at] = (bytes[at] as number) ^ mask;
}

describe('verifyShardChain', () => {
  it('accepts a chain sealed from one boot', async () => {
    const c = chain();
    const verdict = await verifyShardChain(c.files, { trustedAk: c.ak.akPublic });
    assert.equal(verdict.ok, true, JSON.stringify(verdict.shards.map((s) => s.failures)));
    assert.equal(verdict.akTrusted, true);
    assert.equal(verdict.anchored, true);
    assert.deepEqual(
      verdict.shards.map((s) => s.shardId),
      ['boot-a:1:0-4', 'boot-a:1:4-8', 'boot-a:1:8-12'],
    );
    assert.ok(verdict.shards.every((s) => s.scheme === 'perbank'));
  });

  it('finds the padded scheme of an old kernel', async () => {
    const c = chain({ scheme: 'padded' });
    const verdict = await verifyShardChain(c.files);
    assert.equal(verdict.ok, true);
    assert.equal(verdict.akTrusted, false);
    assert.ok(verdict.shards.every((s) => s.scheme === 'padded'));
  });

  it('accepts a chain that starts mid-boot, but says it is not anchored', async () => {
    const c = chain();
    const verdict = await verifyShardChain(c.files.slice(1));
    assert.equal(verdict.ok, true);
    assert.equal(verdict.anchored, false);
  });

  it('SHARD_INTEGRITY: a corrupted byte', async () => {
    const c = chain();
    flip(c.files[1]!, 200, 0xff);
    const verdict = await verifyShardChain(c.files);
    assert.equal(verdict.ok, false);
    assert.deepEqual(codes(verdict, 1), ['SHARD_INTEGRITY']);
    assert.deepEqual(codes(verdict, 0), []);
    assert.deepEqual(codes(verdict, 2), ['SHARD_CHAIN_BREAK']);
  });

  it('SHARD_MALFORMED: a truncated file', async () => {
    const c = chain();
    const verdict = await verifyShardChain([c.files[0]!.subarray(0, 40)]);
    assert.deepEqual(codes(verdict, 0), ['SHARD_MALFORMED']);
  });

  it('SHARD_CHAIN_BREAK: a shard left out', async () => {
    const c = chain();
    const verdict = await verifyShardChain([c.files[0]!, c.files[2]!]);
    assert.deepEqual(codes(verdict, 1), ['SHARD_CHAIN_BREAK', 'SHARD_START_MISMATCH']);
  });

  it('SHARD_CHAIN_BREAK: shards swapped', async () => {
    const c = chain();
    const verdict = await verifyShardChain([c.files[0]!, c.files[2]!, c.files[1]!]);
    assert.ok(codes(verdict, 1).includes('SHARD_CHAIN_BREAK'));
    assert.ok(codes(verdict, 2).includes('SHARD_CHAIN_BREAK'));
  });

  it('SHARD_CHAIN_BREAK: another host or boot, relinked', async () => {
    const c = chain();
    c.shards[1]!.bootId = 'boot-b:1';
    const verdict = await verifyShardChain(sealChain(c.shards));
    assert.deepEqual(codes(verdict, 1), ['SHARD_CHAIN_BREAK']);
  });

  it('SHARD_START_MISMATCH: start PCRs are not the previous quoted end', async () => {
    const c = chain();
    c.shards[1]!.startPcrs = new Map([['sha1', new Map([[10, new Uint8Array(20).fill(7)]])]]);
    const verdict = await verifyShardChain(sealChain(c.shards));
    assert.ok(codes(verdict, 1).includes('SHARD_START_MISMATCH'));
    assert.ok(codes(verdict, 1).includes('SHARD_REPLAY_MISMATCH'));
  });

  it('SHARD_START_MISMATCH: a boot that does not start from zeros and boot_aggregate', async () => {
    const c = chain();
    const first = c.shards[0]!;
    first.records = first.records.slice(1);
    first.startSeq = 0;
    first.endSeq = first.records.length;
    const verdict = await verifyShardChain([sealChain([first])[0]!]);
    assert.ok(codes(verdict, 0).includes('SHARD_START_MISMATCH'));
  });

  it('SHARD_REPLAY_MISMATCH: one record changed inside a sealed shard', async () => {
    const c = chain();
    replaceRecord(c.shards[1]!, 2, c.records[6]!);
    const verdict = await verifyShardChain(sealChain(c.shards));
    assert.deepEqual(codes(verdict, 1), ['SHARD_REPLAY_MISMATCH']);
    const mismatches = verdict.shards[1]!.replayMismatches;
    assert.ok(mismatches.some((m) => m.bank === 'sha256' && m.pcr === 10));
    assert.deepEqual(codes(verdict, 2), []);
  });

  it('SHARD_REPLAY_MISMATCH: a closing quote that drops PCRs the start state carries', async () => {
    // The start state is the chain's: a quote that does not cover it lets the next shard start
    // from a state no quote vouches for (an empty shard closed by a quote of sha256:0 resets PCR 10
    // to "never extended"; a quote of sha1:10 alone drops the sha256 bank from the chain).
    const c = chain();
    const s0 = c.shards[0]!;
    const nonce = Uint8Array.of(9, 9, 9, 9);
    const selection = [{ bank: 'sha256' as const, pcrs: [0] }];
    const pcrs = new Map([['sha256' as const, new Map([[0, new Uint8Array(32)]])]]);
    const empty = {
      ...s0,
      startSeq: 4,
      endSeq: 4,
      records: [],
      startPcrs: s0.closingQuote.pcrs,
      closingQuote: {
        ...softQuote(c.ak, { nonce, pcrs, selection, clock: 1005n }),
        akPublic: c.ak.akPublic,
        nonce,
        pcrs,
      },
    };
    let verdict = await verifyShardChain(sealChain([s0, empty]), { trustedAk: c.ak.akPublic });
    assert.deepEqual(codes(verdict, 1), ['SHARD_REPLAY_MISMATCH']);

    const s1 = c.shards[1]!;
    const sha1Only = [{ bank: 'sha1' as const, pcrs: [10] }];
    const q = s1.closingQuote;
    q.pcrs = new Map([['sha1', q.pcrs.get('sha1')!]]);
    Object.assign(q, softQuote(c.ak, { nonce: q.nonce, pcrs: q.pcrs, selection: sha1Only, clock: 1010n }));
    verdict = await verifyShardChain(sealChain(c.shards.slice(0, 2)), { trustedAk: c.ak.akPublic });
    assert.deepEqual(codes(verdict, 1), ['SHARD_REPLAY_MISMATCH']);
  });

  it('SHARD_REPLAY_MISMATCH: a record removed', async () => {
    const c = chain();
    const s = c.shards[2]!;
    s.records = s.records.slice(0, -1);
    s.endSeq -= 1;
    const verdict = await verifyShardChain(sealChain(c.shards));
    assert.deepEqual(codes(verdict, 2), ['SHARD_REPLAY_MISMATCH']);
  });

  it('SHARD_BAD_RECORD: a template digest that is not the hash of the data', async () => {
    const c = chain();
    const raw = c.shards[1]!.records[0]!;
    flip(raw, 4, 0x01); // first byte of the template digest, right after the u32 PCR index
    const verdict = await verifyShardChain(sealChain(c.shards));
    assert.ok(codes(verdict, 1).includes('SHARD_BAD_RECORD'));
  });

  it('SHARD_SCHEME_CHANGED: the pinned scheme is not the one that replays', async () => {
    const c = chain();
    c.shards[1]!.scheme = 'padded';
    const verdict = await verifyShardChain(sealChain(c.shards));
    assert.deepEqual(codes(verdict, 1), ['SHARD_SCHEME_CHANGED']);
  });

  it('SHARD_SCHEME_CHANGED: a shard that pins another scheme than the chain found', async () => {
    // Shard 0 replays perbank only; shard 1 replays padded only and pins padded itself. The
    // chain's finding must still hold: the shard's own byte cannot switch the scheme.
    const c = chain();
    const s1 = c.shards[1]!;
    const hexOf = (bank: 'sha1' | 'sha256') => toHex(s1.startPcrs.get(bank)!.get(10)!);
    const padded = PcrReplay.fromState({
      banks: ['sha1', 'sha256'],
      schemes: ['padded'],
      count: 0,
      pcrs: { padded: { sha1: { 10: hexOf('sha1') }, sha256: { 10: hexOf('sha256') } } },
    });
    for (const rec of c.records.slice(4, 8)) padded.extend(rec);
    const pcrs = quotedValues(padded, 'padded');
    const q = s1.closingQuote;
    Object.assign(q, softQuote(c.ak, { nonce: q.nonce, pcrs, selection: SELECTION, clock: 1010n }), { pcrs });
    s1.scheme = 'padded';
    const verdict = await verifyShardChain(sealChain(c.shards.slice(0, 2)), { trustedAk: c.ak.akPublic });
    assert.equal(verdict.shards[0]!.scheme, 'perbank');
    assert.deepEqual(codes(verdict, 1), ['SHARD_SCHEME_CHANGED']);
  });

  it('SHARD_BAD_QUOTE: nonce not the one in the attest', async () => {
    const c = chain();
    c.shards[0]!.closingQuote.nonce = Uint8Array.of(1, 2, 3);
    const verdict = await verifyShardChain(sealChain(c.shards));
    assert.deepEqual(codes(verdict, 0), ['SHARD_BAD_QUOTE']);
    assert.match(verdict.shards[0]!.failures[0]!.message, /NONCE/);
  });

  it('SHARD_BAD_QUOTE: a signature that does not verify', async () => {
    const c = chain();
    const sig = c.shards[2]!.closingQuote.signature;
    flip(sig, sig.byteLength - 1, 0x01);
    const verdict = await verifyShardChain(sealChain(c.shards));
    assert.deepEqual(codes(verdict, 2), ['SHARD_BAD_QUOTE']);
  });

  it('SHARD_BAD_QUOTE: PCR values that do not give the pcrDigest', async () => {
    const c = chain();
    const pcrs = c.shards[0]!.closingQuote.pcrs;
    pcrs.get('sha1')!.set(10, new Uint8Array(20).fill(1));
    const verdict = await verifyShardChain(sealChain(c.shards));
    assert.ok(codes(verdict, 0).includes('SHARD_BAD_QUOTE'));
  });

  it('SHARD_BAD_QUOTE: PCR values the quote does not select (forged records replayed to them)', async () => {
    // The closing quote signs sha256:0 only; the shard adds sha1:10 and sha256:10 values of its
    // own, computed from records it made up. The pcrDigest covers none of them.
    const c = chain();
    const shard = c.shards[0]!;
    replaceRecord(shard, 2, c.records[2]!);
    const forged = new PcrReplay({ banks: ['sha1', 'sha256'], schemes: ['perbank'] });
    for (const raw of shard.records) forged.extend(parseBinaryLog(raw, { digestAlg: 'sha1' }).records[0]!);
    const selection = [{ bank: 'sha256' as const, pcrs: [0] }];
    const pcrs = quotedValues(forged, 'perbank');
    pcrs.get('sha256')!.set(0, new Uint8Array(32).fill(0x55));
    const q = shard.closingQuote;
    Object.assign(q, softQuote(c.ak, { nonce: q.nonce, pcrs, selection }), { pcrs });
    const verdict = await verifyShardChain(sealChain([shard]), { trustedAk: c.ak.akPublic });
    assert.equal(verdict.ok, false);
    assert.ok(codes(verdict, 0).includes('SHARD_BAD_QUOTE'), JSON.stringify(verdict.shards[0]!.failures));
  });

  it('SHARD_BAD_QUOTE: garbage instead of a TPMS_ATTEST', async () => {
    const c = chain();
    c.shards[0]!.closingQuote.attest = new Uint8Array(12);
    const verdict = await verifyShardChain(sealChain(c.shards));
    assert.ok(codes(verdict, 0).includes('SHARD_BAD_QUOTE'));
  });

  it('SHARD_UNTRUSTED_AK: signed by a key other than the trusted AK', async () => {
    const c = chain();
    const verdict = await verifyShardChain(c.files, { trustedAk: softAk().akPublic });
    assert.ok(verdict.shards.every((s) => s.failures.every((f) => f.code === 'SHARD_UNTRUSTED_AK')));
    assert.equal(verdict.ok, false);
  });

  it('SHARD_UNTRUSTED_AK: the AK changes along the chain', async () => {
    const c = chain();
    const other = softAk();
    const s = c.shards[1]!;
    const q = s.closingQuote;
    Object.assign(q, softQuote(other, { nonce: q.nonce, pcrs: q.pcrs, selection: SELECTION, clock: 1010n }));
    q.akPublic = other.akPublic;
    const verdict = await verifyShardChain(sealChain(c.shards));
    assert.deepEqual(codes(verdict, 1), ['SHARD_UNTRUSTED_AK']);
  });

  it('SHARD_COUNTER_REGRESSION: clock going back, restartCount dropping, resetCount changing', async () => {
    const c = chain();
    requote(c, c.shards[1]!, { clock: 5n });
    requote(c, c.shards[2]!, { clock: 9000n, resetCount: 2 });
    let verdict = await verifyShardChain(sealChain(c.shards));
    assert.deepEqual(codes(verdict, 1), ['SHARD_COUNTER_REGRESSION']);
    assert.deepEqual(codes(verdict, 2), ['SHARD_COUNTER_REGRESSION']);

    const d = chain();
    requote(d, d.shards[0]!, { clock: 100n, restartCount: 3 });
    requote(d, d.shards[1]!, { clock: 200n, restartCount: 2 });
    verdict = await verifyShardChain(sealChain(d.shards));
    assert.deepEqual(codes(verdict, 1), ['SHARD_COUNTER_REGRESSION']);
  });

  it("SHARD_COUNTER_REGRESSION: a boot's shards resealed under another boot's id", async () => {
    // Genuine quotes of resetCount 1, relabelled as boot 2 of the same host.
    const c = chain({ bootId: 'boot-a:2' });
    const verdict = await verifyShardChain(c.files);
    for (const i of [0, 1, 2]) assert.deepEqual(codes(verdict, i), ['SHARD_COUNTER_REGRESSION']);
    assert.match(verdict.shards[0]!.failures[0]!.message, /resetCount 1 is not the one boot boot-a:2 names/);

    const plain = chain({ bootId: 'boot-a' });
    assert.deepEqual(codes(await verifyShardChain(plain.files), 0), ['SHARD_COUNTER_REGRESSION']);
  });

  it('an empty chain is not ok', async () => {
    assert.equal((await verifyShardChain([])).ok, false);
  });
});
