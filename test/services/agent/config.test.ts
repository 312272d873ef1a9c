import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { hasCode } from '../../../lib/errors.ts';
import { DEFAULT_SHARD_MAX_BYTES, parseAgentConfig } from '../../../services/agent/config.ts';
import { MAX_SHIPPED_SHARD_BYTES } from '../../../services/agent/shard-sealer.ts';

function fixture(t: { after: (fn: () => void) => void }) {
  const dir = mkdtempSync(join(tmpdir(), 'ims-agent-cfg-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const log = join(dir, 'log');
  writeFileSync(log, '');
  const base = ['--host-id', 'h1', '--state-dir', join(dir, 'state'), '--log', log, '--tcti', 'swtpm:port=1'];

  return { dir, log, base };
}

test('defaults: sha1 log, rsa AK at 0x81010002, sha1:10+sha256:10, per-bank, 30 s quotes', (t) => {
  const { base } = fixture(t);
  const config = parseAgentConfig([...base, '--boot-id', 'b'], {});
  assert.ok(config !== 'help');
  assert.equal(config.digestAlg, 'sha1');
  assert.equal(config.akHandle, '0x81010002');
  assert.equal(config.akAlg, 'rsa');
  assert.deepEqual(config.selection, [
    { bank: 'sha1', pcrs: [10] },
    { bank: 'sha256', pcrs: [10] },
  ]);
  assert.equal(config.scheme, 'perbank');
  assert.equal(config.quoteIntervalMs, 30_000);
  assert.deepEqual(config.brokers, ['127.0.0.1:19092']);
  assert.equal(config.measurementsTopic, 'ima.measurements');
});

test('the environment supplies brokers and the TCTI; flags win', (t) => {
  const { dir, log } = fixture(t);
  const argv = ['--host-id', 'h', '--state-dir', join(dir, 's'), '--log', log, '--boot-id', 'b'];
  const env = { IMASTREAM_KAFKA_BROKERS: 'k1:1,k2:2', TPM2TOOLS_TCTI: 'swtpm:port=9' };
  const config = parseAgentConfig(argv, env);
  assert.ok(config !== 'help');
  assert.deepEqual(config.brokers, ['k1:1', 'k2:2']);
  assert.equal(config.tcti, 'swtpm:port=9');
  const flagged = parseAgentConfig([...argv, '--tcti', 'device:/dev/tpmrm0', '--brokers', 'x:1'], env);
  assert.ok(flagged !== 'help');
  assert.equal(flagged.tcti, 'device:/dev/tpmrm0');
  assert.deepEqual(flagged.brokers, ['x:1']);
});

test('every problem is reported at once, as IMS_CONFIG_INVALID', (t) => {
  const { dir } = fixture(t);
  const argv = [
    '--log',
    join(dir, 'missing'),
    '--ak-ctx',
    '0x1234',
    '--ak-alg',
    'dsa',
    '--pcrs',
    'md5:10',
    '--quote-interval',
    '0',
    '--scheme',
    'other',
    '--digest-alg',
    'md5',
    '--boot-id',
    'b',
  ];
  assert.throws(
    () => parseAgentConfig(argv, {}),
    (err) => {
      assert.ok(hasCode(err, 'IMS_CONFIG_INVALID'));
      const problems = err.details.problems as string[];
      for (const flag of [
        'host-id',
        'state-dir',
        'tcti',
        'ak-ctx',
        'ak-alg',
        'pcrs',
        'quote-interval',
        'scheme',
        'digest-alg',
      ]) {
        assert.ok(
          problems.some((p) => p.includes(`--${flag}`)),
          `reports --${flag}: ${problems.join('; ')}`,
        );
      }
      assert.ok(problems.some((p) => p.includes('cannot read the log')));
      return true;
    },
  );
});

test('--help asks for the usage', () => {
  assert.equal(parseAgentConfig(['--help'], {}), 'help');
});

test('--kernel and the cut flags: a plain file cannot be cut, a cut needs a threshold', (t) => {
  const { base } = fixture(t);
  const plain = parseAgentConfig([...base, '--boot-id', 'b'], {});
  assert.ok(plain !== 'help');
  assert.equal(plain.kernel.kind, 'file');
  assert.equal(plain.cut, 'none');
  const socket = parseAgentConfig(
    [
      ...base,
      '--boot-id',
      'b',
      '--kernel',
      'socket:/run/ima.sock',
      '--cut',
      'delete',
      '--cut-records',
      '500',
    ],
    {},
  );
  assert.ok(socket !== 'help');
  assert.deepEqual(socket.kernel, { kind: 'socket', path: '/run/ima.sock' });
  assert.equal(socket.cut, 'delete');
  assert.equal(socket.cutRecords, 500);
  const virtual = parseAgentConfig(
    [...base, '--boot-id', 'b', '--shard-records', '100', '--shard-seconds', '60'],
    {},
  );
  assert.ok(virtual !== 'help');
  assert.equal(virtual.shardRecords, 100);
  assert.equal(virtual.shardMs, 60_000);
  assert.equal(virtual.shardMaxBytes, DEFAULT_SHARD_MAX_BYTES, 'shards fit on ima.shards by default');
  assert.ok(DEFAULT_SHARD_MAX_BYTES < MAX_SHIPPED_SHARD_BYTES);
  const refused = (argv: string[], text: RegExp) =>
    assert.throws(
      () => parseAgentConfig([...base, '--boot-id', 'b', ...argv], {}),
      (err: Error) => hasCode(err, 'IMS_CONFIG_INVALID') && text.test(err.message),
    );
  refused(['--cut', 'stage', '--cut-records', '10'], /--cut needs --kernel/);
  refused(['--kernel', 'socket:/x', '--cut', 'stage'], /--cut-records or --cut-bytes/);
  refused(['--kernel', 'socket:/x', '--cut', 'sometimes', '--cut-records', '5'], /--cut must be/);
  refused(['--kernel', 'tcp:1.2.3.4'], /--kernel tcp:1.2.3.4/);
  refused(['--shard-max-bytes', String(MAX_SHIPPED_SHARD_BYTES)], /shard-max-bytes/);
  refused(['--shard-max-bytes', '100'], /shard-max-bytes/);
  refused(['--kernel', 'securityfs:/nonexistent-ima-dir'], /cannot read the log/);
});
