import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { hasCode } from '../../../lib/errors.ts';
import {
  ENROLLER_SETTINGS,
  loadAllowList,
  loadEkPolicy,
  loadRebind,
} from '../../../services/enroller/config.ts';
import { loadConfig } from '../../../services/shared/config.ts';
import { makeCaPair } from '../../helpers/enrol-certs.ts';

const HASH = 'ab'.repeat(32);

async function tempDir(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'imastream-enrolcfg-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

test('defaults: certificates required, so a trust directory is needed', async () => {
  const config = loadConfig(ENROLLER_SETTINGS, [], {});
  assert.equal(config.withoutCertificate, 'reject');
  assert.equal(config.challengeTtlMs, 300_000);
  await assert.rejects(loadEkPolicy(config), (e) => hasCode(e, 'IMS_CONFIG_INVALID'));
});

test('flags and environment select the policy; bad values are listed', () => {
  const config = loadConfig(ENROLLER_SETTINGS, ['--ek-policy', 'tofu'], {
    IMASTREAM_EK_POLICY: 'certificate',
  });
  assert.equal(config.withoutCertificate, 'tofu');
  assert.throws(
    () => loadConfig(ENROLLER_SETTINGS, ['--ek-policy', 'maybe', '--challenge-ttl-ms', '5'], {}),
    (e) => hasCode(e, 'IMS_CONFIG_INVALID') && /maybe/.test(e.message) && /challenge-ttl-ms/.test(e.message),
  );
});

test('TOFU without a trust directory is allowed; a trust directory is loaded', async (t) => {
  const tofu = await loadEkPolicy(loadConfig(ENROLLER_SETTINGS, ['--ek-policy', 'tofu'], {}));
  assert.equal(tofu.trustStore, null);
  const dir = await tempDir(t);
  await writeFile(join(dir, 'root.der'), (await makeCaPair('v')).root.der);
  const strict = await loadEkPolicy(loadConfig(ENROLLER_SETTINGS, [], { IMASTREAM_EK_TRUST_STORE: dir }));
  assert.equal(strict.trustStore?.roots.length, 1);
});

test('the allow-list file: hashes with comments; anything else is refused', async (t) => {
  const dir = await tempDir(t);
  const good = join(dir, 'allow.txt');
  await writeFile(good, `# fleet A\n${HASH}\n\n  ${'CD'.repeat(32)}  # upper case is fine\n`);
  assert.deepEqual([...(await loadAllowList(good))], [HASH, 'cd'.repeat(32)]);
  const bad = join(dir, 'bad.txt');
  await writeFile(bad, `${HASH}\nsha256:${HASH}\n`);
  await assert.rejects(loadAllowList(bad), (e) => hasCode(e, 'IMS_CONFIG_INVALID') && /:2:/.test(e.message));
  await assert.rejects(loadAllowList(join(dir, 'none.txt')), (e) => hasCode(e, 'IMS_IO_READ_FAILED'));
  const emptyList = join(dir, 'empty.txt');
  await writeFile(emptyList, '# nothing yet\n');
  const config = loadConfig(ENROLLER_SETTINGS, ['--ek-policy', 'allow-list', '--allow-list', emptyList], {});
  await assert.rejects(loadEkPolicy(config), (e) => hasCode(e, 'IMS_CONFIG_INVALID'));
});

test('the rebind file: host and EK key hash per line; malformed lines and repeated hosts are refused', async (t) => {
  const dir = await tempDir(t);
  const good = join(dir, 'rebind.txt');
  await writeFile(
    good,
    `# ticket 4711: mainboard swap\nweb-1  ${'CD'.repeat(32)}\n\ndb-2\t${HASH} # new TPM\n`,
  );
  assert.deepEqual(
    [...(await loadRebind(good))],
    [
      ['web-1', 'cd'.repeat(32)],
      ['db-2', HASH],
    ],
  );
  const policy = await loadEkPolicy(
    loadConfig(ENROLLER_SETTINGS, ['--ek-policy', 'tofu', '--ek-rebind', good], {}),
  );
  assert.equal(policy.rebind?.get('web-1'), 'cd'.repeat(32));
  for (const [name, text] of [
    ['no-hash.txt', 'web-1\n'],
    ['short.txt', `web-1 ${HASH.slice(2)}\n`],
    ['twice.txt', `web-1 ${HASH}\nweb-1 ${'cd'.repeat(32)}\n`],
  ] as const) {
    const file = join(dir, name);
    await writeFile(file, text);
    await assert.rejects(
      loadRebind(file),
      (e) => hasCode(e, 'IMS_CONFIG_INVALID') && /:[12]:/.test(e.message),
    );
  }
  await assert.rejects(loadRebind(join(dir, 'none.txt')), (e) => hasCode(e, 'IMS_IO_READ_FAILED'));
});
