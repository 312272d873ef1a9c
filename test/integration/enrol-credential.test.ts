import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { toHex } from '../../lib/bytes/hex.ts';
import { hasCode } from '../../lib/errors.ts';
import { credentialFile, makeCredential, parseCredentialFile } from '../../lib/tpm/credential.ts';
import { concat, u16be } from '../../lib/tpm/marshal.ts';
import { objectName } from '../../lib/tpm/name.ts';
import { parsePublic, type TpmPublic } from '../../lib/tpm/public.ts';
import { SoftTpm } from '../helpers/enrol-soft-tpm.ts';
import { activateCredential, EnrolTpm } from '../helpers/enrol-tpm.ts';
import { Swtpm } from '../helpers/swtpm.ts';

/*
 * Software MakeCredential (lib/tpm/credential.ts) against real implementations:
 *  - tpm2_makecredential -T none (tpm2-tools' own KDFa/AES-CFB/HMAC) opened by our software
 *    ActivateCredential: the KDF, label and layout agree with an independent implementation;
 *  - credentials made in Node activated by swtpm: the TPM returns the secret byte-exact for the
 *    RSA-2048 EK and the ECC P-384 EK of a manufactured TPM, and for a P-256 EK from the default
 *    template; and refuses a credential bound to another AK's Name.
 */

const nameOf = (pub: TpmPublic) => objectName(pub.bytes, pub.nameAlg);

test('tpm2_makecredential output opens with our KDFa/HMAC/AES-CFB (no TPM involved)', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'imastream-mkcred-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const soft = new SoftTpm('rsa');
  const tpmt = soft.ekPublic;
  const ekPath = join(dir, 'ek.pub');
  await writeFile(ekPath, concat(u16be(tpmt.length), tpmt));
  const secret = randomBytes(20);
  await writeFile(join(dir, 'secret'), secret);
  const akName = concat(u16be(0x000b), randomBytes(32));
  const out = join(dir, 'cred.out');
  await run('tpm2_makecredential', [
    '-T',
    'none',
    '-u',
    ekPath,
    '-s',
    join(dir, 'secret'),
    '-n',
    toHex(akName),
    '-o',
    out,
  ]);

  const file = new Uint8Array(await readFile(out));
  const credential = parseCredentialFile(file);
  assert.deepEqual(soft.activate(parsePublic(tpmt), akName, credential), new Uint8Array(secret));
  assert.equal(file.length, credentialFile(makeCredential(parsePublic(tpmt), akName, secret)).length);
});

let tpm: EnrolTpm;
let ak: { context: string; public: Uint8Array };

before(async () => {
  tpm = await EnrolTpm.manufactured();
  ak = await tpm.createAk('0x81010001');
});
after(() => tpm?.stop());

test('RSA-2048 EK: the TPM activates Node credentials and returns each secret byte-exact', async () => {
  const ek = parsePublic(await tpm.readPublic('0x81010001'));
  assert.equal(ek.key.type, 'rsa');
  const akName = nameOf(parsePublic(ak.public));
  for (const size of [1, 16, 32]) {
    const secret = randomBytes(size);
    const credential = credentialFile(makeCredential(ek, akName, secret));
    assert.equal(credential.length, 8 + 2 + (2 + 32 + 2 + size) + 2 + 256);
    assert.deepEqual(
      await tpm.activate('0x81010001', ak.context, credential, 'policy'),
      new Uint8Array(secret),
    );
  }
});

test('ECC P-384 EK (SHA-384 nameAlg): KDFe and the ephemeral point are what the TPM expects', async () => {
  const ek = parsePublic(await tpm.readPublic('0x81010016'));
  assert.equal(ek.key.type === 'ecc' && ek.key.curveId, 0x0004);
  assert.equal(ek.nameAlg, 'sha384');
  const akName = nameOf(parsePublic(ak.public));
  for (const size of [1, 48]) {
    const secret = randomBytes(size);
    const credential = credentialFile(makeCredential(ek, akName, secret));
    assert.deepEqual(
      await tpm.activate('0x81010016', ak.context, credential, 'password'),
      new Uint8Array(secret),
    );
  }
  assert.throws(
    () => makeCredential(ek, akName, randomBytes(49)),
    (e) => hasCode(e, 'IMS_TPM_BAD_CREDENTIAL'),
  );
});

test('a credential bound to another AK Name is refused by the TPM', async () => {
  const ek = parsePublic(await tpm.readPublic('0x81010001'));
  const other = await tpm.createAk('0x81010001', 'rsa');
  const credential = credentialFile(makeCredential(ek, nameOf(parsePublic(other.public)), randomBytes(16)));
  await assert.rejects(tpm.activate('0x81010001', ak.context, credential, 'policy'), (e) =>
    hasCode(e, 'IMS_TOOL_FAILED'),
  );
  // and the right AK activates the same credential
  const secret = await tpm.activate('0x81010001', other.context, credential, 'policy');
  assert.equal(secret.length, 16);
});

test('ECC P-256 EK from the default template (tpm2_createek -G ecc) on a blank swtpm', async (t) => {
  const blank = await Swtpm.start();
  t.after(() => blank.stop());
  const ekHandle = await blank.createEk({ alg: 'ecc', handle: '0x81010002' });
  const ek = parsePublic(ekHandle.public);
  assert.equal(ek.key.type === 'ecc' && ek.key.curveId, 0x0003);
  const akHandle = await blank.createAk(ekHandle, { scheme: 'ecdsa' });
  const secret = randomBytes(32);
  const credential = credentialFile(makeCredential(ek, akHandle.name, secret));
  const got = await activateCredential(blank.tools, '0x81010002', akHandle.context, credential, 'policy');
  assert.deepEqual(got, new Uint8Array(secret));
});

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: 30_000 }, (err, stdout, stderr) =>
      err === null ? resolve(stdout) : reject(new Error(`${cmd}: ${stderr}`)),
    );
  });
}
