import assert from 'node:assert/strict';
import { it } from 'node:test';

import { ImastreamError } from '../../../lib/errors.ts';
import { decodeAs, encode, MAX_MESSAGE_BYTES } from '../../../services/shared/codec.ts';
import { deadLetterFor } from '../../../services/shared/dead-letter.ts';

const failed = {
  topic: 'ima.measurements',
  partition: 2,
  offset: '12345678901234567',
  key: Buffer.from('host-7'),
  value: Buffer.from([1, 2, 3]),
};

it('keeps the origin, the raw bytes and the error code', () => {
  const dl = deadLetterFor(failed, new ImastreamError('IMS_WIRE_BAD_FRAME', 'no magic'), 99);

  assert.deepEqual(dl, { ...failed, reason: 'IMS_WIRE_BAD_FRAME', message: 'no magic', at: 99 });
  assert.equal(decodeAs('DeadLetter', encode('DeadLetter', dl)).offset, '12345678901234567');
});

it('classifies a foreign error as UNCLASSIFIED', () => {
  assert.equal(deadLetterFor(failed, new TypeError('boom')).reason, 'UNCLASSIFIED');
  assert.equal(deadLetterFor(failed, 'a string').message, 'a string');
});

it('drops a value too big to fit and still encodes within the limit', () => {
  const huge = { ...failed, value: Buffer.alloc(MAX_MESSAGE_BYTES + 10), key: Buffer.alloc(100_000) };
  const dl = deadLetterFor(huge, new ImastreamError('IMS_WIRE_OVERSIZED'));

  assert.equal(dl.value, null);
  assert.equal(dl.key, null);
  assert.match(dl.message, /not kept/);
  assert.ok(encode('DeadLetter', dl).length <= MAX_MESSAGE_BYTES);
});

it('clips a huge error message', () => {
  const dl = deadLetterFor(failed, new Error('x'.repeat(1_000_000)));

  assert.ok(dl.message.length < 3000);
});
