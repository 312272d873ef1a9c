import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { hash } from '../../lib/hash.ts';
import { parseBinaryLog } from '../../lib/ima/binary.ts';
import { templateDigestOf } from '../../lib/ima/digest.ts';
import { buildImaNg, encodeBinaryRecord } from '../../lib/ima/encode.ts';
import type { ImaRecord } from '../../lib/ima/record.ts';
import { generateLog } from '../../lib/ima/synthetic.ts';
import type { PcrValues } from '../../lib/pcr.ts';
import { computeShardDigest, encodeShard } from '../../lib/shard/format.ts';
import type { SealedShard } from '../../lib/shard/types.ts';
import { verifyShardChain } from '../../lib/shard/verify.ts';
import { parseAttest } from '../../lib/tpm/attest.ts';
import { EmulatorKernelLog } from '../../services/kernel-emulator/emulator-log.ts';
import { EmulatedKernel, type Measurement } from '../../services/kernel-emulator/kernel.ts';
import { Swtpm } from '../helpers/swtpm.ts';

/**
 * Sealed shards from a real TPM: a synthetic log is measured by the kernel emulator, every record
 * extended into swtpm PCR 10 the way a ≥ 5.8 kernel does (each bank its own hash); every K records
 * the agent's staging path runs (stage, read staged, quote with a fresh nonce, seal, delete), and
 * the chain is verified offline. Then one record inside a sealed shard is changed.
 */
const RECORDS = 18;
const CUT = 6;
/** PCRs 0–9 of SHA-256 too, so the boot_aggregate of the first shard is checked against the quote. */
const SELECTION = 'sha1:10+sha256:0,1,2,3,4,5,6,7,8,9,10';

function zeros(): PcrValues {
  return new Map([
    ['sha1', new Map([[10, new Uint8Array(20)]])],
    ['sha256', new Map([[10, new Uint8Array(32)]])],
  ]);
}

describe('sealed shards from swtpm', () => {
  it('seal at each staging cut, verify offline, catch a changed record', async (t) => {
    const tpm = await Swtpm.start();
    t.after(() => tpm.stop());
    const ak = await tpm.createAk(await tpm.createEk(), { scheme: 'rsassa' });

    const kernel = new EmulatedKernel();
    const log = new EmulatorKernelLog(kernel);
    const extend = (m: Measurement) =>
      tpm.pcrExtend(m.pcr, { sha1: templateDigestOf(m, 'sha1'), sha256: templateDigestOf(m, 'sha256') });

    const { records } = generateLog({ records: RECORDS, seed: 11 });
    records[0] = await bootAggregate(tpm);
    const shards: SealedShard[] = [];
    const files: Uint8Array[] = [];
    let start = zeros();
    for (let from = 0; from < RECORDS; from += CUT) {
      for (const rec of records.slice(from, from + CUT)) {
        kernel.measure(rec);
        await extend(rec);
      }
      const shard = await cut(tpm, ak, log, { from, start, prev: files.at(-1) });
      shards.push(shard);
      files.push(encodeShard(shard));
      start = shard.closingQuote.pcrs;
    }
    assert.equal(kernel.freedCount(), RECORDS);
    assert.equal(await log.count(), 0);

    const good = await verifyShardChain(files, { trustedAk: ak.public });
    assert.equal(good.ok, true, JSON.stringify(good.shards.map((s) => s.failures)));
    assert.ok(good.shards.every((s) => s.scheme === 'perbank'));
    assert.deepEqual(
      good.shards.map((s) => s.shardId),
      ['0-6', '6-12', '12-18'].map((range) => `${shards[0]!.bootId}:${range}`),
    );

    // One record of the middle shard changed (its digest kept consistent), the chain resealed.
    const tampered = shards.map((s) => ({ ...s, records: [...s.records] }));
    tampered[1]!.records[3] = changedRecord(records[9]!);
    const resealed: Uint8Array[] = [];
    for (const s of tampered) {
      const prev = resealed.at(-1);
      resealed.push(
        encodeShard({ ...s, prevShardDigest: prev ? computeShardDigest(prev) : s.prevShardDigest }),
      );
    }
    const bad = await verifyShardChain(resealed, { trustedAk: ak.public });
    assert.equal(bad.ok, false);
    assert.deepEqual(
      bad.shards.map((s) => s.failures.map((f) => f.code)),
      [[], ['SHARD_REPLAY_MISMATCH'], []],
    );

    // A boot_aggregate that does not match the quoted PCRs 0-9.
    const wrongBoot = { ...shards[0]!, records: [...shards[0]!.records] };
    const otherData = buildImaNg({
      alg: 'sha256',
      digest: new Uint8Array(32).fill(1),
      name: 'boot_aggregate',
    });
    wrongBoot.records[0] = encodeBinaryRecord({
      ...records[0]!,
      templateData: otherData,
      templateDigest: hash('sha1', otherData),
    });
    const boot = await verifyShardChain([encodeShard(wrongBoot)], { trustedAk: ak.public });
    const startFailure = boot.shards[0]!.failures.find((f) => f.code === 'SHARD_START_MISMATCH');
    assert.match(startFailure?.message ?? '', /boot_aggregate does not match the quoted PCRs/);

    // The same change without resealing is an integrity failure.
    const raw = files.map((f) => f.slice());
    raw[1]![100] = (raw[1]![100] as number) ^ 0x01;
    const corrupt = await verifyShardChain(raw, { trustedAk: ak.public });
    assert.deepEqual(
      corrupt.shards[1]!.failures.map((f) => f.code),
      ['SHARD_INTEGRITY'],
    );
  });
});

/** The agent's staging round: stage, read and parse the staged list, quote, seal, delete. */
async function cut(
  tpm: Swtpm,
  ak: Awaited<ReturnType<Swtpm['createAk']>>,
  log: EmulatorKernelLog,
  at: { from: number; start: PcrValues; prev: Uint8Array | undefined },
): Promise<SealedShard> {
  await log.stageAll();
  const staged = parseBinaryLog(await log.read('staged'));
  assert.deepEqual(staged.problems, []);
  const nonce = new Uint8Array(randomBytes(16));
  const quote = await tpm.quote(ak, { selection: SELECTION, nonce });
  const pcrs = await tpm.pcrRead(SELECTION);
  const shard: SealedShard = {
    hostId: 'host-swtpm',
    // `<hostBootId>:<resetCount>`, as the agent names a boot (the verifier checks the count).
    bootId: `boot-1:${parseAttest(quote.attest).clockInfo.resetCount}`,
    startSeq: at.from,
    endSeq: at.from + staged.records.length,
    startPcrs: at.start,
    scheme: null,
    recordFormat: { digestAlg: 'sha1', byteOrder: 'le' },
    records: staged.records.map((r) => encodeBinaryRecord(r)),
    closingQuote: { attest: quote.attest, signature: quote.signature, akPublic: ak.public, nonce, pcrs },
    prevShardDigest: at.prev === undefined ? new Uint8Array(32) : computeShardDigest(at.prev),
  };
  await log.deleteStaged();

  return shard;
}

/** The boot_aggregate a ≥ 5.8 kernel would log on this TPM: SHA-256 over PCRs 0–9. */
async function bootAggregate(tpm: Swtpm): Promise<ImaRecord> {
  const firmware = (await tpm.pcrRead('sha256:0,1,2,3,4,5,6,7,8,9')).get('sha256')!;
  const digest = hash('sha256', ...[...firmware.keys()].sort((a, b) => a - b).map((i) => firmware.get(i)!));
  const templateData = buildImaNg({ alg: 'sha256', digest, name: 'boot_aggregate' });

  return {
    pcr: 10,
    templateName: 'ima-ng',
    templateData,
    templateDigest: hash('sha1', templateData),
    offset: 0,
  };
}

function changedRecord(original: ImaRecord): Uint8Array {
  const templateData = original.templateData.slice();
  const last = templateData.byteLength - 2;
  templateData[last] = (templateData[last] as number) ^ 0x20;
  const templateDigest = templateDigestOf({ ...original, templateData }, 'sha1');

  return encodeBinaryRecord({ ...original, templateData, templateDigest });
}
