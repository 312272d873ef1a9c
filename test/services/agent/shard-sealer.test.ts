import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { encodeBinaryRecord } from '../../../lib/ima/encode.ts';
import { generateLog } from '../../../lib/ima/synthetic.ts';
import type { PcrValues } from '../../../lib/pcr.ts';
import { decodeShard } from '../../../lib/shard/decode.ts';
import { computeShardDigest } from '../../../lib/shard/format.ts';
import { RecordArchive } from '../../../services/agent/archive.ts';
import {
  listShardFiles,
  MAX_SHIPPED_SHARD_BYTES,
  type QuoteToSeal,
  ShardSealer,
  shardDir,
} from '../../../services/agent/shard-sealer.ts';
import type { SealedShard } from '../../../services/shared/records.ts';

/**
 * The sealer's own job, without a TPM: which records go into which file, what each file starts
 * from and links to, and what survives a restart. The closing quotes here are opaque bytes (the
 * sealer never looks inside them); that they verify is shard-pipeline.test.ts's job, on swtpm.
 */
const BOOT = 'boot-x:1';

function quote(seq: number, fill: number): QuoteToSeal {
  const pcrs: PcrValues = new Map([
    ['sha1', new Map([[10, new Uint8Array(20).fill(fill)]])],
    [
      'sha256',
      new Map([
        [0, new Uint8Array(32).fill(0xaa)],
        [10, new Uint8Array(32).fill(fill)],
      ]),
    ],
  ]);
  return {
    quoteId: `q-${seq}`,
    seq,
    quote: {
      attest: new Uint8Array(100).fill(fill),
      signature: new Uint8Array(256).fill(fill),
      akPublic: new Uint8Array(280).fill(7),
      nonce: new Uint8Array(16).fill(fill),
      pcrs,
    },
  };
}

describe('ShardSealer', () => {
  let dir: string;
  let archive: RecordArchive;
  let sent: SealedShard[];
  let failSend: boolean;
  const { records } = generateLog({ records: 60, seed: 3 });
  const raw = records.map((r) => encodeBinaryRecord(r, 'le'));

  const open = () =>
    ShardSealer.open({
      stateDir: dir,
      hostId: 'host-s',
      bootId: BOOT,
      digestAlg: 'sha1',
      archive,
      publish: async (r) => {
        if (failSend) throw new Error('broker down');
        sent.push(r);
      },
    });

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'ims-sealer-'));
    archive = RecordArchive.open(join(dir, 'archive'), { bootId: BOOT, digestAlg: 'sha1' }, 0);
    archive.append(raw);
    archive.sync();
    sent = [];
    failSend = false;
  });
  afterEach(() => {
    archive.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('seals [previous quote, this quote) raw, from zeros at seq 0, chained by digest', async () => {
    const sealer = open();
    const first = await sealer.seal(quote(20, 1));
    assert.equal(await sealer.seal(quote(20, 2)), undefined, 'a quote with no new record seals nothing');
    const second = await sealer.seal(quote(45, 3));
    assert.ok(first && second);
    assert.deepEqual(
      listShardFiles(shardDir(dir, BOOT)).map((f) => f.name),
      ['0-20.imsshard', '20-45.imsshard'],
    );
    const a = new Uint8Array(readFileSync(first.path));
    const b = new Uint8Array(readFileSync(second.path));
    const s0 = decodeShard(a);
    const s1 = decodeShard(b);
    assert.deepEqual(s0.records, raw.slice(0, 20), 'the records are the log bytes');
    assert.deepEqual(s1.records, raw.slice(20, 45));
    assert.deepEqual(s0.prevShardDigest, new Uint8Array(32));
    assert.deepEqual(s1.prevShardDigest, computeShardDigest(a));
    // Zeros for the IMA PCRs the quote covers; firmware PCRs (sha256:0) are not a start state.
    assert.deepEqual(
      s0.startPcrs,
      new Map([
        ['sha1', new Map([[10, new Uint8Array(20)]])],
        ['sha256', new Map([[10, new Uint8Array(32)]])],
      ]),
    );
    assert.deepEqual(s1.startPcrs, quote(20, 1).quote.pcrs, "start = the previous closing quote's PCRs");
    assert.deepEqual(s1.closingQuote.nonce, new Uint8Array(16).fill(3));
    assert.equal(s0.recordFormat.byteOrder, 'le');
    assert.equal(s0.scheme, null);
    assert.deepEqual(
      sent.map((r) => [r.startSeq, r.endSeq, r.quoteId, r.size]),
      [
        [0, 20, 'q-20', a.byteLength],
        [20, 45, 'q-45', b.byteLength],
      ],
    );
    assert.deepEqual(new Uint8Array(sent[1]!.shard!), b);
    assert.deepEqual(new Uint8Array(sent[1]!.digest), computeShardDigest(b));
  });

  it('resumes after a restart from the newest file and resends it once', async () => {
    const sealer = open();
    await sealer.seal(quote(20, 1));
    failSend = true;
    await assert.rejects(sealer.seal(quote(30, 2)), /broker down/);
    assert.ok(existsSync(join(shardDir(dir, BOOT), '20-30.imsshard')), 'sealed before it was sent');

    failSend = false;
    const restarted = open();
    assert.equal(restarted.nextStartSeq, 30);
    await restarted.publishPending();
    await restarted.publishPending();
    assert.deepEqual(
      sent.map((r) => [r.startSeq, r.endSeq]),
      [
        [0, 20],
        [20, 30],
      ],
      'the unacknowledged file is sent again, once',
    );
    const third = await restarted.seal(quote(60, 3));
    const s2 = decodeShard(new Uint8Array(readFileSync(third!.path)));
    const prev = new Uint8Array(readFileSync(join(shardDir(dir, BOOT), '20-30.imsshard')));
    assert.equal(s2.startSeq, 30);
    assert.deepEqual(s2.prevShardDigest, computeShardDigest(prev));
    assert.deepEqual(s2.startPcrs, quote(30, 2).quote.pcrs);
  });

  it('refuses to resume from a damaged newest file', async () => {
    const sealed = await open().seal(quote(20, 1));
    const bytes = readFileSync(sealed!.path);
    bytes[40] = (bytes[40] as number) ^ 1;
    writeFileSync(sealed!.path, bytes);
    assert.throws(() => open(), { code: 'IMS_AGENT_ARCHIVE_CORRUPT' });
  });

  it('sends a shard over the message limit without its bytes; the file stays on the host', async () => {
    const big = generateLog({ records: 56_000, seed: 9 }).records.map((r) => encodeBinaryRecord(r, 'le'));
    archive.append(big);
    archive.sync();
    const sealed = await open().seal(quote(60 + big.length, 1));
    assert.ok(sealed !== undefined && sealed.bytes > MAX_SHIPPED_SHARD_BYTES);
    assert.equal(sealed.shipped, false);
    const last = sent.at(-1)!;
    assert.equal(last.shard, null);
    assert.equal(last.size, sealed.bytes);
    assert.deepEqual(
      new Uint8Array(last.digest),
      computeShardDigest(new Uint8Array(readFileSync(sealed.path))),
    );
  });

  it('refuses to seal records the archive does not hold', async () => {
    await assert.rejects(open().seal(quote(61, 1)), { code: 'IMS_AGENT_ARCHIVE_CORRUPT' });
  });
});
