import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { it } from 'node:test';

import kafkajs from 'kafkajs';

import { kafkaLogLevel, pinoLogCreator } from '../../../services/shared/kafka-log.ts';
import { createLogger, type LogLevel } from '../../../services/shared/logger.ts';

const { logLevel } = kafkajs;

function capture(level: LogLevel) {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line));
      done();
    },
  });
  return { lines, logger: createLogger({ service: 't', level, destination }) };
}

it('maps kafkajs ERROR and WARN as they are, INFO to debug, with the namespace bound', () => {
  const { lines, logger } = capture('debug');
  const log = pinoLogCreator(logger)(logLevel.DEBUG);
  const entry = (level: number, message: string) => ({
    namespace: 'Consumer',
    level,
    label: 'x',
    log: { timestamp: 'now', logger: 'kafkajs', message, groupId: 'g' },
  });

  log(entry(logLevel.ERROR, 'crash'));
  log(entry(logLevel.WARN, 'slow'));
  log(entry(logLevel.INFO, 'joined'));

  assert.deepEqual(
    lines.map((l) => [l.level, l.msg, l.kafkajs, l.groupId, l.timestamp]),
    [
      ['error', 'crash', 'Consumer', 'g', undefined],
      ['warn', 'slow', 'Consumer', 'g', undefined],
      ['debug', 'joined', 'Consumer', 'g', undefined],
    ],
  );
});

it('asks kafkajs only for what the logger prints', () => {
  assert.equal(kafkaLogLevel(capture('debug').logger), logLevel.DEBUG);
  assert.equal(kafkaLogLevel(capture('info').logger), logLevel.WARN);
  assert.equal(kafkaLogLevel(capture('error').logger), logLevel.ERROR);
});
