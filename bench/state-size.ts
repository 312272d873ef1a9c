/**
 * Benchmark: how much state one host costs, per 100,000 records. A realistic synthetic log
 * (lib/ima/synthetic.ts: ima-ng / ima-sig / ima-buf mix, boot_aggregate first) is played into a
 * real swtpm and a log file; the real agent (`imastream agent`, a child process) archives,
 * produces and, at a challenge every --shard records, quotes and seals a shard (enrolled by a
 * real enroller, tofu); a real replayer and quote-checker (in process, their own consumer groups)
 * keep the host's state in Redis. Then it prints:
 *
 * - the host archive: records.bin + index.bin (+ meta.json), and the sealed shard files;
 * - the Redis state of the host: MEMORY USAGE of every `h:{hostId}:*` key;
 * - whether the sealed chain verifies offline (lib/shard, as `imastream verify-shard`).
 *
 * Needs the stack (Kafka, Redis) up. Prints figures; asserts nothing about time.
 *   npm run bench:state-size [-- --records 100000 --shard 10000]
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { Kafka, logLevel } from 'kafkajs';
import { verifyShardChain } from '../lib/shard/verify.ts';
import { archiveDir } from '../services/agent/archive.ts';
import { listShardFiles, shardDir } from '../services/agent/shard-sealer.ts';
import { SimHost } from '../services/demo/host.ts';
import { syntheticLog } from '../services/demo/logs.ts';
import { startGroupsAtEnd } from '../services/demo/services.ts';
import { startEnroller } from '../services/enroller/main.ts';
import { startQuoteChecker } from '../services/quote-checker/main.ts';
import { hostKeyPattern, hostKeys } from '../services/replayer/keys.ts';
import { startReplayer } from '../services/replayer/main.ts';
import { encode } from '../services/shared/codec.ts';
import { createLogger } from '../services/shared/logger.ts';
import { SHARDS_MAX_MESSAGE_BYTES, TOPIC } from '../services/shared/topics.ts';

const { values } = parseArgs({
  options: {
    records: { type: 'string', default: '100000' },
    shard: { type: 'string', default: '10000' },
    batch: { type: 'string', default: '2000' },
  },
});
const RECORDS = Number(values.records);
const SHARD = Number(values.shard);
const BATCH = Number(values.batch);
const PER = 100_000;

const brokers = (process.env.IMASTREAM_KAFKA_BROKERS ?? '127.0.0.1:19092').split(',');
const redisUrl = process.env.IMASTREAM_REDIS_URL ?? 'redis://127.0.0.1:6379';
const run = randomUUID().slice(0, 8);
const hostId = `bench-size-${run}`;
const shardsTopic = `bench.shards.${run}`;
const base = mkdtempSync(join(tmpdir(), 'ims-bench-size-'));
const say = (msg: string) => process.stderr.write(`state-size: ${msg}\n`);

function bytesIn(dir: string): { files: Record<string, number>; total: number } {
  const files: Record<string, number> = {};
  let total = 0;
  for (const name of readdirSync(dir)) {
    const size = statSync(join(dir, name)).size;
    files[name] = size;
    total += size;
  }

  return { files, total };
}

function per100k(bytes: number): string {
  const scaled = (bytes * PER) / RECORDS;
  return `${(scaled / 1024 / 1024).toFixed(2)} MiB (${Math.round(scaled)} bytes)`;
}

async function withAdmin<T>(fn: (admin: ReturnType<Kafka['admin']>) => Promise<T>): Promise<T> {
  const admin = new Kafka({ clientId: 'bench-state-size', brokers, logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    return await fn(admin);
  } finally {
    await admin.disconnect();
  }
}

async function challenge(host: SimHost): Promise<string> {
  const kafka = new Kafka({ clientId: 'bench-state-size', brokers, logLevel: logLevel.NOTHING });
  const producer = kafka.producer();
  await producer.connect();
  const requestId = `bench-${randomUUID()}`;
  const value = encode('Challenge', {
    hostId: host.hostId,
    requestId,
    nonce: randomBytes(20),
    at: Date.now(),
  });
  await producer.send({ topic: 'ima.challenges', messages: [{ key: host.hostId, value }] });
  await producer.disconnect();

  return requestId;
}

async function until(what: string, cond: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

async function main(): Promise<void> {
  const logger = createLogger({ service: 'bench', level: 'warn' });
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 2 });
  await withAdmin((admin) =>
    admin.createTopics({
      topics: [
        {
          topic: shardsTopic,
          numPartitions: 1,
          replicationFactor: 1,
          configEntries: [{ name: 'max.message.bytes', value: String(SHARDS_MAX_MESSAGE_BYTES) }],
        },
      ],
      waitForLeaders: true,
    }),
  );
  const groupId = `bench-replayer-${run}`;
  const checkerGroup = `bench-qc-${run}`;
  await startGroupsAtEnd(brokers, [groupId, checkerGroup]);
  const replayer = await startReplayer({ brokers, redisUrl, logger, groupId, concurrency: 6 });
  // A quote-checker too, so the host's Redis state is the whole pipeline's (joined quotes).
  const checker = await startQuoteChecker({
    brokers,
    redisUrl,
    logger,
    groupId: checkerGroup,
    refsGroupId: `bench-qc-refs-${run}`,
  });
  await Promise.all([replayer.joined, checker.joined]);
  // The agent enrols its AK on first start (this swtpm has no EK certificate: tofu).
  const enrollerGroup = `bench-enroller-${run}`;
  await startGroupsAtEnd(brokers, [enrollerGroup], [TOPIC.enrolRequests]);
  const enroller = await startEnroller({
    brokers,
    logger,
    ekPolicy: { trustStore: null, withoutCertificate: 'tofu', allowList: new Set() },
    groupId: enrollerGroup,
  });
  await enroller.joined;
  const source = syntheticLog(RECORDS, 7);
  const host = await SimHost.start(
    { hostId, source, brokers: brokers.join(','), quoteIntervalS: 3600, shardsTopic },
    base,
  );
  const t0 = Date.now();
  try {
    await host.startAgent();
    say(`${RECORDS} records, a challenge (quote + sealed shard) every ${SHARD}`);
    let sealed = 0;
    while (host.writer.written < RECORDS) {
      const boundary = Math.min(RECORDS, (Math.floor(host.writer.written / SHARD) + 1) * SHARD);
      await host.writer.writeNext(Math.min(BATCH, boundary - host.writer.written));
      if (host.writer.written === boundary) {
        const requestId = await challenge(host);
        const want = ++sealed;
        await until(
          `shard ${want}`,
          () =>
            host
              .agentLines()
              .some((l) => l.msg === 'quote sent' && String(l.quoteId).startsWith(requestId)) &&
            host.agentLines().filter((l) => l.msg === 'shard sealed').length >= want,
          300_000,
        );
        say(`${host.writer.written} records written, ${want} shards sealed`);
      }
    }
    await until(
      'the replayer to apply every record',
      async () => {
        const doc = await redis.get(hostKeys.replay(hostId));
        return doc !== null && (JSON.parse(doc) as { nextSeq: number }).nextSeq >= RECORDS;
      },
      600_000,
    );
    // The last quote's checkpoint and verdict settle shortly after the last record.
    await until('the quote-checker to judge every quote', () => checker.stats.quotes >= sealed, 120_000);
    const seconds = (Date.now() - t0) / 1000;

    const ready = host.agentLines().find((l) => l.msg === 'agent ready');
    const bootId = String(ready?.bootId);
    const stateDir = join(host.dir, 'agent-state');
    const archive = bytesIn(archiveDir(stateDir, bootId));
    const shardFiles = listShardFiles(shardDir(stateDir, bootId));
    const shards = bytesIn(shardDir(stateDir, bootId));
    const chain = await verifyShardChain(
      shardFiles.map((f) => new Uint8Array(readFileSync(join(shardDir(stateDir, bootId), f.name)))),
    );

    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = await redis.scan(cursor, 'MATCH', hostKeyPattern(hostId), 'COUNT', 1000);
      cursor = next;
      keys.push(...batch);
    } while (cursor !== '0');
    const usage: Record<string, number> = {};
    for (const key of keys.sort()) usage[key] = Number(await redis.memory('USAGE', key, 'SAMPLES', 0));
    const redisTotal = Object.values(usage).reduce((a, b) => a + b, 0);

    const out = (line: string) => process.stdout.write(`${line}\n`);
    out(
      `records: ${RECORDS} (synthetic, seed 7), shards of ${SHARD}; played and replayed in ${seconds.toFixed(1)} s`,
    );
    out(`host archive (records.bin + index.bin + meta.json): ${archive.total} bytes`);
    for (const [name, size] of Object.entries(archive.files)) out(`  ${name}: ${size}`);
    out(`sealed shards: ${shardFiles.length} files, ${shards.total} bytes; chain verifies: ${chain.ok}`);
    out(`Redis state of the host: ${keys.length} keys, ${redisTotal} bytes (MEMORY USAGE)`);
    for (const [key, size] of Object.entries(usage)) out(`  ${key}: ${size}`);
    out('per 100,000 records:');
    out(`  host archive:   ${per100k(archive.total)}`);
    out(`  sealed shards:  ${per100k(shards.total)}`);
    out(`  host total:     ${per100k(archive.total + shards.total)}`);
    // The replay document is per host; a checkpoint per quote lives for its TTL (1 day).
    const kinds = new Map<string, { keys: number; bytes: number }>();
    for (const [key, size] of Object.entries(usage)) {
      const kind = key.slice(key.indexOf('}:') + 2).split(':')[0] as string;
      const k = kinds.get(kind) ?? { keys: 0, bytes: 0 };
      kinds.set(kind, { keys: k.keys + 1, bytes: k.bytes + size });
    }
    const parts = [...kinds].map(([kind, k]) => `${kind} ${k.keys} key(s) ${k.bytes} B`).join(', ');
    out(`  Redis state:    ${redisTotal} bytes as measured (${parts}); it grows per quote, not per record`);
  } finally {
    await host.stop();
    await replayer.stop();
    await checker.stop();
    await enroller.stop();
    const keys = await redis.keys(hostKeyPattern(hostId));
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
    await withAdmin((admin) => admin.deleteTopics({ topics: [shardsTopic] })).catch(() => undefined);
    rmSync(base, { recursive: true, force: true });
  }
}

await main();
