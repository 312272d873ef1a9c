import { toHex } from '../../lib/bytes/hex.ts';
import type { AnswerOutcome, BeginOutcome, Enroller } from '../../lib/enrol/enroller.ts';
import type { EnrolmentRegistry } from '../../lib/enrol/registry.ts';
import type {
  EkPolicyName,
  EnrolAnswer,
  EnrolChallenge,
  Enrollment,
  EnrolRequest,
  Rejection,
} from '../../lib/enrol/types.ts';
import { parsePublic } from '../../lib/tpm/public.ts';
import type { Logger } from '../shared/logger.ts';
import type { Enrollment as EnrollmentRecord } from '../shared/records.ts';

/** Where accepted enrolments go: ima.enrollments, keyed by hostId (compacted). */
export interface EnrolmentSink {
  publish(record: EnrollmentRecord): Promise<void>;
}

/**
 * The enroller process's core, independent of transport: the pure state machine (lib/enrol)
 * plus logging and publishing. Requests and answers arrive from the agents (the topic for them
 * is still to be agreed, docs/enrolment.md); ima.enrollments is both output and the registry's
 * input, so several enroller instances converge on the same registry.
 *
 * Log levels: a rejection is a verification failure (warn); an enrolment is info.
 */
export class EnrolmentService {
  constructor(
    private readonly enroller: Enroller,
    private readonly registry: EnrolmentRegistry,
    private readonly sink: EnrolmentSink,
    private readonly log: Logger,
    private readonly clock: () => number = Date.now,
  ) {}

  /** A challenge to send back to the agent, or null when the request is refused. */
  async request(request: EnrolRequest): Promise<EnrolChallenge | null> {
    const out = await this.begin(request);

    return out.ok ? out.challenge : null;
  }

  /** The challenge, or the rejection (logged) to tell the agent about. */
  async begin(request: EnrolRequest): Promise<BeginOutcome> {
    const out = await this.enroller.begin(request, this.clock());
    if (!out.ok) {
      this.rejected(out.rejection, 'request');
      return out;
    }
    this.log.debug(
      { hostId: request.hostId, challengeId: out.challenge.challengeId },
      'enrolment challenge issued',
    );

    return out;
  }

  /** True when the answer enrols the AK; the Enrollment is published before this returns. */
  async answer(answer: EnrolAnswer): Promise<boolean> {
    return (await this.complete(answer)).ok;
  }

  /** The published enrolment, or the rejection (logged) to tell the agent about. */
  async complete(answer: EnrolAnswer): Promise<AnswerOutcome> {
    const out = this.enroller.answer(answer, this.clock());
    if (!out.ok) {
      this.rejected(out.rejection, 'answer');
      return out;
    }
    await this.sink.publish(toRecord(out.enrollment));
    const { hostId, policy, akName } = out.enrollment;
    this.log.info({ hostId, policy, akName: toHex(akName) }, 'AK enrolled');

    return out;
  }

  /** Feeds a record read from ima.enrollments into the registry; malformed ones are logged and skipped. */
  onRecord(record: EnrollmentRecord): void {
    const enrollment = fromRecord(record);
    if (enrollment === undefined) {
      this.log.warn(
        { hostId: record.hostId, status: record.status, policy: record.policy },
        'enrolment record ignored',
      );
      return;
    }
    this.registry.apply(enrollment);
  }

  private rejected(rejection: Rejection, step: 'request' | 'answer'): void {
    this.log.warn(
      { hostId: rejection.hostId, code: rejection.code, step, reason: rejection.message },
      'enrolment rejected',
    );
  }
}

const POLICIES: ReadonlySet<string> = new Set<EkPolicyName>(['ek-cert', 'ek-allow-list', 'tofu']);

function parses(publicArea: Buffer): boolean {
  try {
    parsePublic(publicArea);
    return true;
  } catch {
    return false;
  }
}

/** lib's Enrollment as the Avro record (Buffers). */
export function toRecord(e: Enrollment): EnrollmentRecord {
  return {
    hostId: e.hostId,
    akPublic: Buffer.from(e.akPublic),
    akName: Buffer.from(e.akName),
    ekPublic: Buffer.from(e.ekPublic),
    ekCertificate: e.ekCertificate === null ? null : Buffer.from(e.ekCertificate),
    policy: e.policy,
    status: e.status,
    at: e.at,
  };
}

/**
 * The Avro record as lib's Enrollment, or undefined for one this enroller did not write (an
 * unknown policy or status, such as the agent's own `unverified-tofu` records, or public areas
 * that do not parse).
 */
export function fromRecord(r: EnrollmentRecord): Enrollment | undefined {
  if (!POLICIES.has(r.policy) || (r.status !== 'active' && r.status !== 'revoked')) return undefined;
  if (!parses(r.akPublic) || !parses(r.ekPublic)) return undefined;

  return {
    hostId: r.hostId,
    akPublic: new Uint8Array(r.akPublic),
    akName: new Uint8Array(r.akName),
    ekPublic: new Uint8Array(r.ekPublic),
    ekCertificate: r.ekCertificate === null ? null : new Uint8Array(r.ekCertificate),
    policy: r.policy as EkPolicyName,
    status: r.status,
    at: r.at,
  };
}
