import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { hasCode } from '../../../lib/errors.ts';
import { loadTrustStore, splitCertificates } from '../../../services/enroller/trust-store.ts';
import { makeCaPair } from '../../helpers/enrol-certs.ts';

const vendorA = await makeCaPair('vendor a');
const vendorB = await makeCaPair('vendor b');

function pem(der: Uint8Array): string {
  const b64 = Buffer.from(der).toString('base64').replace(/.{64}/g, '$&\n');
  return `-----BEGIN CERTIFICATE-----\n${b64}\n-----END CERTIFICATE-----\n`;
}

async function dirWith(
  t: { after: (fn: () => Promise<void>) => void },
  files: Record<string, string | Uint8Array>,
) {
  const dir = await mkdtemp(join(tmpdir(), 'imastream-trust-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  for (const [name, body] of Object.entries(files)) await writeFile(join(dir, name), body);
  return dir;
}

test('PEM bundles, single PEM and DER files are read; other files are ignored', async (t) => {
  const dir = await dirWith(t, {
    'vendor-a-bundle.pem': `# vendor A chain\n${pem(vendorA.intermediate.der)}${pem(vendorA.root.der)}`,
    'vendor-b-root.der': vendorB.root.der,
    'vendor-b-ca.CRT': pem(vendorB.intermediate.der),
    'README.txt': 'not a certificate',
  });
  const store = await loadTrustStore(dir);
  assert.equal(store.roots.length, 2);
  assert.equal(store.intermediates.length, 2);
});

test('a directory that could validate nothing, or does not exist, is a configuration error', async (t) => {
  const onlyIntermediate = await dirWith(t, { 'ca.pem': pem(vendorA.intermediate.der) });
  const empty = await dirWith(t, {});
  for (const dir of [onlyIntermediate, empty, join(empty, 'missing')]) {
    await assert.rejects(loadTrustStore(dir), (e) => hasCode(e, 'IMS_CONFIG_INVALID'), dir);
  }
});

test('a certificate file that does not parse names the problem', async (t) => {
  const dir = await dirWith(t, {
    'root.pem': pem(vendorA.root.der),
    'broken.der': Uint8Array.of(0x30, 3, 1, 2, 3),
  });
  await assert.rejects(loadTrustStore(dir), (e) => hasCode(e, 'IMS_CONFIG_INVALID') && /#\d/.test(e.message));
});

test('splitCertificates keeps each PEM block and passes DER through', () => {
  const two = new TextEncoder().encode(pem(vendorA.root.der) + pem(vendorB.root.der));
  assert.equal(splitCertificates(two).length, 2);
  assert.deepEqual(splitCertificates(vendorA.root.der), [vendorA.root.der]);
});
