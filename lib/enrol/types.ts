/**
 * The enrolment protocol (DESIGN §5) and its records. Everything the agent sends is untrusted;
 * an AK becomes trusted only when an Enrollment with status `active` exists for its host, which
 * the enroller writes after the host has activated a credential made for that AK under its EK.
 *
 *   agent → enroller  EnrolRequest    { hostId, ekPublic, ekCertificate?, akPublic }
 *   enroller → agent  EnrolChallenge  { hostId, challengeId, credential (tpm2-tools file), expiresAt }
 *   agent → enroller  EnrolAnswer     { hostId, challengeId, secret }  (tpm2_activatecredential output)
 *   enroller → ima.enrollments  Enrollment { …, status: 'active' }
 */

export interface EnrolRequest {
  hostId: string;
  /** EK public area, TPM2B_PUBLIC or TPMT_PUBLIC (`tpm2_createek -u`). */
  ekPublic: Uint8Array;
  /** EK certificate from NV (DER), when the TPM has one. */
  ekCertificate: Uint8Array | null;
  /** AK public area, TPM2B_PUBLIC or TPMT_PUBLIC (`tpm2_createak -u`). */
  akPublic: Uint8Array;
}

export interface EnrolChallenge {
  hostId: string;
  /** Random, hex; names this one-time challenge. */
  challengeId: string;
  /** tpm2-tools credential file (BADCC0DE v1) for `tpm2_activatecredential -i`. */
  credential: Uint8Array;
  /** The AK Name the credential is bound to, as the enroller computed it from akPublic. */
  akName: Uint8Array;
  /** ms since the epoch; answers after this are refused. */
  expiresAt: number;
}

export interface EnrolAnswer {
  hostId: string;
  challengeId: string;
  /** The secret the TPM returned from ActivateCredential. */
  secret: Uint8Array;
}

/** How the EK came to be trusted: its certificate chain, an allow-list, or first use. */
export type EkPolicyName = 'ek-cert' | 'ek-allow-list' | 'tofu';

/** The record on ima.enrollments (docs/contract.md), compacted per host. */
export interface Enrollment {
  hostId: string;
  /** TPM2B_PUBLIC of the AK. */
  akPublic: Uint8Array;
  /** nameAlg ‖ H(TPMT_PUBLIC), computed here, never taken from the agent. */
  akName: Uint8Array;
  /** TPM2B_PUBLIC of the EK. */
  ekPublic: Uint8Array;
  ekCertificate: Uint8Array | null;
  policy: EkPolicyName;
  /**
   * `active` (quotes from akName are trusted for hostId) or `revoked`. Rejections are never
   * written: on a compacted topic they would replace a host's good enrolment.
   */
  status: 'active' | 'revoked';
  at: number;
}

/** Stable reasons an enrolment is refused; EK certificate failures keep their EK_CERT_* code. */
export type RejectionCode =
  | 'BAD_REQUEST'
  | 'AK_NOT_ATTESTATION_KEY'
  | 'EK_UNSUPPORTED'
  | 'EK_NO_CERTIFICATE'
  | 'EK_NOT_ALLOWED'
  | 'EK_CHANGED'
  | 'HOST_REVOKED'
  | 'TOO_MANY_PENDING'
  | 'UNKNOWN_CHALLENGE'
  | 'CHALLENGE_EXPIRED'
  | 'CHALLENGE_REPLAYED'
  | 'HOST_MISMATCH'
  | 'WRONG_SECRET'
  | `EK_CERT_${string}`;

export interface Rejection {
  code: RejectionCode;
  message: string;
  hostId: string;
}
