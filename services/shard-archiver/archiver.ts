import { bytesEqual, toHex } from '../../lib/bytes/hex.ts';
import { ImastreamError } from '../../lib/errors.ts';
import { decodeShard } from '../../lib/shard/decode.ts';
import { storedShardDigest } from '../../lib/shard/format.ts';
import type { ShardFailure, ShardResult } from '../../lib/shard/verdict.ts';
import { verifyShardChain } from '../../lib/shard/verify.ts';
import { type AlertKind, makeAlert } from '../alerts/make.ts';
import { decode, encode, MAX_SHARD_MESSAGE_BYTES } from '../shared/codec.ts';
import type { ImsProducer, InMessage } from '../shared/kafka.ts';
import type { Logger } from '../shared/logger.ts';
import type { Enrollment, SealedShard } from '../shared/records.ts';
import { type ShardStore, safeName } from './store.ts';

/**
 * The policies the enroller writes (docs/enrolment.md). As for the quote-checker, only an `active`
 * enrolment under one of them vouches for an AK; anything else on ima.enrollments does not.
 */
const ENROLLER_POLICIES: ReadonlySet<string> = new Set(['ek-cert', 'ek-allow-list', 'tofu']);
/** How long a replaced AK still signs acceptable shards (the quote-checker's default overlap). */
export const DEFAULT_AK_OVERLAP_MS = 10 * 60_000;
/** How long a shard waits for its host's enrolment before it is refused as UNKNOWN_AK. */
export const DEFAULT_ENROLMENT_GRACE_MS = 60_000;

/** Why the archiver refused a shard, besides the verifier's own failure codes. */
export type ArchiveFailureCode =
  | ShardFailure['code']
  /** The record's hostId/bootId/range/digest/size do not describe the file it carries. */
  | 'SHARD_RECORD_MISMATCH'
  /** Another file is already archived for this range, or the range overlaps the archive. */
  | 'SHARD_CONFLICT'
  /** No usable enrolment for the host. */
  | 'SHARD_NO_ENROLMENT';

export interface ArchiverStats {
  stored: number;
  duplicates: number;
  rejected: number;
  gaps: number;
  /** Shards of hosts outside `hostPrefix`, left alone. */
  skipped: number;
}

export interface ArchiverOptions {
  store: ShardStore;
  producer: ImsProducer;
  alertsTopic: string;
  logger: Logger;
  enrolmentGraceMs?: number;
  /** How long an AK replaced by a re-enrolment is still accepted. */
  akOverlapMs?: number;
  /** Archive only hosts whose id starts with this (an archiver for part of a fleet, a demo run). */
  hostPrefix?: string;
  now?: () => number;
}

/** A host's enrolment as the archiver holds it: the latest record and the AK it replaced. */
interface HeldEnrolment {
  enrollment: Enrollment;
  previous?: { akPublic: Uint8Array; until: number };
}

/**
 * The fleet side of sealed shards (docs/shards.md): takes SealedShard records from ima.shards,
 * verifies each file as hostile input against the host's enrolled AK and the previous archived
 * shard of the boot, and stores the good ones. Nothing an agent sends is trusted: the record's
 * fields must describe the file, the file must decode under its caps, its chain link, start PCRs,
 * replay, quote signature, nonce and counters must hold (lib/shard/verify.ts).
 *
 * A refused shard raises an Alert (SHARD_INVALID, or UNKNOWN_AK for a shard signed by another
 * key than the enrolled one) and is dead-lettered with IMS_SHARD_REJECTED; nothing is stored.
 * Redelivery is harmless: a file already archived with the same bytes is a no-op, and alerts
 * have deterministic ids.
 */
export class ShardArchiver {
  readonly stats: ArchiverStats = { stored: 0, duplicates: 0, rejected: 0, gaps: 0, skipped: 0 };
  private readonly opts: ArchiverOptions;
  private readonly enrolled = new Map<string, HeldEnrolment>();
  /** When a shard of a host without enrolment was first seen (for the grace period). */
  private readonly waitingSince = new Map<string, number>();

  constructor(opts: ArchiverOptions) {
    this.opts = opts;
  }

  private now(): number {
    return this.opts.now?.() ?? Date.now();
  }

  /** Handler for ima.enrollments: keeps the latest enrolment per host (the topic is compacted). */
  readonly handleEnrollment = async (m: InMessage): Promise<void> => {
    const decoded = decode(m.value);
    if (decoded.schema !== 'Enrollment') return;
    const e = decoded.value;
    const held = this.enrolled.get(e.hostId);
    if (held !== undefined && held.enrollment.at > e.at) return; // older than what we hold
    let previous = held?.previous;
    if (held !== undefined && !bytesEqual(held.enrollment.akPublic, e.akPublic)) {
      // A re-enrolment: the replaced active AK stays acceptable for the overlap, as for quotes.
      previous = isTrusted(held.enrollment)
        ? {
            akPublic: new Uint8Array(held.enrollment.akPublic),
            until: e.at + (this.opts.akOverlapMs ?? DEFAULT_AK_OVERLAP_MS),
          }
        : undefined;
    }
    this.enrolled.set(e.hostId, { enrollment: e, ...(previous === undefined ? {} : { previous }) });
    this.opts.logger.debug({ hostId: e.hostId, status: e.status, policy: e.policy }, 'enrolment seen');
  };

  /** Handler for ima.shards. Throws IMS_SHARD_REJECTED (dead-letter) for a refused shard. */
  readonly handleShard = async (m: InMessage): Promise<void> => {
    const decoded = decode(m.value, { maxBytes: MAX_SHARD_MESSAGE_BYTES });
    if (decoded.schema !== 'SealedShard') {
      throw new ImastreamError('IMS_WIRE_UNKNOWN_SCHEMA', `expected SealedShard, got ${decoded.schema}`);
    }
    await this.archive(decoded.value);
  };

  /** Verifies one SealedShard record and stores its file, or refuses it. */
  async archive(record: SealedShard): Promise<void> {
    const { logger } = this.opts;
    const where = {
      hostId: record.hostId,
      bootId: record.bootId,
      startSeq: record.startSeq,
      endSeq: record.endSeq,
    };
    const badId = idProblem(record.hostId) ?? idProblem(record.bootId);
    if (badId !== undefined) {
      // Not an id a host could have (the agent and the file format allow 1-255 printable
      // characters): nobody to alert about, and no safe file name. Dead-lettered only.
      this.stats.rejected++;
      throw new ImastreamError('IMS_SHARD_REJECTED', `SHARD_RECORD_MISMATCH: ${badId}`, {
        details: { codes: ['SHARD_RECORD_MISMATCH'] },
      });
    }
    if (this.opts.hostPrefix !== undefined && !record.hostId.startsWith(this.opts.hostPrefix)) {
      this.stats.skipped++;
      logger.debug(where, 'shard of a host outside this archiver, skipped');
      return;
    }
    if (record.shard === null) {
      // Too big for Kafka: the file exists only on the host. Say so; the chain has a hole here.
      this.stats.gaps++;
      logger.warn({ ...where, size: record.size }, 'shard not shipped (too large): archive gap');
      await this.alert(
        'SHARD_GAP',
        record,
        `shard ${shardId(record)} of ${record.size} bytes was not shipped`,
        {
          reason: 'too large for ima.shards',
          size: record.size,
        },
      );
      return;
    }
    const file = new Uint8Array(record.shard.buffer, record.shard.byteOffset, record.shard.byteLength);
    const aks = this.enrolledAks(record.hostId);
    if (aks.length === 0) {
      return this.refuse(record, 'UNKNOWN_AK', [
        { code: 'SHARD_NO_ENROLMENT', message: `no usable enrolment for host ${record.hostId}` },
      ]);
    }
    const mismatch = recordMismatch(record, file);
    if (mismatch !== undefined) return this.refuse(record, 'SHARD_INVALID', [mismatch]);

    const stored = this.opts.store.list(record.hostId, record.bootId);
    const same = stored.find((s) => s.startSeq === record.startSeq && s.endSeq === record.endSeq);
    if (same !== undefined) {
      if (bytesEqual(this.opts.store.read(same.path), file)) {
        this.stats.duplicates++;
        logger.debug(where, 'shard already archived');
        return;
      }
      return this.refuse(record, 'SHARD_INVALID', [
        { code: 'SHARD_CONFLICT', message: `another file is archived for ${shardId(record)}` },
      ]);
    }
    const overlap = stored.find((s) => s.startSeq < record.endSeq && record.startSeq < s.endSeq);
    if (overlap !== undefined) {
      return this.refuse(record, 'SHARD_INVALID', [
        { code: 'SHARD_CONFLICT', message: `overlaps archived shard ${overlap.startSeq}-${overlap.endSeq}` },
      ]);
    }

    const previous = record.startSeq === 0 ? undefined : stored.find((s) => s.endSeq === record.startSeq);
    const chain = previous === undefined ? [file] : [this.opts.store.read(previous.path), file];
    let result = await verifyLast(chain, aks[0] as Uint8Array);
    // Signed by the AK a re-enrolment replaced, inside the overlap window: that one is trusted.
    if (untrusted(result) && aks[1] !== undefined) result = await verifyLast(chain, aks[1]);
    if (!result.ok) {
      return this.refuse(record, untrusted(result) ? 'UNKNOWN_AK' : 'SHARD_INVALID', result.failures, result);
    }
    const path = this.opts.store.put(record.hostId, record.bootId, record.startSeq, record.endSeq, file);
    this.stats.stored++;
    if (previous === undefined && record.startSeq > 0) {
      // Verified on its own (its quote vouches for its records), but its link to the earlier
      // shards of the boot cannot be checked: they are not in the archive.
      this.stats.gaps++;
      await this.alert('SHARD_GAP', record, `shard ${shardId(record)} archived without its predecessor`, {
        reason: 'no archived shard ends at its startSeq',
        archivedUpTo: stored.at(-1)?.endSeq ?? null,
      });
    }
    logger.info({ ...where, path, bytes: file.byteLength, scheme: result.scheme }, 'shard archived');
  }

  /**
   * The AKs that may have signed the host's shards: the active one, then the one it replaced
   * while the overlap lasts. Empty when the host's enrolment is not active (or never came).
   */
  private enrolledAks(hostId: string): Uint8Array[] {
    const held = this.enrolled.get(hostId);
    if (held !== undefined && isTrusted(held.enrollment)) {
      this.waitingSince.delete(hostId);
      const aks: Uint8Array[] = [new Uint8Array(held.enrollment.akPublic)];
      if (held.previous !== undefined && this.now() <= held.previous.until) aks.push(held.previous.akPublic);
      return aks;
    }
    if (held !== undefined) return [];
    // The enrolment may simply not have been read yet (another topic): retry for a while.
    const since = this.waitingSince.get(hostId) ?? this.now();
    this.waitingSince.set(hostId, since);
    if (this.now() - since < (this.opts.enrolmentGraceMs ?? DEFAULT_ENROLMENT_GRACE_MS)) {
      throw new ImastreamError('IMS_SHARD_AK_PENDING', `no enrolment seen yet for host ${hostId}`, {
        canRetry: true,
        details: { hostId },
      });
    }

    return [];
  }

  /** Raises the alert, then throws IMS_SHARD_REJECTED so the record is dead-lettered. */
  private async refuse(
    record: SealedShard,
    kind: AlertKind,
    failures: readonly { code: string; message: string }[],
    result?: ShardResult,
  ): Promise<never> {
    this.stats.rejected++;
    const codes = failures.map((f) => f.code);
    const message = `shard ${shardId(record)} refused: ${codes.join(', ')}`;
    this.opts.logger.warn({ hostId: record.hostId, bootId: record.bootId, codes }, 'shard refused');
    await this.alert(kind, record, message, {
      codes,
      failures: failures.map((f) => ({ code: f.code, message: f.message.slice(0, 500) })),
      digest: toHex(record.digest),
      replayMismatches: result?.replayMismatches.length ?? 0,
    });
    throw new ImastreamError('IMS_SHARD_REJECTED', message, { details: { codes } });
  }

  private async alert(
    kind: AlertKind,
    record: SealedShard,
    message: string,
    details: Record<string, unknown>,
  ): Promise<void> {
    const alert = makeAlert({
      kind,
      hostId: record.hostId,
      bootId: record.bootId,
      seq: record.startSeq,
      message,
      details: { shardId: shardId(record), quoteId: record.quoteId, ...details },
      // One finding per file: a different file for the same range is another finding.
      key: `${record.endSeq}:${toHex(record.digest)}`,
      at: this.now(),
    });
    await this.opts.producer.send(this.opts.alertsTopic, [
      { key: record.hostId, value: encode('Alert', alert) },
    ]);
  }
}

/** Why a host or boot id from a record cannot be archived, if it cannot. */
function idProblem(id: string): string | undefined {
  if (!/^[\x21-\x7e]{1,255}$/.test(id)) return 'a host or boot id is not 1-255 printable characters';
  // Percent-encoding may triple a character; a file name has at most 255 bytes.
  if (safeName(id).length > 255) return 'a host or boot id is too long to be a file name';

  return undefined;
}

/** An enrolment that vouches for its AK: written by the enroller, active. */
function isTrusted(e: Enrollment): boolean {
  return e.status === 'active' && ENROLLER_POLICIES.has(e.policy);
}

function untrusted(result: ShardResult): boolean {
  return result.failures.some((f) => f.code === 'SHARD_UNTRUSTED_AK');
}

/** Verifies a chain (previous archived shard, then this one) and returns this one's result. */
async function verifyLast(chain: Uint8Array[], trustedAk: Uint8Array): Promise<ShardResult> {
  const verdict = await verifyShardChain(chain, { trustedAk });
  return verdict.shards.at(-1) as ShardResult;
}

/** `<bootId>:<start>-<end>`, as verify-shard names shards. */
function shardId(r: { bootId: string; startSeq: number; endSeq: number }): string {
  return `${r.bootId}:${r.startSeq}-${r.endSeq}`;
}

/**
 * The record's claims against the file's header. Only a header that decodes is compared; a file
 * that does not decode is left to the verifier, which names its failure.
 */
function recordMismatch(record: SealedShard, file: Uint8Array): ArchiveFailureCodeFailure | undefined {
  const fail = (message: string) => ({ code: 'SHARD_RECORD_MISMATCH' as const, message });
  if (record.size !== file.byteLength)
    return fail(`record says ${record.size} bytes, file has ${file.byteLength}`);
  if (file.byteLength < 32 || !bytesEqual(storedShardDigest(file), record.digest)) {
    return fail("record digest is not the file's");
  }
  let header: { hostId: string; bootId: string; startSeq: number; endSeq: number };
  try {
    header = decodeShard(file);
  } catch {
    return undefined;
  }
  if (
    header.hostId !== record.hostId ||
    header.bootId !== record.bootId ||
    header.startSeq !== record.startSeq ||
    header.endSeq !== record.endSeq
  ) {
    return fail(
      `file is ${header.hostId} ${shardId(header)}, record says ${record.hostId} ${shardId(record)}`,
    );
  }

  return undefined;
}

type ArchiveFailureCodeFailure = { code: ArchiveFailureCode; message: string };
