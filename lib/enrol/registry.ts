import { bytesEqual } from '../bytes/hex.ts';
import { objectName, qualifiedNameOfChain } from '../tpm/name.ts';
import { parsePublic } from '../tpm/public.ts';
import { ekKeyHash } from './ek-policy.ts';
import type { Enrollment } from './types.ts';

/**
 * The enrolled AK of each host, as last decided by the enroller (ima.enrollments is compacted per
 * host, so the newest record per host is the state). Only `active` enrolments vouch for quotes.
 */
export class EnrolmentRegistry {
  private readonly byHost = new Map<string, Enrollment>();

  /** Applies a record from ima.enrollments; an older record than the one held is ignored. */
  apply(enrollment: Enrollment): void {
    const held = this.byHost.get(enrollment.hostId);
    if (held !== undefined && held.at > enrollment.at) return;
    this.byHost.set(enrollment.hostId, enrollment);
  }

  get(hostId: string): Enrollment | undefined {
    return this.byHost.get(hostId);
  }

  /**
   * The EK key hash ({@link ekKeyHash}) of the host's enrolment on record, which binds the host
   * to its EK. A stored EK that no longer parses yields a value no EK hashes to, so every EK is
   * refused until an operator rebinds the host.
   */
  ekKeyHashOf(hostId: string): string | undefined {
    const held = this.byHost.get(hostId);
    if (held === undefined) return undefined;
    try {
      return ekKeyHash(parsePublic(held.ekPublic).key);
    } catch {
      return 'unparseable-stored-ek';
    }
  }

  get size(): number {
    return this.byHost.size;
  }
}

export type AkCheck =
  | { ok: true; enrollment: Enrollment }
  | { ok: false; code: 'UNKNOWN_AK'; message: string };

/**
 * Whether a quote from `hostId` claiming AK `akName` comes from the AK enrolled to that host.
 * UNKNOWN_AK when the host has no active enrolment or another AK. On ok, verify the quote's
 * signature with `enrollment.akPublic`, never with a key the quote message carries.
 */
export function checkQuoteAk(registry: EnrolmentRegistry, hostId: string, akName: Uint8Array): AkCheck {
  const enrollment = registry.get(hostId);
  if (enrollment === undefined) {
    return { ok: false, code: 'UNKNOWN_AK', message: `host ${hostId} is not enrolled` };
  }
  if (enrollment.status !== 'active') {
    return { ok: false, code: 'UNKNOWN_AK', message: `enrolment of host ${hostId} is ${enrollment.status}` };
  }
  if (!bytesEqual(enrollment.akName, akName)) {
    return { ok: false, code: 'UNKNOWN_AK', message: `AK is not the one enrolled to host ${hostId}` };
  }

  return { ok: true, enrollment };
}

/**
 * The qualifiedSigner a quote carries when the enrolled AK is a child of the enrolled EK (as
 * `tpm2_createak -C ek` makes it): QN(endorsement hierarchy, EK, AK). Activation does not require
 * that parentage, so compare with this only where the fleet's agents create the AK under the EK.
 */
export function expectedQualifiedSigner(enrollment: Enrollment): Uint8Array {
  const ek = parsePublic(enrollment.ekPublic);

  return qualifiedNameOfChain('endorsement', [objectName(ek.bytes, ek.nameAlg), enrollment.akName]);
}
