import { encodeBinaryRecord } from '../ima/encode.ts';
import type { ImaRecord } from '../ima/record.ts';
import { computeShardDigest, encodeShard, SHARD_DIGEST_SIZE } from './format.ts';
import type { SealedShard } from './types.ts';

/** What an agent has at a cut: parsed records instead of raw ones, and the previous sealed file. */
export type ShardInput = Omit<SealedShard, 'records' | 'prevShardDigest' | 'endSeq'> & {
  records: readonly Omit<ImaRecord, 'offset'>[];
};

/**
 * Seals the records of one cut: encodes them as the kernel's binary records in the shard's byte
 * order (byte-identical to the log when they were parsed from it), derives endSeq and links the
 * shard to `previous` (the previous sealed file of the same boot; undefined at seq 0).
 */
export function sealShard(input: ShardInput, previous?: Uint8Array): Uint8Array {
  const records = input.records.map((r) => encodeBinaryRecord(r, input.recordFormat.byteOrder));
  const prevShardDigest =
    previous === undefined ? new Uint8Array(SHARD_DIGEST_SIZE) : computeShardDigest(previous);

  return encodeShard({ ...input, records, endSeq: input.startSeq + records.length, prevShardDigest });
}
