/**
 * DeadLetter records: a message a consumer could not use, kept on ima.dead-letter with the reason
 * so it can be inspected or replayed by hand. Building one never fails: whatever the input, the
 * result encodes within the 1 MiB message limit.
 */
import { isImastreamError } from '../../lib/errors.ts';
import { MAX_MESSAGE_BYTES } from './codec.ts';
import type { DeadLetter } from './records.ts';

/** Where the failed message came from, with its raw key and value bytes. */
export interface FailedMessage {
  topic: string;
  partition: number;
  /** Kafka offset as the decimal string kafkajs gives. */
  offset: string;
  key: Buffer | null;
  value: Buffer | null;
}

// Room for the topic, reason, message and Avro overhead besides the original value.
const VALUE_ROOM = MAX_MESSAGE_BYTES - 16 * 1024;
const MAX_KEY_BYTES = 4 * 1024;
const MAX_TEXT_CHARS = 2 * 1024;

/** Error code of `error` when it is an ImastreamError, else `UNCLASSIFIED`. */
export function reasonOf(error: unknown): string {
  return isImastreamError(error) ? error.code : 'UNCLASSIFIED';
}

function clip(text: string): string {
  return text.length > MAX_TEXT_CHARS ? `${text.slice(0, MAX_TEXT_CHARS)}…` : text;
}

/**
 * Builds the DeadLetter for `failed`, which could not be processed because of `error`. A value
 * too big to fit (an oversized message is a reason to dead-letter) is dropped, and the message
 * says so; the original stays readable on its topic until retention removes it.
 */
export function deadLetterFor(failed: FailedMessage, error: unknown, at: number = Date.now()): DeadLetter {
  let message = clip(error instanceof Error ? error.message : String(error));
  let value = failed.value;
  if (value && value.length > VALUE_ROOM) {
    message = `${message} (value of ${value.length} bytes not kept)`;
    value = null;
  }
  const key = failed.key && failed.key.length <= MAX_KEY_BYTES ? failed.key : null;

  return {
    topic: clip(failed.topic),
    partition: failed.partition,
    offset: failed.offset,
    key,
    value,
    reason: reasonOf(error),
    message,
    at,
  };
}
