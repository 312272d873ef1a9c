import { randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Consumer, Kafka, logLevel } from 'kafkajs';
import type { Logger } from 'pino';
import { bytesEqual, toHex } from '../../lib/bytes/hex.ts';
import { ImastreamError } from '../../lib/errors.ts';
import { credentialFile } from '../../lib/tpm/credential.ts';
import { decode, encode } from '../shared/codec.ts';
import type { EnrolChallenge, Enrollment, EnrolRejection } from '../shared/records.ts';
import { TOPIC } from '../shared/topics.ts';
import { type AkAlg, activateCredential, ensureAk, readEk, type TpmTools } from './tpm.ts';

/**
 * The agent's half of AK enrolment (docs/enrolment.md):
 *
 *   1. send EnrolRequest { EK public, EK certificate from NV (if any), AK public }
 *   2. wait for the EnrolChallenge naming our requestId (or an EnrolRejection)
 *   3. tpm2_activatecredential with the EK's policy session; send EnrolAnswer with the secret
 *   4. wait until ima.enrollments shows this host's AK active (or an EnrolRejection)
 *
 * The agent trusts nothing it reads here: a forged challenge can only make the TPM refuse, and a
 * forged Enrollment seen here only ends the agent's wait; what the fleet trusts is decided by the
 * enroller alone. Every wait is bounded and fails with its own code.
 *
 * Enrolment runs on first start and whenever the AK is not the one this agent last saw enrolled
 * (a marker in the state directory); a marker is not trust, only a way to skip a round trip.
 */
export interface EnrolOptions {
  brokers: string[];
  hostId: string;
  tpm: TpmTools;
  akHandle: string;
  akAlg: AkAlg;
  /** Directory for the enrolment marker (the agent's state directory). */
  stateDir: string;
  log: Logger;
  /** Enrol even when the marker says this AK is enrolled. */
  force?: boolean;
  /** Wait for the challenge; default 60 s. */
  challengeTimeoutMs?: number;
  /** Wait for the Enrollment after answering; default 60 s. */
  acceptTimeoutMs?: number;
  topics?: { requests?: string; challenges?: string; enrollments?: string };
}

export interface EnrolResult {
  akName: Uint8Array;
  akPublic: Uint8Array;
  /** `enrolled`: this call enrolled the AK; `known`: the marker says it already was. */
  outcome: 'enrolled' | 'known';
  /** Enrollment.policy as the enroller wrote it (`ek-cert`, `ek-allow-list`, `tofu`), if enrolled now. */
  policy: string | null;
}

const MARKER = 'enrolled-ak.json';
const DEFAULT_TIMEOUT_MS = 60_000;

export async function enrolAk(options: EnrolOptions): Promise<EnrolResult> {
  const { hostId, tpm, log } = options;
  const ak = await ensureAk(tpm, options.akHandle, options.akAlg);
  if (ak.created) log.info({ akHandle: options.akHandle, akAlg: options.akAlg }, 'AK created');
  const akHex = toHex(ak.akName);
  if (!options.force && readMarker(options.stateDir) === akHex) {
    log.info({ akName: akHex }, 'AK already enrolled');
    return { akName: ak.akName, akPublic: ak.akPublic, outcome: 'known', policy: null };
  }
  const ek = await readEk(tpm);
  log.info({ akName: akHex, ekCertificate: ek.ekCertificate !== null }, 'enrolling AK');

  const topics = {
    requests: options.topics?.requests ?? TOPIC.enrolRequests,
    challenges: options.topics?.challenges ?? TOPIC.enrolChallenges,
    enrollments: options.topics?.enrollments ?? TOPIC.enrollments,
  };
  const kafka = new Kafka({
    clientId: `imastream-agent-enrol-${hostId}`,
    brokers: options.brokers,
    logLevel: logLevel.NOTHING,
  });
  const inbox = new Inbox(hostId);
  const producer = kafka.producer({
    idempotent: true,
    maxInFlightRequests: 1,
    allowAutoTopicCreation: false,
  });
  let consumer: Consumer | undefined;
  try {
    await producer.connect();
    consumer = await listenFromNow(kafka, [topics.challenges, topics.enrollments], inbox);
    const send = async (topic: string, value: Buffer) => {
      await producer.send({ topic, acks: -1, messages: [{ key: hostId, value }] });
    };

    const requestId = randomUUID();
    await send(
      topics.requests,
      encode('EnrolRequest', {
        hostId,
        requestId,
        ekPublic: Buffer.from(ek.ekPublic),
        ekCertificate: ek.ekCertificate === null ? null : Buffer.from(ek.ekCertificate),
        akPublic: Buffer.from(ak.akPublic),
        at: Date.now(),
      }),
    );
    const challenge = await waitForChallenge(
      inbox,
      requestId,
      options.challengeTimeoutMs ?? DEFAULT_TIMEOUT_MS,
    );
    // A challenge for another Name cannot be activated with our AK; say so rather than try.
    if (!bytesEqual(challenge.akName, ak.akName)) {
      throw new ImastreamError('IMS_ENROL_ACTIVATION_FAILED', 'the challenge names another AK');
    }
    const file = credentialFile({
      idObject: challenge.credentialBlob,
      encryptedSecret: challenge.encryptedSecret,
    });
    const secret = await activateCredential(tpm, ek.ekRef, options.akHandle, file);
    await send(
      topics.requests,
      encode('EnrolAnswer', {
        hostId,
        challengeId: challenge.challengeId,
        secret: Buffer.from(secret),
        at: Date.now(),
      }),
    );
    const enrollment = await inbox.wait(options.acceptTimeoutMs ?? DEFAULT_TIMEOUT_MS, (m) =>
      m.kind === 'enrollment' && m.value.status === 'active' && bytesEqual(m.value.akName, ak.akName)
        ? m.value
        : m.kind === 'rejection' && m.value.challengeId === challenge.challengeId
          ? rejected(m.value)
          : undefined,
    );
    if (enrollment === undefined) {
      throw new ImastreamError(
        'IMS_ENROL_NOT_ACCEPTED',
        `no active enrolment of ${hostId}'s AK appeared in time`,
      );
    }
    writeMarker(options.stateDir, akHex);
    log.info({ akName: akHex, policy: enrollment.policy }, 'AK enrolled');

    return { akName: ak.akName, akPublic: ak.akPublic, outcome: 'enrolled', policy: enrollment.policy };
  } finally {
    await consumer?.disconnect().catch(() => undefined);
    await producer.disconnect().catch(() => undefined);
  }
}

/** After a rejection, how long a challenge from another enroller instance may still come. */
const REJECTION_GRACE_MS = 5_000;

/**
 * The challenge for `requestId`. A rejection ends the wait only after a short grace: while a
 * consumer group rebalances, or when test pipelines share the topics, more than one enroller may
 * answer the same request, and one challenge is all it takes.
 */
async function waitForChallenge(inbox: Inbox, requestId: string, timeoutMs: number): Promise<EnrolChallenge> {
  let deadline = Date.now() + timeoutMs;
  let refusal: EnrolRejection | undefined;
  for (;;) {
    const heard = await inbox.wait(deadline - Date.now(), (m) =>
      (m.kind === 'challenge' || m.kind === 'rejection') && m.value.requestId === requestId ? m : undefined,
    );
    if (heard === undefined) break;
    if (heard.kind === 'challenge') return heard.value;
    if (heard.kind === 'rejection' && refusal === undefined) {
      refusal = heard.value;
      deadline = Math.min(deadline, Date.now() + REJECTION_GRACE_MS);
    }
  }
  if (refusal !== undefined) rejected(refusal);
  throw new ImastreamError('IMS_ENROL_NO_CHALLENGE', `no enrolment challenge for ${requestId} in time`);
}

function rejected(r: EnrolRejection): never {
  throw new ImastreamError('IMS_ENROL_REJECTED', `enrolment refused: ${r.code}: ${r.message}`, {
    details: { code: r.code },
  });
}

type Heard =
  | { kind: 'challenge'; value: EnrolChallenge }
  | { kind: 'rejection'; value: EnrolRejection }
  | { kind: 'enrollment'; value: Enrollment };

/** Messages for this host, kept until a waiter takes them (the answer may come before the wait). */
class Inbox {
  private readonly heard: Heard[] = [];
  private wake: (() => void) | undefined;

  constructor(private readonly hostId: string) {}

  /** Bounded: at most a few messages per host arrive during one enrolment. */
  push(value: Uint8Array): void {
    let decoded: ReturnType<typeof decode>;
    try {
      decoded = decode(value);
    } catch {
      return; // someone else's problem to dead-letter
    }
    const heard: Heard | undefined =
      decoded.schema === 'EnrolChallenge'
        ? { kind: 'challenge', value: decoded.value }
        : decoded.schema === 'EnrolRejection'
          ? { kind: 'rejection', value: decoded.value }
          : decoded.schema === 'Enrollment'
            ? { kind: 'enrollment', value: decoded.value }
            : undefined;
    if (heard === undefined || heard.value.hostId !== this.hostId) return;
    if (this.heard.length >= 1000) this.heard.shift();
    this.heard.push(heard);
    this.wake?.();
  }

  /** The first message `pick` maps to a value (pick may throw to fail), or undefined at the deadline. */
  async wait<T>(timeoutMs: number, pick: (m: Heard) => T | undefined): Promise<T | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      while (this.heard.length > 0) {
        const picked = pick(this.heard.shift()!);
        if (picked !== undefined) return picked;
      }
      const left = deadline - Date.now();
      if (left <= 0) return undefined;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
    }
  }
}

/**
 * A private consumer of `topics` that starts at their ends as of now: the ends are read first,
 * then every partition is sought there, so nothing produced after this returns is missed and
 * nothing older is acted on (a fresh group would otherwise start at the latest offset only once
 * it has joined, racing the request we are about to send).
 */
async function listenFromNow(kafka: Kafka, topics: string[], inbox: Inbox): Promise<Consumer> {
  const admin = kafka.admin();
  await admin.connect();
  const ends = new Map<string, { partition: number; offset: string }[]>();
  try {
    for (const topic of topics) ends.set(topic, await admin.fetchTopicOffsets(topic));
  } finally {
    await admin.disconnect();
  }
  const consumer = kafka.consumer({
    groupId: `imastream-agent-enrol-${randomUUID()}`,
    sessionTimeout: 10_000,
    heartbeatInterval: 1000,
  });
  await consumer.connect();
  for (const topic of topics) await consumer.subscribe({ topic, fromBeginning: false });
  await consumer.run({
    eachMessage: async ({ message }) => {
      if (message.value !== null) inbox.push(message.value);
    },
  });
  // Applied by kafkajs before the first fetch of each assigned partition.
  for (const [topic, partitions] of ends) {
    for (const p of partitions) consumer.seek({ topic, partition: p.partition, offset: p.offset });
  }

  return consumer;
}

function readMarker(stateDir: string): string | undefined {
  try {
    const parsed = JSON.parse(readFileSync(join(stateDir, MARKER), 'utf8')) as { akName?: unknown };
    return typeof parsed.akName === 'string' ? parsed.akName : undefined;
  } catch {
    return undefined; // absent or unreadable: enrol again, which is always safe
  }
}

function writeMarker(stateDir: string, akName: string): void {
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const path = join(stateDir, MARKER);
  writeFileSync(`${path}.tmp`, JSON.stringify({ akName, at: Date.now() }));
  renameSync(`${path}.tmp`, path);
}
