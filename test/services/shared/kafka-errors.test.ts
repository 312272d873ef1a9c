import assert from 'node:assert/strict';
import { it } from 'node:test';

import { MaxRetriesPerRequestError, ReplyError } from 'ioredis';
import kafkajs from 'kafkajs';

import { ImastreamError } from '../../../lib/errors.ts';
import { classifyFailure, isMembershipError } from '../../../services/shared/kafka-errors.ts';

// Node's CommonJS export detection misses these names, so take them off the default export.
const { KafkaJSConnectionError, KafkaJSProtocolError } = kafkajs;

it('treats non-retryable imastream errors as input and retryable ones as infrastructure', () => {
  assert.equal(classifyFailure(new ImastreamError('IMS_WIRE_DECODE')), 'input');
  assert.equal(
    classifyFailure(new ImastreamError('IMS_STATE_CONFLICT', 'lost', { canRetry: true })),
    'infrastructure',
  );
});

it('recognises Redis and Kafka outages as infrastructure', () => {
  const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6379'), { code: 'ECONNREFUSED' });

  assert.equal(classifyFailure(refused), 'infrastructure');
  assert.equal(classifyFailure(new MaxRetriesPerRequestError(2)), 'infrastructure');
  assert.equal(classifyFailure(new Error('Connection is closed.')), 'infrastructure');
  assert.equal(
    classifyFailure(new ReplyError('LOADING Redis is loading the dataset in memory')),
    'infrastructure',
  );
  assert.equal(classifyFailure(new KafkaJSConnectionError('down')), 'infrastructure');
});

it('treats anything else, including a failing script, as a bug', () => {
  assert.equal(classifyFailure(new TypeError('x is undefined')), 'bug');
  assert.equal(classifyFailure(new ReplyError('ERR Error running script')), 'bug');
  assert.equal(classifyFailure('a string'), 'bug');
});

it('passes rebalance errors through to kafkajs', () => {
  // kafkajs builds protocol errors from its error-code table entry; its typings only admit a message.
  const entry = { type: 'REBALANCE_IN_PROGRESS', code: 27, retriable: false, message: 'rebalancing' };
  const rebalance = new KafkaJSProtocolError(entry as unknown as Error);

  assert.ok(isMembershipError(rebalance));
  assert.ok(!isMembershipError(new Error('other')));
  assert.ok(!isMembershipError(null));
});
