import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { hasCode } from '../../../lib/errors.ts';
import { makeAlert } from '../../../services/alerts/make.ts';
import { byTopic, effectMessages } from '../../../services/replayer/effects.ts';
import { decodeMeasurement, groupByHost } from '../../../services/replayer/worker.ts';
import { decode, encode } from '../../../services/shared/codec.ts';
import type { InMessage } from '../../../services/shared/kafka.ts';
import { TOPIC } from '../../../services/shared/topics.ts';
import { logRecord, quoteTaken } from './fixtures.ts';

const message = (value: Buffer | null): InMessage => ({
  topic: TOPIC.measurements,
  partition: 0,
  offset: '7',
  key: null,
  value,
  headers: {},
  timestamp: '0',
});

describe('decodeMeasurement', () => {
  it('decodes the records of ima.measurements', () => {
    const e = decodeMeasurement(message(encode('LogRecord', logRecord('h', 'b:1', 3))));

    assert.equal(e.type, 'LogRecord');
    assert.equal(e.value.seq, 3);
  });

  it('refuses, as input errors, what cannot be replayed', () => {
    const other = encode('Alert', makeAlert({ kind: 'SEQUENCE_GAP', hostId: 'h', message: 'm', at: 0 }));
    const badHost = encode('LogRecord', logRecord('h{x}', 'b:1', 0));
    const cases: [Buffer | null, string][] = [
      [null, 'IMS_WIRE_BAD_FRAME'],
      [Buffer.from([1, 2, 3]), 'IMS_WIRE_BAD_FRAME'],
      [other, 'IMS_WIRE_UNKNOWN_SCHEMA'],
      [badHost, 'IMS_REDIS_BAD_KEY'],
    ];
    for (const [value, code] of cases) {
      assert.throws(
        () => decodeMeasurement(message(value)),
        (err) => hasCode(err, code as never) && !(err as { canRetry: boolean }).canRetry,
      );
    }
  });
});

describe('groupByHost', () => {
  it('keeps each host in partition order', () => {
    const events = [
      { type: 'LogRecord' as const, value: logRecord('a', 'b', 0) },
      { type: 'LogRecord' as const, value: logRecord('b', 'b', 0) },
      { type: 'QuoteTaken' as const, value: quoteTaken('a', 'b', 1) },
    ];
    const grouped = groupByHost(events);

    assert.deepEqual([...grouped.keys()], ['a', 'b']);
    assert.deepEqual(
      grouped.get('a')?.map((e) => e.type),
      ['LogRecord', 'QuoteTaken'],
    );
  });
});

describe('effectMessages', () => {
  it('encodes alerts and checkpoints for their topics, keyed by host', () => {
    const alert = makeAlert({ kind: 'SEQUENCE_GAP', hostId: 'h', message: 'm', at: 0 });
    const checkpoint = { hostId: 'h', bootId: 'b', seq: 1, pcrs: [], schemes: ['perbank'], at: 0 };
    const messages = effectMessages([
      { kind: 'alert', alert },
      { kind: 'checkpoint', checkpoint, cut: null },
    ]);
    const topics = byTopic(messages);

    assert.deepEqual([...topics.keys()], [TOPIC.alerts, TOPIC.checkpoints]);
    const sent = topics.get(TOPIC.alerts)![0]!;
    assert.equal(sent.key, 'h');
    assert.equal(decode(sent.value).schema, 'Alert');
  });
});

describe('effectMessages for a resend', () => {
  it('sends a ResendRequest to ima.challenges, keyed by host, as the agent reads it', () => {
    const request = {
      hostId: 'h',
      bootId: 'b:1',
      fromSeq: 5,
      toSeq: 7,
      requestId: 'r-1',
      reason: 'SEQUENCE_GAP',
      at: 9,
    };
    const topics = byTopic(effectMessages([{ kind: 'resend', request }]));

    assert.deepEqual([...topics.keys()], [TOPIC.challenges]);
    const sent = topics.get(TOPIC.challenges)![0]!;
    assert.equal(sent.key, 'h');
    const decoded = decode(sent.value);
    assert.equal(decoded.schema, 'ResendRequest');
    assert.deepEqual({ ...decoded.value }, request);
  });
});
