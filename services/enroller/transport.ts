import type { Rejection } from '../../lib/enrol/types.ts';
import { ImastreamError } from '../../lib/errors.ts';
import { parseCredentialFile } from '../../lib/tpm/credential.ts';
import { makeAlert } from '../alerts/make.ts';
import { decode, encode } from '../shared/codec.ts';
import type { ImsProducer, InMessage } from '../shared/kafka.ts';
import type { Logger } from '../shared/logger.ts';
import type { EnrolAnswer, EnrolChallenge, EnrolRejection, EnrolRequest } from '../shared/records.ts';
import type { EnrolmentService } from './service.ts';

/**
 * The enrolment protocol on Kafka (docs/contract.md):
 *   agent → ima.enrol-requests    EnrolRequest, later EnrolAnswer (key hostId)
 *   enroller → ima.enrol-challenges  EnrolChallenge or EnrolRejection (key hostId)
 *   enroller → ima.enrollments     Enrollment (only when the AK is accepted)
 *
 * Nothing read here is trusted: the state machine in lib/enrol checks every field. This layer
 * only refuses what cannot be a request at all (dead-lettered with IMS_ENROL_BAD_REQUEST or the
 * codec's code) and tells the waiting agent about every rejection.
 */
export interface EnrolTopics {
  requests: string;
  challenges: string;
  enrollments: string;
  /** ENROLMENT_REJECTED alerts, so the security team sees refused enrolments (ima.alerts). */
  alerts: string;
}

/** Printable ASCII, 1-255 characters: what lib/enrol accepts as a hostId. */
const HOST_ID = /^[\x21-\x7e]{1,255}$/;

export interface RequestsOptions {
  /**
   * A request older than this (its Kafka timestamp) is skipped: its agent stopped waiting long
   * ago, and a fresh consumer group would otherwise issue challenges for an hour of history.
   */
  staleAfterMs: number;
  now?: () => number;
}

export function requestsHandler(
  service: EnrolmentService,
  producer: ImsProducer,
  topics: EnrolTopics,
  log: Logger,
  options: RequestsOptions,
): (m: InMessage) => Promise<void> {
  const now = options.now ?? Date.now;
  const send = async (hostId: string, value: Buffer) => {
    await producer.send(topics.challenges, [{ key: hostId, value }]);
  };
  const refuse = async (
    rejection: Rejection,
    ids: { requestId: string | null; challengeId: string | null },
  ) => {
    if (!HOST_ID.test(rejection.hostId)) return; // no agent can be waiting under that name
    const record: EnrolRejection = {
      hostId: rejection.hostId,
      ...ids,
      code: rejection.code,
      message: rejection.message.slice(0, 1024),
      at: now(),
    };
    await send(rejection.hostId, encode('EnrolRejection', record));
    const alert = makeAlert({
      kind: 'ENROLMENT_REJECTED',
      hostId: rejection.hostId,
      message: `enrolment refused: ${rejection.code}: ${record.message}`,
      details: { code: rejection.code, ...ids },
      key: ids.requestId ?? ids.challengeId ?? undefined,
      at: record.at,
    });
    await producer.send(topics.alerts, [{ key: rejection.hostId, value: encode('Alert', alert) }]);
  };

  return async (m) => {
    const decoded = decode(m.value);
    if (decoded.schema !== 'EnrolRequest' && decoded.schema !== 'EnrolAnswer') {
      throw new ImastreamError('IMS_WIRE_UNKNOWN_SCHEMA', `${decoded.schema} on ${m.topic}`);
    }
    // The key decides the partition, hence which instance holds the host's challenge.
    if (m.key === null || m.key.toString('utf8') !== decoded.value.hostId) {
      throw new ImastreamError('IMS_ENROL_BAD_REQUEST', 'message key is not the hostId');
    }

    if (decoded.schema === 'EnrolRequest') {
      await onRequest(decoded.value, m);
    } else {
      await onAnswer(decoded.value);
    }
  };

  async function onRequest(request: EnrolRequest, m: InMessage): Promise<void> {
    const age = now() - Number(m.timestamp);
    if (age > options.staleAfterMs) {
      log.info(
        { hostId: request.hostId, requestId: request.requestId, ageMs: age },
        'stale enrolment request skipped',
      );
      return;
    }
    if (request.requestId.length === 0 || request.requestId.length > 128) {
      throw new ImastreamError('IMS_ENROL_BAD_REQUEST', 'requestId must be 1-128 characters');
    }
    const out = await service.begin({
      hostId: request.hostId,
      ekPublic: new Uint8Array(request.ekPublic),
      ekCertificate: request.ekCertificate === null ? null : new Uint8Array(request.ekCertificate),
      akPublic: new Uint8Array(request.akPublic),
    });
    if (!out.ok) {
      await refuse(out.rejection, { requestId: request.requestId, challengeId: null });
      if (out.rejection.code === 'BAD_REQUEST') {
        throw new ImastreamError('IMS_ENROL_BAD_REQUEST', out.rejection.message);
      }
      return;
    }
    const { challenge } = out;
    // The credential file is split into the two TPM2B structures the record names.
    const credential = parseCredentialFile(challenge.credential);
    const record: EnrolChallenge = {
      hostId: challenge.hostId,
      requestId: request.requestId,
      challengeId: challenge.challengeId,
      credentialBlob: Buffer.from(credential.idObject),
      encryptedSecret: Buffer.from(credential.encryptedSecret),
      akName: Buffer.from(challenge.akName),
      expiresAt: challenge.expiresAt,
    };
    await send(challenge.hostId, encode('EnrolChallenge', record));
  }

  async function onAnswer(answer: EnrolAnswer): Promise<void> {
    const out = await service.complete({
      hostId: answer.hostId,
      challengeId: answer.challengeId,
      secret: new Uint8Array(answer.secret),
    });
    // UNKNOWN_CHALLENGE means another instance issued it (or it is gone): not ours to refuse.
    if (!out.ok && out.rejection.code !== 'UNKNOWN_CHALLENGE') {
      await refuse(out.rejection, { requestId: null, challengeId: answer.challengeId });
    }
  }
}
