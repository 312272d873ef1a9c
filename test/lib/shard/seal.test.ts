import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { generateLog } from '../../../lib/ima/synthetic.ts';
import { decodeShard } from '../../../lib/shard/decode.ts';
import { sealShard } from '../../../lib/shard/seal.ts';
import { verifyShardChain } from '../../../lib/shard/verify.ts';
import { buildChain } from './fixtures.ts';

describe('sealShard', () => {
  it('seals parsed records byte-identical to the log and links to the previous file', async () => {
    const chain = buildChain({ records: 8, cut: 4 });
    const [first, second] = chain.shards.map((s) => ({ ...s }));
    const parsed = (from: number) => chain.records.slice(from, from + 4);
    const a = sealShard({ ...first!, records: parsed(0) });
    const b = sealShard({ ...second!, records: parsed(4) }, a);
    assert.deepEqual(a, chain.files[0]);
    assert.deepEqual(b, chain.files[1]);
    assert.equal(decodeShard(b).endSeq, 8);
    assert.equal((await verifyShardChain([a, b])).ok, true);
  });

  it('keeps big-endian records big-endian', () => {
    const { records, bytes } = generateLog({ records: 3, seed: 4, byteOrder: 'be' });
    const shard = buildChain({ records: 3, cut: 3 }).shards[0]!;
    const sealed = sealShard({ ...shard, recordFormat: { digestAlg: 'sha1', byteOrder: 'be' }, records });
    assert.deepEqual(Buffer.concat(decodeShard(sealed).records), Buffer.from(bytes));
  });
});
