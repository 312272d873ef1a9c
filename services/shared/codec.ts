/**
 * Avro values in Confluent wire framing: byte 0x00, the schema id as u32 big-endian, then the Avro
 * binary body. Schema ids come from schemas/catalogue.json; no registry is consulted.
 *
 * Trust: `decode` takes hostile bytes. It checks the size before anything else, then the frame,
 * then decodes with a bounded reader (see avro-read.ts), and always throws an ImastreamError
 * (IMS_WIRE_*) on bad input, never anything else. A decoded value is well-formed, nothing more:
 * its claims (hostId, seq, PCR values) are still unverified.
 *
 * Evolution: a body written with an older schema of the same record is resolved to the current
 * (highest-version) schema, so consumers only ever see current record shapes.
 *
 * Longs decode to JS numbers; avsc rejects any long beyond ±(2^53 − 2) on read and on write, so a
 * seq is exact or the message is refused (IMS_WIRE_DECODE / IMS_WIRE_ENCODE).
 *
 * Decoded values are avsc Record instances (plain fields plus prototype helpers); byte fields are
 * fresh Buffers that do not alias the message.
 */
import type { Type } from 'avsc';

import { ImastreamError } from '../../lib/errors.ts';
import { readExactly } from './avro-read.ts';
import type { RecordName, RecordTypes } from './records.ts';
import { loadCatalogue, type SchemaCatalogue } from './schemas.ts';

/** Largest message value accepted or produced (docs/contract.md). */
export const MAX_MESSAGE_BYTES = 1024 * 1024;

/**
 * Largest SealedShard message (ima.shards only, docs/shards.md): a shard carries whole records
 * (about 160 KiB per 1,000), so it gets its own, larger limit. Consumers of other topics keep the
 * 1 MiB bound; only the shard archiver decodes with this one.
 */
export const MAX_SHARD_MESSAGE_BYTES = 8 * 1024 * 1024;

/** Records allowed past {@link MAX_MESSAGE_BYTES} when produced. */
const RECORD_LIMITS: Partial<Record<RecordName, number>> = { SealedShard: MAX_SHARD_MESSAGE_BYTES };

/** Largest LogRecord.templateData accepted or produced (docs/contract.md). */
export const MAX_TEMPLATE_DATA_BYTES = 64 * 1024;

const MAGIC = 0x00;
const HEADER_BYTES = 5;

/** A decoded message: the record name (discriminant), the writer's schema id and the value. */
export type Decoded = { [N in RecordName]: { schema: N; id: number; value: RecordTypes[N] } }[RecordName];

let catalogue: SchemaCatalogue | undefined;

/** The catalogue the codec uses, loaded from schemas/ on first use. */
export function schemaCatalogue(): SchemaCatalogue {
  catalogue ??= loadCatalogue();
  return catalogue;
}

function checkTemplateData(
  name: string,
  value: unknown,
  code: 'IMS_WIRE_ENCODE' | 'IMS_WIRE_OVERSIZED',
): void {
  if (name !== 'LogRecord') return;
  const data = (value as { templateData?: unknown }).templateData;
  if (Buffer.isBuffer(data) && data.length > MAX_TEMPLATE_DATA_BYTES) {
    throw new ImastreamError(code, `templateData is ${data.length} bytes, limit ${MAX_TEMPLATE_DATA_BYTES}`, {
      details: { size: data.length, limit: MAX_TEMPLATE_DATA_BYTES },
    });
  }
}

function invalidPaths(type: Type, value: unknown): string[] {
  const paths: string[] = [];
  type.isValid(value, { errorHook: (path) => paths.push(path.join('.') || '(root)') });

  return paths;
}

/**
 * Encodes `value` with the current schema of `name`. Throws IMS_WIRE_ENCODE when the value does
 * not match the schema (the message lists the offending fields) and IMS_WIRE_OVERSIZED when the
 * framed message would exceed {@link MAX_MESSAGE_BYTES}.
 */
export function encode<N extends RecordName>(name: N, value: RecordTypes[N]): Buffer {
  const entry = schemaCatalogue().current(name);
  const bad = invalidPaths(entry.type, value);
  if (bad.length > 0) {
    throw new ImastreamError('IMS_WIRE_ENCODE', `${name}: invalid field(s) ${bad.join(', ')}`, {
      details: { schema: name, fields: bad },
    });
  }
  checkTemplateData(name, value, 'IMS_WIRE_OVERSIZED');

  const body = entry.type.toBuffer(value);
  const limit = RECORD_LIMITS[name] ?? MAX_MESSAGE_BYTES;
  if (HEADER_BYTES + body.length > limit) {
    throw new ImastreamError('IMS_WIRE_OVERSIZED', `${name} encodes to ${HEADER_BYTES + body.length} bytes`, {
      details: { schema: name, size: HEADER_BYTES + body.length, limit },
    });
  }

  const frame = Buffer.allocUnsafe(HEADER_BYTES + body.length);
  frame.writeUInt8(MAGIC, 0);
  frame.writeUInt32BE(entry.id, 1);
  body.copy(frame, HEADER_BYTES);

  return frame;
}

/**
 * Decodes one framed message (a Kafka value; a null value is IMS_WIRE_BAD_FRAME, so handlers can
 * pass `m.value` as it is). Order of checks: size (IMS_WIRE_OVERSIZED), frame header
 * (IMS_WIRE_BAD_FRAME), schema id (IMS_WIRE_UNKNOWN_SCHEMA), Avro body (IMS_WIRE_DECODE; includes
 * truncation, trailing bytes, bad enum/union indexes and unsafe longs). `maxBytes` raises the size
 * bound for a topic that allows larger messages (ima.shards: {@link MAX_SHARD_MESSAGE_BYTES}).
 */
export function decode(
  message: Uint8Array | null | undefined,
  { maxBytes = MAX_MESSAGE_BYTES }: { maxBytes?: number } = {},
): Decoded {
  if (!message) {
    throw new ImastreamError('IMS_WIRE_BAD_FRAME', 'message has no value (a tombstone?)');
  }
  if (message.length > maxBytes) {
    throw new ImastreamError('IMS_WIRE_OVERSIZED', `message is ${message.length} bytes`, {
      details: { size: message.length, limit: maxBytes },
    });
  }
  if (message.length < HEADER_BYTES || message[0] !== MAGIC) {
    throw new ImastreamError('IMS_WIRE_BAD_FRAME', 'expected magic byte 0 and a 4-byte schema id', {
      details: { size: message.length, magic: message[0] ?? null },
    });
  }

  const buf = Buffer.from(message.buffer, message.byteOffset, message.length);
  const id = buf.readUInt32BE(1);
  const entry = schemaCatalogue().byId(id);
  if (!entry) {
    throw new ImastreamError('IMS_WIRE_UNKNOWN_SCHEMA', `schema id ${id} is not in the catalogue`, {
      details: { id },
    });
  }

  const value = decodeBody(entry.name, id, buf.subarray(HEADER_BYTES));
  checkTemplateData(entry.name, value, 'IMS_WIRE_OVERSIZED');

  return { schema: entry.name, id, value } as Decoded;
}

function decodeBody(name: string, id: number, body: Buffer): unknown {
  const cat = schemaCatalogue();
  const entry = cat.byId(id)!;
  try {
    return readExactly(cat.resolverFor(entry) ?? entry.type, body);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new ImastreamError('IMS_WIRE_DECODE', `${name} (schema id ${id}): ${reason}`, {
      details: { schema: name, id },
      cause: err,
    });
  }
}

/**
 * Decodes a message that must hold record `name` (any version of it). Another record throws
 * IMS_WIRE_UNKNOWN_SCHEMA: on this topic, that schema is unknown.
 */
export function decodeAs<N extends RecordName>(
  name: N,
  message: Uint8Array | null | undefined,
): RecordTypes[N] {
  const decoded = decode(message);
  if (decoded.schema !== name) {
    throw new ImastreamError('IMS_WIRE_UNKNOWN_SCHEMA', `expected ${name}, got ${decoded.schema}`, {
      details: { expected: name, got: decoded.schema, id: decoded.id },
    });
  }

  return decoded.value as RecordTypes[N];
}
