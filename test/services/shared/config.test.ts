import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { hasCode } from '../../../lib/errors.ts';
import {
  COMMON_SETTINGS,
  loadConfig,
  parsers,
  publicConfig,
  usage,
} from '../../../services/shared/config.ts';

const SETTINGS = {
  ...COMMON_SETTINGS,
  hostId: { flag: 'host-id', env: 'IMASTREAM_HOST_ID', parse: parsers.string, doc: 'this host' },
  batch: { flag: 'batch', default: '100', parse: parsers.int(1, 1000), doc: 'batch size' },
  once: { flag: 'once', boolean: true, parse: parsers.boolean, doc: 'run once' },
};

describe('loadConfig', () => {
  it('uses the docs/contract.md defaults', () => {
    const config = loadConfig(SETTINGS, ['--host-id', 'h1'], {});

    assert.deepEqual(config, {
      kafkaBrokers: ['127.0.0.1:19092'],
      redisUrl: 'redis://127.0.0.1:6379',
      logLevel: 'info',
      hostId: 'h1',
      batch: 100,
      once: false,
    });
  });

  it('lets a flag override the environment, which overrides the default', () => {
    const env = {
      IMASTREAM_KAFKA_BROKERS: 'k1:9092,k2:9092',
      IMASTREAM_LOG_LEVEL: 'debug',
      IMASTREAM_HOST_ID: 'e',
    };
    const config = loadConfig(SETTINGS, ['--log-level', 'warn', '--once', '--batch=7'], env);

    assert.deepEqual(config.kafkaBrokers, ['k1:9092', 'k2:9092']);
    assert.equal(config.logLevel, 'warn');
    assert.equal(config.hostId, 'e');
    assert.equal(config.batch, 7);
    assert.equal(config.once, true);
  });

  it('lists every problem in one IMS_CONFIG_INVALID', () => {
    const env = { IMASTREAM_KAFKA_BROKERS: 'nohostport', IMASTREAM_REDIS_URL: 'http://x' };

    assert.throws(
      () => loadConfig(SETTINGS, ['--batch', '0', '--log-level', 'loud'], env),
      (err: unknown) => {
        assert.ok(hasCode(err, 'IMS_CONFIG_INVALID'));
        assert.equal((err.details.problems as string[]).length, 5);
        assert.match(
          err.message,
          /--kafka-brokers \(IMASTREAM_KAFKA_BROKERS\): "nohostport" is not host:port/,
        );
        assert.match(err.message, /--redis-url \(IMASTREAM_REDIS_URL\): is not a redis:\/\/ URL/);
        assert.match(err.message, /--log-level .*"loud" is not one of/);
        assert.match(err.message, /--host-id \(IMASTREAM_HOST_ID\): required/);
        assert.match(err.message, /--batch: "0" is not an integer in \[1, 1000\]/);
        assert.doesNotMatch(err.message, /\n/);
        return true;
      },
    );
  });

  it('reports unknown flags', () => {
    assert.throws(
      () => loadConfig(SETTINGS, ['--host-id', 'h', '--bogus'], {}),
      (err: unknown) => hasCode(err, 'IMS_CONFIG_INVALID') && /bogus/.test(err.message),
    );
  });

  it('hides secret settings from the startup view and documents every flag', () => {
    const config = loadConfig(SETTINGS, ['--host-id', 'h', '--redis-url', 'redis://:pw@r:6379'], {});

    assert.equal(publicConfig(SETTINGS, config).redisUrl, '[redacted]');
    assert.equal(publicConfig(SETTINGS, config).hostId, 'h');
    for (const s of Object.values(SETTINGS)) assert.match(usage(SETTINGS), new RegExp(`--${s.flag}`));
  });
});

describe('parsers', () => {
  it('accepts IPv6 and names in broker lists', () => {
    assert.deepEqual(parsers.brokers('[::1]:9092, kafka-0.kafka:9092'), ['[::1]:9092', 'kafka-0.kafka:9092']);
  });

  it('rejects non-integers and out-of-range integers', () => {
    const int = parsers.int(0, 10);
    for (const bad of ['', '1.5', '11', '-1', '1e3', ' 3'])
      assert.throws(() => int(bad), /not an integer/, bad);
    assert.equal(int('10'), 10);
  });
});
