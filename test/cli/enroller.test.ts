import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { EXIT } from '../../cli/io.ts';
import { main } from '../../cli/main.ts';

function sink() {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { out: (l: string) => out.push(l), err: (l: string) => err.push(l) }, out, err };
}

test('imastream enroller --help names the trust store and the policies', async () => {
  const s = sink();
  assert.equal(await main(['enroller', '--help'], s.io), EXIT.ok);
  const help = s.out.join('\n');
  for (const flag of ['--trust-store', '--ek-policy', '--allow-list', '--challenge-ttl-ms']) {
    assert.match(help, new RegExp(flag));
  }
});

test('imastream enroller refuses, before connecting, a configuration under which nothing could enrol', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'imastream-enroller-cli-'));
  const bad = await mkdtemp(join(tmpdir(), 'imastream-enroller-cli-'));
  t.after(() => Promise.all([dir, bad].map((d) => rm(d, { recursive: true, force: true }))));
  await writeFile(join(bad, 'vendor.pem'), 'not a certificate\n');
  const cases: [string[], RegExp][] = [
    [[], /IMS_CONFIG_INVALID: no --trust-store/],
    [['--ek-policy', 'sometimes'], /IMS_CONFIG_INVALID.*sometimes/],
    [['--trust-store', dir], /IMS_CONFIG_INVALID: .*no self-signed manufacturer root/],
    [['--trust-store', bad], /IMS_CONFIG_INVALID: .*does not parse/],
    [['--ek-policy', 'allow-list'], /IMS_CONFIG_INVALID: --ek-policy allow-list needs/],
  ];
  for (const [args, message] of cases) {
    const s = sink();
    assert.equal(
      await main(['enroller', ...args, '--log-level', 'silent'], s.io),
      EXIT.unusable,
      args.join(' '),
    );
    assert.match(s.err.join('\n'), message, args.join(' '));
  }
});
