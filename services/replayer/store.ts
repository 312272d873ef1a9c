import { ImastreamError } from '../../lib/errors.ts';
import type { Checkpoint } from '../shared/records.ts';
import type { ShardCut } from './cuts.ts';
import { parseReplayDoc, parseSchemePin, type ReplayDoc, type SchemePin } from './doc.ts';
import { hostKeys, JOIN_TTL_SECONDS } from './keys.ts';
import { LuaScript, type RedisClient } from './lua.ts';
import { pcrsToJson } from './pcrs.ts';
import { type ClosedEnd, parseClosedEnd } from './snapshot.ts';

/** A Kafka message waiting to be produced: value base64, so the outbox is plain JSON. */
export interface OutboxMessage {
  topic: string;
  key: string;
  value: string;
}

/** The effects of one stored batch, produced after the store and cleared once produced. */
/**
 * A checkpoint as stored at `h:{host}:ckpt:<boot>:<seq>`: the Checkpoint record plus the shard it
 * ends (`cut`, null when the replayer could not place it), which the quote-checker reads there.
 */
export interface StoredCheckpoint {
  checkpoint: Checkpoint;
  cut: ShardCut | null;
}

export interface Outbox {
  id: string;
  messages: OutboxMessage[];
}

/** What is stored for one host. `raw` is the exact stored text: the compare-and-set compares it. */
export interface StoredHost {
  raw: string | null;
  doc: ReplayDoc | null;
  /** Set when `raw` is unreadable: the batch starts over as if no state existed. */
  corrupt: ImastreamError | null;
  pin: SchemePin | null;
  outbox: Outbox | null;
  /** End of the host's last quote-closed shard, which confirms a replay started from a snapshot. */
  closed: ClosedEnd | null;
}

/**
 * Writes a batch's new state iff the stored document is still the one the batch was applied to
 * (the whole text, which includes bootId and nextSeq), together with the batch's checkpoints and
 * outbox, in one step. A lost race returns 0 and writes nothing.
 * KEYS: replay, outbox, ckpt…  ARGV: expected ('' = absent), doc, outboxId ('' = none),
 * outboxJson, ckptTtl, ckptJson…
 */
const COMMIT = new LuaScript(`
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
if ARGV[3] == '' then
  redis.call('DEL', KEYS[2])
else
  redis.call('HSET', KEYS[2], 'id', ARGV[3], 'messages', ARGV[4])
end
for i = 3, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 3], 'EX', tonumber(ARGV[5]))
end
return 1
`);

/** Deletes the outbox iff it is still the one just produced. KEYS: outbox. ARGV: id. */
const CLEAR_OUTBOX = new LuaScript(`
if redis.call('HGET', KEYS[1], 'id') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`);

/** The replayer's view of Redis: load hosts, commit a batch with a compare-and-set, clear outboxes. */
export class ReplayStore {
  constructor(
    private readonly redis: RedisClient,
    private readonly ckptTtlSeconds = JOIN_TTL_SECONDS,
  ) {}

  /** Loads the stored state, scheme pin, outbox and closed end of each host, in one round trip. */
  async load(hostIds: readonly string[]): Promise<Map<string, StoredHost>> {
    const pipe = this.redis.pipeline();
    for (const id of hostIds) {
      pipe.get(hostKeys.replay(id));
      pipe.get(hostKeys.scheme(id));
      pipe.hgetall(hostKeys.outbox(id));
      pipe.get(hostKeys.closed(id));
    }
    const replies = (await pipe.exec()) ?? [];
    const out = new Map<string, StoredHost>();
    hostIds.forEach((id, i) => {
      const [replay, pin, outbox, closed] = [0, 1, 2, 3].map((k) => replyOf(replies[4 * i + k]));
      const host = storedHost(
        id,
        replay as string | null,
        pin as string | null,
        outbox as Record<string, string>,
      );
      out.set(id, { ...host, closed: parseClosedEnd(closed as string | null) });
    });

    return out;
  }

  /** Stores a batch's result; false when another writer changed the host first (reload, reapply). */
  async commit(
    hostId: string,
    expectedRaw: string | null,
    doc: ReplayDoc,
    checkpoints: readonly StoredCheckpoint[],
    outbox: Outbox | null,
  ): Promise<boolean> {
    const keys = [hostKeys.replay(hostId), hostKeys.outbox(hostId)];
    const ckptJson: string[] = [];
    for (const { checkpoint: c, cut } of checkpoints) {
      keys.push(hostKeys.ckpt(hostId, c.bootId, c.seq));
      ckptJson.push(JSON.stringify({ ...c, pcrs: pcrsToJson(c.pcrs), cut }));
    }
    const args = [
      expectedRaw ?? '',
      JSON.stringify(doc),
      outbox?.id ?? '',
      JSON.stringify(outbox?.messages ?? []),
    ];
    const done = await COMMIT.run(this.redis, keys, [...args, this.ckptTtlSeconds, ...ckptJson]);

    return done === 1;
  }

  async clearOutbox(hostId: string, id: string): Promise<void> {
    await CLEAR_OUTBOX.run(this.redis, [hostKeys.outbox(hostId)], [id]);
  }
}

function replyOf(reply: [Error | null, unknown] | undefined): unknown {
  if (reply === undefined)
    throw new ImastreamError('IMS_STATE_CONFLICT', 'Redis pipeline returned too few replies');
  if (reply[0] !== null) throw reply[0];

  return reply[1];
}

function storedHost(
  hostId: string,
  raw: string | null,
  pin: string | null,
  box: Record<string, string>,
): Omit<StoredHost, 'closed'> {
  let doc: ReplayDoc | null = null;
  let corrupt: ImastreamError | null = null;
  if (raw !== null) {
    try {
      doc = parseReplayDoc(raw, hostId);
    } catch (err) {
      corrupt = err as ImastreamError;
    }
  }

  return { raw, doc, corrupt, pin: parseSchemePin(pin), outbox: parseOutbox(box) };
}

function parseOutbox(box: Record<string, string> | null): Outbox | null {
  if (box === null || box.id === undefined || box.messages === undefined) return null;
  try {
    const messages = JSON.parse(box.messages) as OutboxMessage[];
    return Array.isArray(messages) ? { id: box.id, messages } : null;
  } catch {
    return null;
  }
}
