import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import fc from 'fast-check';

import { hasCode, isImastreamError } from '../../../lib/errors.ts';
import {
  decode,
  decodeAs,
  encode,
  MAX_MESSAGE_BYTES,
  MAX_TEMPLATE_DATA_BYTES,
  schemaCatalogue,
} from '../../../services/shared/codec.ts';
import type { RecordName } from '../../../services/shared/records.ts';
import { SAMPLES } from './samples.ts';

function frame(id: number, body: Buffer): Buffer {
  const header = Buffer.alloc(5);
  header.writeUInt32BE(id, 1);
  return Buffer.concat([header, body]);
}

/** Avro zig-zag varint of a non-negative safe integer, written by hand to build hostile bodies. */
function varint(n: number): Buffer {
  const bytes: number[] = [];
  let z = n * 2;
  while (z >= 0x80) {
    bytes.push((z % 0x80) | 0x80);
    z = Math.floor(z / 0x80);
  }
  bytes.push(z);
  return Buffer.from(bytes);
}

const avroString = (s: string) => Buffer.concat([varint(Buffer.byteLength(s)), Buffer.from(s)]);

/** Decoded records are avsc Record instances; compare their JSON shape. */
const plain = (value: unknown): unknown => JSON.parse(JSON.stringify(value));

function idOf(name: RecordName): number {
  return schemaCatalogue().current(name).id;
}

function assertCode(fn: () => unknown, code: Parameters<typeof hasCode>[1]): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(hasCode(err, code), `expected ${code}, got ${String(err)}`);
    return true;
  });
}

describe('codec round trips', () => {
  for (const name of Object.keys(SAMPLES) as RecordName[]) {
    it(`encodes and decodes ${name}`, () => {
      const message = encode(name, SAMPLES[name]);

      assert.equal(message[0], 0);
      assert.equal(message.readUInt32BE(1), idOf(name));
      const decoded = decode(message);
      assert.equal(decoded.schema, name);
      assert.equal(decoded.id, idOf(name));
      assert.deepEqual(plain(decoded.value), plain(SAMPLES[name]));
    });
  }

  it('keeps the largest seq avsc allows (2^53 - 2) exact', () => {
    const value = { ...SAMPLES.LogRecord, seq: 2 ** 53 - 2 };

    assert.equal(decodeAs('LogRecord', encode('LogRecord', value)).seq, 2 ** 53 - 2);
  });

  it('reads a LogRecord v1 body as the current LogRecord with defaults', () => {
    const v1 = schemaCatalogue().entries.find((e) => e.name === 'LogRecord' && e.version === 1)!;
    const { byteOrder: _b, producedAt: _p, ...old } = SAMPLES.LogRecord;

    const decoded = decode(frame(v1.id, v1.type.toBuffer(old)));
    assert.equal(decoded.schema, 'LogRecord');
    assert.equal(decoded.id, v1.id);
    assert.deepEqual(plain(decoded.value), plain({ ...old, byteOrder: 'LE', producedAt: 0 }));
  });

  it('returns byte fields that do not alias the message', () => {
    const message = encode('Challenge', SAMPLES.Challenge);
    const value = decodeAs('Challenge', message);

    message.fill(0xee, 5);
    assert.deepEqual(value.nonce, SAMPLES.Challenge.nonce);
  });

  it('accepts a Uint8Array view into a larger buffer', () => {
    const message = encode('QuoteTaken', SAMPLES.QuoteTaken);
    const big = new Uint8Array(message.length + 10);
    big.set(message, 7);

    assert.deepEqual(plain(decodeAs('QuoteTaken', big.subarray(7, 7 + message.length))), SAMPLES.QuoteTaken);
  });
});

describe('codec encode errors', () => {
  it('rejects a seq beyond 2^53 - 2 instead of rounding it', () => {
    assertCode(() => encode('LogRecord', { ...SAMPLES.LogRecord, seq: 2 ** 53 - 1 }), 'IMS_WIRE_ENCODE');
    assertCode(() => encode('LogRecord', { ...SAMPLES.LogRecord, seq: 2 ** 60 }), 'IMS_WIRE_ENCODE');
  });

  it('names the invalid fields', () => {
    const bad = { ...SAMPLES.Quote, attest: 'not bytes', nonceEpoch: 1.5 } as never;

    assert.throws(
      () => encode('Quote', bad),
      (err: unknown) =>
        hasCode(err, 'IMS_WIRE_ENCODE') && /attest/.test(err.message) && /nonceEpoch/.test(err.message),
    );
  });

  it('refuses templateData over 64 KiB', () => {
    const value = { ...SAMPLES.LogRecord, templateData: Buffer.alloc(MAX_TEMPLATE_DATA_BYTES + 1) };

    assertCode(() => encode('LogRecord', value), 'IMS_WIRE_OVERSIZED');
  });

  it('refuses a record that frames to more than 1 MiB', () => {
    const value = { ...SAMPLES.Quote, attest: Buffer.alloc(MAX_MESSAGE_BYTES) };

    assertCode(() => encode('Quote', value), 'IMS_WIRE_OVERSIZED');
  });
});

describe('codec bad frames', () => {
  it('checks the size before the frame', () => {
    const huge = Buffer.alloc(MAX_MESSAGE_BYTES + 1, 0xff);

    assertCode(() => decode(huge), 'IMS_WIRE_OVERSIZED');
  });

  it('accepts exactly 1 MiB as far as size goes', () => {
    const edge = Buffer.alloc(MAX_MESSAGE_BYTES);
    edge.writeUInt32BE(idOf('Challenge'), 1);

    assertCode(() => decode(edge), 'IMS_WIRE_DECODE');
  });

  for (const [label, bytes] of [
    ['empty', Buffer.alloc(0)],
    ['shorter than the header', Buffer.from([0, 0, 0, 1])],
    ['wrong magic byte', Buffer.from([1, 0, 0, 0, 1, 0])],
  ] as const) {
    it(`rejects a frame that is ${label}`, () => assertCode(() => decode(bytes), 'IMS_WIRE_BAD_FRAME'));
  }

  it('rejects a missing value (a tombstone) as a bad frame', () => {
    assertCode(() => decode(null), 'IMS_WIRE_BAD_FRAME');
    assertCode(() => decodeAs('Quote', undefined), 'IMS_WIRE_BAD_FRAME');
  });

  it('rejects an unknown schema id', () => {
    assertCode(() => decode(frame(0xfffffff0, Buffer.from([0]))), 'IMS_WIRE_UNKNOWN_SCHEMA');
    assertCode(() => decode(frame(0, Buffer.alloc(0))), 'IMS_WIRE_UNKNOWN_SCHEMA');
  });

  it('rejects a truncated body', () => {
    const message = encode('Quote', SAMPLES.Quote);

    assertCode(() => decode(message.subarray(0, message.length - 1)), 'IMS_WIRE_DECODE');
    assertCode(() => decode(message.subarray(0, 5)), 'IMS_WIRE_DECODE');
  });

  it('rejects trailing bytes after the value', () => {
    const message = encode('QuoteTaken', SAMPLES.QuoteTaken);

    assertCode(() => decode(Buffer.concat([message, Buffer.from([0])])), 'IMS_WIRE_DECODE');
  });

  it('rejects an enum index out of range', () => {
    // BootEvent: hostId, bootId, hostBootId, resetCount, firstSeq, kind (index 7 of 2), at.
    const body = Buffer.concat([
      avroString('h'),
      avroString('b'),
      avroString('x'),
      varint(0),
      varint(0),
      varint(7),
    ]);

    assertCode(() => decode(frame(idOf('BootEvent'), Buffer.concat([body, varint(1)]))), 'IMS_WIRE_DECODE');
  });

  it('rejects a union branch index out of range', () => {
    // QuoteTaken is plain; SnapshotEvent.quoteId is ["null","string"]: branch 5 does not exist.
    const body = Buffer.concat([
      avroString('h'),
      avroString('b'),
      varint(1),
      varint(0),
      varint(5),
      varint(1),
    ]);

    assertCode(() => decode(frame(idOf('SnapshotEvent'), body)), 'IMS_WIRE_DECODE');
  });

  it('rejects a long beyond 2^53 in the body', () => {
    // QuoteTaken.seq = 2^60 (exact in a double, unsafe as an integer).
    const body = Buffer.concat([
      avroString('h'),
      avroString('b'),
      varint(2 ** 60),
      avroString('q'),
      varint(1),
    ]);

    assertCode(() => decode(frame(idOf('QuoteTaken'), body)), 'IMS_WIRE_DECODE');
  });

  it('rejects an array block claiming 2^40 items without looping over them', () => {
    const body = Buffer.concat([
      avroString('h'),
      avroString('b'),
      varint(1),
      varint(2 ** 40),
      avroString('x'),
    ]);

    assertCode(() => decode(frame(idOf('Checkpoint'), body)), 'IMS_WIRE_DECODE');
  });

  it('rejects a bytes length beyond the body', () => {
    // Challenge: hostId, requestId, nonce (claims 1000 bytes, has 3), at.
    const body = Buffer.concat([avroString('h'), avroString('r'), varint(1000), Buffer.from([1, 2, 3])]);

    assertCode(() => decode(frame(idOf('Challenge'), body)), 'IMS_WIRE_DECODE');
  });

  it('rejects decoded templateData over 64 KiB even when the frame is small enough', () => {
    const v1 = schemaCatalogue().entries.find((e) => e.name === 'LogRecord' && e.version === 1)!;
    const { byteOrder: _b, producedAt: _p, ...old } = SAMPLES.LogRecord;
    const body = v1.type.toBuffer({ ...old, templateData: Buffer.alloc(MAX_TEMPLATE_DATA_BYTES + 1) });

    assertCode(() => decode(frame(v1.id, body)), 'IMS_WIRE_OVERSIZED');
  });

  it('decodeAs refuses another record', () => {
    assertCode(() => decodeAs('Quote', encode('QuoteTaken', SAMPLES.QuoteTaken)), 'IMS_WIRE_UNKNOWN_SCHEMA');
  });

  it('throws only ImastreamErrors on arbitrary bytes after a valid header', () => {
    const ids = schemaCatalogue().entries.map((e) => e.id);
    fc.assert(
      fc.property(fc.constantFrom(...ids), fc.uint8Array({ maxLength: 200 }), (id, body) => {
        try {
          decode(frame(id, Buffer.from(body)));
        } catch (err) {
          assert.ok(isImastreamError(err), String(err));
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('throws only ImastreamErrors on mutated valid messages', () => {
    const messages = (Object.keys(SAMPLES) as RecordName[]).map((n) => encode(n, SAMPLES[n] as never));
    fc.assert(
      fc.property(fc.constantFrom(...messages), fc.nat(), fc.integer({ min: 0, max: 255 }), (m, at, byte) => {
        const mutated = Buffer.from(m);
        mutated[5 + (at % (mutated.length - 5))] = byte;
        try {
          decode(mutated);
        } catch (err) {
          assert.ok(isImastreamError(err), String(err));
        }
      }),
      { numRuns: 2000 },
    );
  });
});
