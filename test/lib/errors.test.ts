import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { ERROR_CODES, hasCode, ImastreamError, isImastreamError } from '../../lib/errors.ts';

const docs = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');

test('every error code is documented in docs/errors.md', () => {
  const missing = Object.keys(ERROR_CODES).filter((code) => !docs.includes(`\`${code}\``));
  assert.deepEqual(missing, []);
});

test('docs/errors.md lists no code that lib/errors.ts lacks', () => {
  const documented = [...docs.matchAll(/`(IMS_[A-Z0-9_]+)`/g)].map((m) => m[1]);
  const unknown = documented.filter((code) => code !== undefined && !Object.hasOwn(ERROR_CODES, code));
  assert.deepEqual(unknown, []);
});

test('codes follow IMS_<AREA>_<CONDITION>', () => {
  for (const code of Object.keys(ERROR_CODES)) assert.match(code, /^IMS_[A-Z0-9]+_[A-Z0-9_]+$/);
});

test('errors are branded, carry details and serialise without the stack', () => {
  const err = new ImastreamError('IMS_IMA_TRUNCATED', undefined, { details: { offset: 12 } });
  assert.equal(isImastreamError(err), true);
  assert.equal(hasCode(err, 'IMS_IMA_TRUNCATED'), true);
  assert.equal(hasCode(err, 'IMS_TPM_TRUNCATED'), false);
  assert.equal(err.canRetry, false);
  assert.deepEqual(JSON.parse(JSON.stringify(err)), {
    code: 'IMS_IMA_TRUNCATED',
    message: ERROR_CODES.IMS_IMA_TRUNCATED,
    details: { offset: 12 },
    canRetry: false,
  });
  assert.equal(isImastreamError(new Error('plain')), false);
  assert.equal(isImastreamError({ code: 'IMS_IMA_TRUNCATED' }), false);
});
