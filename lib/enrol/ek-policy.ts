import { createPublicKey } from 'node:crypto';
import { toHex } from '../bytes/hex.ts';
import { ImastreamError } from '../errors.ts';
import { hash } from '../hash.ts';
import { type TrustStore, verifyEkCertificate } from '../tpm/ek-cert.ts';
import { toJwk } from '../tpm/key.ts';
import type { PublicKey } from '../tpm/public.ts';
import type { EkPolicyName, RejectionCode } from './types.ts';

/**
 * Which EKs the fleet trusts. An EK that comes with a certificate must chain to `trustStore`
 * (a bad certificate is refused, never downgraded to the no-certificate rule). An EK without one
 * is handled by `withoutCertificate`:
 *   - `reject`: certificates are required;
 *   - `allow-list`: its key hash must be in `allowList` (provisioned from an inventory);
 *   - `tofu`: trust on first use: the first EK seen for a host is accepted, and a later
 *     enrolment of that host must present the same EK. TOFU proves nothing about the first EK;
 *     it only detects a change afterwards.
 */
export interface EkPolicy {
  trustStore: TrustStore | null;
  withoutCertificate: 'reject' | 'allow-list' | 'tofu';
  /** Lowercase hex SHA-256 of each allowed EK's DER SubjectPublicKeyInfo (see {@link ekKeyHash}). */
  allowList: ReadonlySet<string>;
  /**
   * Operator-approved moves of a host to another EK (a replaced TPM or mainboard), or back from
   * revoked: hostId → the key hash of the EK it may enrol with. Without an entry, a host stays
   * bound to the EK of its first enrolment, whatever the policy (see {@link evaluateEk}).
   */
  rebind?: ReadonlyMap<string, string>;
}

export type EkVerdict =
  | { ok: true; policy: EkPolicyName; message: string }
  | { ok: false; code: RejectionCode; message: string };

export interface EkEvidence {
  hostId: string;
  key: PublicKey;
  certificate: Uint8Array | null;
  /** The host's enrolment on record (its EK key hash and status); undefined if it has none. */
  previous: { keyHash: string; status: 'active' | 'revoked' } | undefined;
}

/**
 * SHA-256 (lowercase hex) of the EK public key as DER SubjectPublicKeyInfo: the same value as
 * `tpm2_readpublic -c <EK> -f der -o ek.der && sha256sum ek.der` (checked against swtpm).
 * The key comes from the host: one that is no key (an ECC point off its curve, a coordinate
 * longer than the curve) is IMS_TPM_BAD_PUBLIC, an unsupported curve IMS_TPM_UNSUPPORTED_ALG.
 */
export function ekKeyHash(key: PublicKey): string {
  const jwk = toJwk(key);
  let spki: Buffer;
  try {
    spki = createPublicKey({ key: jwk, format: 'jwk' }).export({ format: 'der', type: 'spki' });
  } catch (cause) {
    throw new ImastreamError('IMS_TPM_BAD_PUBLIC', 'the EK public key is not a valid key', { cause });
  }

  return toHex(hash('sha256', spki));
}

/**
 * Decides whether the EK is trusted under `policy` at time `at`, for this host.
 *
 * A host is bound to the EK of its first enrolment under every policy, not only TOFU: a genuine
 * certificate proves the EK is some manufacturer's TPM, not that it is this host's. Without the
 * binding, anyone with any certified TPM and access to ima.enrol-requests could enrol as any
 * host and sign quotes for a log of their choosing. A host moves to another EK, or comes back
 * from `revoked`, only with the operator's `rebind` entry naming that EK.
 */
export async function evaluateEk(evidence: EkEvidence, policy: EkPolicy, at: Date): Promise<EkVerdict> {
  const bound = checkBinding(evidence, policy);
  if (bound !== undefined) return bound;
  if (evidence.certificate !== null && policy.trustStore !== null) {
    const v = await verifyEkCertificate(evidence.certificate, evidence.key, policy.trustStore, at);
    if (!v.ok) return { ok: false, code: v.code, message: v.message };
    return { ok: true, policy: 'ek-cert', message: v.message };
  }

  return withoutCertificate(evidence, policy);
}

function withoutCertificate(evidence: EkEvidence, policy: EkPolicy): EkVerdict {
  const keyHash = ekKeyHash(evidence.key);
  switch (policy.withoutCertificate) {
    case 'reject':
      return { ok: false, code: 'EK_NO_CERTIFICATE', message: 'an EK certificate is required' };
    case 'allow-list':
      return policy.allowList.has(keyHash)
        ? { ok: true, policy: 'ek-allow-list', message: `EK ${keyHash} is allow-listed` }
        : { ok: false, code: 'EK_NOT_ALLOWED', message: `EK ${keyHash} is not on the allow-list` };
    case 'tofu':
      // A host with an enrolment got past checkBinding only with this EK (or a rebind to it).
      return { ok: true, policy: 'tofu', message: `EK ${keyHash} trusted on first use` };
  }
}

/** The host↔EK binding: a refusal, or undefined when the EK may go on to the policy's checks. */
function checkBinding(evidence: EkEvidence, policy: EkPolicy): EkVerdict | undefined {
  const { previous, hostId } = evidence;
  if (previous === undefined) return undefined;
  const keyHash = ekKeyHash(evidence.key);
  if (policy.rebind?.get(hostId) === keyHash) return undefined;
  if (previous.status === 'revoked') {
    return {
      ok: false,
      code: 'HOST_REVOKED',
      message: `host ${hostId} was revoked; only an operator's rebind entry re-admits it`,
    };
  }
  if (previous.keyHash !== keyHash) {
    return {
      ok: false,
      code: 'EK_CHANGED',
      message: `host ${hostId} is bound to EK ${previous.keyHash}; a new EK needs an operator's rebind entry`,
    };
  }

  return undefined;
}
