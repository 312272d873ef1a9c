import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { it } from 'node:test';

import { createLogger, hostLogger } from '../../../services/shared/logger.ts';

function capture() {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line));
      done();
    },
  });
  return { lines, destination };
}

it('writes JSON lines with service, level label, and a host-bound child', () => {
  const { lines, destination } = capture();
  const logger = createLogger({ service: 'replayer', level: 'info', destination });

  hostLogger(logger, 'host-9', 'b:1').warn({ seq: 5 }, 'pcr mismatch');
  logger.debug('not shown at info');

  assert.equal(lines.length, 1);
  assert.equal(lines[0]?.service, 'replayer');
  assert.equal(lines[0]?.level, 'warn');
  assert.equal(lines[0]?.hostId, 'host-9');
  assert.equal(lines[0]?.bootId, 'b:1');
  assert.equal(lines[0]?.msg, 'pcr mismatch');
});

it('redacts nonces and key material at top level and one object down', () => {
  const { lines, destination } = capture();
  const logger = createLogger({ service: 't', destination });

  logger.info({ nonce: 'abcd', quote: { nonce: 'ef01', seq: 3 }, privateKey: 'k', hostId: 'h' }, 'quote');

  assert.equal(lines[0]?.nonce, '[redacted]');
  assert.deepEqual(lines[0]?.quote, { nonce: '[redacted]', seq: 3 });
  assert.equal(lines[0]?.privateKey, '[redacted]');
  assert.equal(lines[0]?.hostId, 'h');
});

it('serialises errors with their imastream code and details', async () => {
  const { ImastreamError } = await import('../../../lib/errors.ts');
  const { lines, destination } = capture();
  const logger = createLogger({ service: 't', destination });

  logger.error({ err: new ImastreamError('IMS_WIRE_DECODE', 'bad', { details: { offset: 7 } }) }, 'failed');

  const err = lines[0]?.err as Record<string, unknown>;
  assert.equal(err.code, 'IMS_WIRE_DECODE');
  assert.deepEqual(err.details, { offset: 7 });
  assert.equal(err.type, 'ImastreamError');
});
