import { randomBytes, timingSafeEqual } from 'node:crypto';
import { toHex } from '../bytes/hex.ts';
import { isImastreamError } from '../errors.ts';
import { digestSize } from '../hash.ts';
import { credentialFile, makeCredential } from '../tpm/credential.ts';
import { concat, u16be } from '../tpm/marshal.ts';
import { objectName } from '../tpm/name.ts';
import { checkAkAttributes, parsePublic, type TpmPublic } from '../tpm/public.ts';
import { type EkEvidence, type EkPolicy, type EkVerdict, evaluateEk } from './ek-policy.ts';
import type { EnrolmentRegistry } from './registry.ts';
import type {
  EkPolicyName,
  EnrolAnswer,
  EnrolChallenge,
  Enrollment,
  EnrolRequest,
  Rejection,
  RejectionCode,
} from './types.ts';

/**
 * The enroller's side of the protocol in ./types.ts, as a state machine without I/O: time comes
 * in as `now` (ms), and the caller sends challenges and publishes enrolments.
 *
 *   begin(request)  → checks the AK's attributes and the EK (certificate chain, or the policy for
 *                     EKs without one), makes a credential for the AK's Name under the EK with a
 *                     fresh random secret, and remembers it: one pending challenge per host.
 *   answer(answer)  → accepts the AK once, when the secret comes back byte-exact before expiry.
 *                     The challenge is spent by the first answer, right or wrong, so a secret
 *                     cannot be guessed twice and a replayed answer is refused.
 *
 * What acceptance proves: the host's TPM holds the EK's private key and has an object with the
 * AK's Name loaded, so the AK lives in that TPM. The AK's attributes (restricted, fixedTPM, …)
 * are then the TPM's own statement about the key.
 */
export interface EnrollerOptions {
  ekPolicy: EkPolicy;
  /** How long a challenge may be answered; default 5 minutes. */
  challengeTtlMs?: number;
  /** Bound on challenges held at once (pending plus recently spent); default 100 000. */
  maxChallenges?: number;
}

export type BeginOutcome = { ok: true; challenge: EnrolChallenge } | { ok: false; rejection: Rejection };
export type AnswerOutcome = { ok: true; enrollment: Enrollment } | { ok: false; rejection: Rejection };

interface Pending {
  hostId: string;
  secret: Uint8Array;
  expiresAt: number;
  record: Omit<Enrollment, 'status' | 'at'>;
}

const LIMITS = { hostId: 255, publicArea: 1026, certificate: 16 * 1024, secret: 64 };
const DEFAULT_TTL_MS = 5 * 60 * 1000;

export class Enroller {
  private readonly pending = new Map<string, Pending>();
  private readonly pendingByHost = new Map<string, string>();
  /** Spent challenge ids until their expiry, to tell a replay from an unknown id. */
  private readonly spent = new Map<string, number>();
  private readonly ttlMs: number;
  private readonly maxChallenges: number;

  constructor(
    private readonly options: EnrollerOptions,
    private readonly registry: EnrolmentRegistry,
  ) {
    this.ttlMs = options.challengeTtlMs ?? DEFAULT_TTL_MS;
    this.maxChallenges = options.maxChallenges ?? 100_000;
  }

  /** Checks a request and issues its challenge, or says why not. */
  async begin(request: EnrolRequest, now: number): Promise<BeginOutcome> {
    const reject = (code: RejectionCode, message: string): BeginOutcome => ({
      ok: false,
      rejection: { code, message, hostId: request.hostId },
    });
    const parsed = parseRequest(request);
    if ('code' in parsed) return reject(parsed.code, parsed.message);
    const { ek, ak } = parsed;

    const problems = checkAkAttributes(ak);
    if (problems.length > 0)
      return reject('AK_NOT_ATTESTATION_KEY', problems.map((p) => p.message).join('; '));

    const evidence = {
      hostId: request.hostId,
      key: ek.key,
      certificate: request.ekCertificate,
      previous: this.previousEk(request.hostId),
    };
    // The EK key itself is the host's claim: one no EK can have (an ECC point off its curve, a
    // curve we cannot use) is refused here, as MakeCredential would refuse it, not thrown.
    let verdict: EkVerdict;
    try {
      verdict = await evaluateEk(evidence, this.options.ekPolicy, new Date(now));
    } catch (err) {
      if (!isImastreamError(err)) throw err;
      return reject('EK_UNSUPPORTED', `${err.code}: ${err.message}`);
    }
    if (!verdict.ok) return reject(verdict.code, verdict.message);

    this.prune(now);
    if (this.pending.size + this.spent.size >= this.maxChallenges) {
      return reject('TOO_MANY_PENDING', `${this.maxChallenges} challenges outstanding`);
    }

    return this.issue(request, ek, ak, verdict.policy, now);
  }

  /** Checks the host's answer; the challenge is spent either way. */
  answer(answer: EnrolAnswer, now: number): AnswerOutcome {
    const reject = (code: RejectionCode, message: string): AnswerOutcome => ({
      ok: false,
      rejection: { code, message, hostId: answer.hostId },
    });
    if (this.spent.has(answer.challengeId)) return reject('CHALLENGE_REPLAYED', 'challenge already answered');
    const pending = this.pending.get(answer.challengeId);
    if (pending === undefined)
      return reject('UNKNOWN_CHALLENGE', 'no such challenge (superseded or expired)');
    // A wrong host does not spend the challenge: whoever sent it may not burn another host's.
    if (pending.hostId !== answer.hostId)
      return reject('HOST_MISMATCH', `challenge is for ${pending.hostId}`);

    this.spend(answer.challengeId, pending);
    if (now > pending.expiresAt) return reject('CHALLENGE_EXPIRED', `expired at ${pending.expiresAt}`);
    if (!sameSecret(pending.secret, answer.secret))
      return reject('WRONG_SECRET', 'the secret does not match');

    const enrollment: Enrollment = { ...pending.record, status: 'active', at: now };
    this.registry.apply(enrollment);

    return { ok: true, enrollment };
  }

  /** Forgets expired challenges; call it now and then (begin does). */
  prune(now: number): void {
    for (const [id, p] of this.pending) {
      if (now > p.expiresAt) this.spend(id, p);
    }
    for (const [id, expiresAt] of this.spent) {
      if (now > expiresAt) this.spent.delete(id);
    }
  }

  /** Challenges awaiting an answer. */
  get pendingCount(): number {
    return this.pending.size;
  }

  private issue(
    request: EnrolRequest,
    ek: TpmPublic,
    ak: TpmPublic,
    policy: EkPolicyName,
    now: number,
  ): BeginOutcome {
    const akName = objectName(ak.bytes, ak.nameAlg);
    const secret = randomBytes(Math.min(32, digestSize(ek.nameAlg)));
    let credential: Uint8Array;
    try {
      credential = credentialFile(makeCredential(ek, akName, secret));
    } catch (err) {
      if (!isImastreamError(err)) throw err;
      return {
        ok: false,
        rejection: { code: 'EK_UNSUPPORTED', message: err.message, hostId: request.hostId },
      };
    }

    const challengeId = toHex(randomBytes(16));
    const expiresAt = now + this.ttlMs;
    const superseded = this.pendingByHost.get(request.hostId);
    if (superseded !== undefined) this.pending.delete(superseded);
    const record = {
      hostId: request.hostId,
      akPublic: tpm2b(ak.bytes),
      akName,
      ekPublic: tpm2b(ek.bytes),
      ekCertificate: policy === 'ek-cert' ? request.ekCertificate : null,
      policy,
    };
    this.pending.set(challengeId, { hostId: request.hostId, secret, expiresAt, record });
    this.pendingByHost.set(request.hostId, challengeId);

    return { ok: true, challenge: { hostId: request.hostId, challengeId, credential, akName, expiresAt } };
  }

  private spend(id: string, p: Pending): void {
    this.pending.delete(id);
    if (this.pendingByHost.get(p.hostId) === id) this.pendingByHost.delete(p.hostId);
    this.spent.set(id, p.expiresAt);
  }

  /** The host's enrolment on record, active or revoked: both keep the host bound to its EK. */
  private previousEk(hostId: string): EkEvidence['previous'] {
    const held = this.registry.get(hostId);
    const keyHash = this.registry.ekKeyHashOf(hostId);
    return held === undefined || keyHash === undefined ? undefined : { keyHash, status: held.status };
  }
}

type ParsedRequest = { ek: TpmPublic; ak: TpmPublic } | { code: RejectionCode; message: string };

/** Size caps first, then the two public areas through the hostile-input parser. */
function parseRequest(request: EnrolRequest): ParsedRequest {
  const { hostId, ekPublic, akPublic, ekCertificate } = request;
  if (hostId.length === 0 || hostId.length > LIMITS.hostId || !/^[\x21-\x7e]+$/.test(hostId)) {
    return { code: 'BAD_REQUEST', message: 'hostId must be 1-255 printable ASCII characters' };
  }
  if (ekPublic.byteLength > LIMITS.publicArea || akPublic.byteLength > LIMITS.publicArea) {
    return { code: 'BAD_REQUEST', message: 'public area too large' };
  }
  if (ekCertificate !== null && ekCertificate.byteLength > LIMITS.certificate) {
    return { code: 'BAD_REQUEST', message: `EK certificate over ${LIMITS.certificate} bytes` };
  }
  try {
    return { ek: parsePublic(ekPublic), ak: parsePublic(akPublic) };
  } catch (err) {
    if (!isImastreamError(err)) throw err;
    return { code: 'BAD_REQUEST', message: `${err.code}: ${err.message}` };
  }
}

/** Constant-time comparison; the secret's length is public (it is set by the EK's nameAlg). */
function sameSecret(expected: Uint8Array, given: Uint8Array): boolean {
  if (given.byteLength !== expected.byteLength || given.byteLength > LIMITS.secret) return false;

  return timingSafeEqual(expected, given);
}

function tpm2b(tpmt: Uint8Array): Uint8Array {
  return concat(u16be(tpmt.byteLength), tpmt);
}
