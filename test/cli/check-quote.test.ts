import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { CliIO } from '../../cli/io.ts';
import { main } from '../../cli/main.ts';
import { formatTextPcrs, parseSerializedPcrs } from '../../lib/tpm/pcr-file.ts';
import {
  corpusPath,
  globalTrustAuthority,
  goAttestation,
  keylimeBundle,
  trustee,
} from '../lib/tpm/corpus.ts';

const KEYLIME = corpusPath('keylime/quote-bundle/');
const NONCE = 'db1db298db6d60e6385b7231743e9c3056a18003';

function io(): CliIO & { text: () => string } {
  const lines: string[] = [];
  return { out: (l) => lines.push(l), err: (l) => lines.push(l), text: () => lines.join('\n') };
}

async function run(args: string[]): Promise<{ code: number; text: string }> {
  const sink = io();
  const code = await main(['check-quote', ...args], sink);
  return { code, text: sink.text() };
}

const keylimeArgs = (ak = 'ak.pub') => [
  '--quote',
  `${KEYLIME}quote.out`,
  '--sig',
  `${KEYLIME}quotesig.out`,
  '--ak',
  `${KEYLIME}${ak}`,
];

describe('imastream check-quote on corpus quotes', () => {
  let dir: string;
  const file = async (name: string, bytes: Uint8Array | string) => {
    const path = join(dir, name);
    await writeFile(path, bytes);
    return path;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'imastream-check-quote-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('says so when no nonce was given: a valid quote may still be old', async () => {
    const r = await run([...keylimeArgs(), '--pcrs', `${KEYLIME}quotepcr.out`]);
    assert.equal(r.code, 0, r.text);
    assert.match(r.text, /nonce not checked/);
    const withNonce = await run([...keylimeArgs(), '--nonce', NONCE, '--pcrs', `${KEYLIME}quotepcr.out`]);
    assert.doesNotMatch(withNonce.text, /nonce not checked/);
  });

  it('a log with no readable record is unusable input (exit 2), never a match at count 0', async () => {
    const empty = await file('empty.log', '');
    const r = await run([...keylimeArgs(), '--nonce', NONCE, '--log', empty]);
    assert.equal(r.code, 2, r.text);
    assert.match(r.text, /IMS_IMA_NO_RECORDS|IMS_IMA_UNKNOWN_FORMAT/);
    assert.equal(r.text.split('\n').length, 1, r.text);
  });

  it('keylime bundle: valid with ak.pub or akpub.pem, the nonce and the serialized PCR file', async () => {
    for (const ak of ['ak.pub', 'akpub.pem']) {
      const r = await run([...keylimeArgs(ak), '--nonce', NONCE, '--pcrs', `${KEYLIME}quotepcr.out`]);
      assert.equal(r.code, 0, r.text);
      assert.match(r.text, /quote: valid/);
    }
  });

  it('keylime bundle: text and values PCR formats give the same answer', async () => {
    const values = parseSerializedPcrs(keylimeBundle().pcrFile);
    const text = await file('pcrs.txt', formatTextPcrs(values));
    assert.equal((await run([...keylimeArgs(), '--pcrs', text, '--pcrs-format', 'text'])).code, 0);
    const raw = await file('pcrs.values', Buffer.concat([...values.get('sha256')!.values()]));
    assert.equal((await run([...keylimeArgs(), '--pcrs', raw, '--pcrs-format', 'values'])).code, 0);
    const changed = await file('changed.txt', formatTextPcrs(values).replace('sha256:15=00', 'sha256:15=01'));
    const r = await run([...keylimeArgs(), '--pcrs', changed, '--pcrs-format', 'text']);
    assert.equal(r.code, 1);
    assert.match(r.text, /QUOTE_PCR_DIGEST_MISMATCH/);
  });

  it('keylime bundle: a wrong nonce is exit 1 with its code; --json carries the failures', async () => {
    const r = await run([...keylimeArgs(), '--nonce', '00', '--json']);
    assert.equal(r.code, 1);
    const json = JSON.parse(r.text);
    assert.equal(json.ok, false);
    assert.deepEqual(
      json.failures.map((f: { code: string }) => f.code),
      ['QUOTE_NONCE_MISMATCH'],
    );
    assert.equal(json.quote.pcrDigest, 'ec1636c69c548fd09a165a4f874e5d1610a8fbe36241566017e92b17e144b971');
  });

  it('a log that never extends the quoted PCRs is unusable without --pcrs (exit 2, PCRs named)', async () => {
    const r = await run([...keylimeArgs(), '--log', corpusPath('global-trust-authority/ima.log')]);
    assert.equal(r.code, 2);
    assert.match(r.text, /sha256:15, sha256:16, sha256:22/);
  });

  it('go-attestation: TPMT_PUBLIC AK, SHA-1 quote, 24 PCRs from a text file', async () => {
    const g = goAttestation();
    const args = [
      '--quote',
      await file('ga.msg', g.attest),
      '--sig',
      await file('ga.sig', g.signature),
      '--ak',
      await file('ga.pub', g.akPublic),
      '--pcrs',
      await file('ga.txt', formatTextPcrs(g.values)),
      '--pcrs-format',
      'text',
    ];
    const r = await run(args);
    assert.equal(r.code, 0, r.text);
  });

  it('trustee: DER SPKI AK', async () => {
    const t = trustee();
    const args = ['--quote', await file('t.msg', t.attest), '--sig', await file('t.sig', t.signature)];
    const r = await run([
      ...args,
      '--ak',
      await file('t.der', t.akSpki),
      '--pcrs',
      await file('t.txt', formatTextPcrs(t.values)),
      '--pcrs-format',
      'text',
    ]);
    assert.equal(r.code, 0, r.text);
  });

  it('global-trust-authority: AK certificate as DER and PEM; the inconsistent copy fails', async () => {
    for (const name of ['boot-test_evidence.json', 'common-test_evidence.json'] as const) {
      const g = globalTrustAuthority(name);
      const base = [
        '--quote',
        await file(`${name}.msg`, g.attest),
        '--sig',
        await file(`${name}.sig`, g.signature),
      ];
      const pcrs = ['--pcrs', await file(`${name}.txt`, formatTextPcrs(g.values)), '--pcrs-format', 'text'];
      for (const ak of [await file(`${name}.cer`, g.certDer), await file(`${name}.pem`, g.certPem)]) {
        const r = await run([...base, '--ak', ak, ...pcrs, '--nonce', '96362bf2f60d62b12b14718a7a22f8be']);
        if (name === 'boot-test_evidence.json') assert.equal(r.code, 0, r.text);
        else {
          assert.equal(r.code, 1);
          assert.match(r.text, /QUOTE_BAD_SIGNATURE/);
          assert.doesNotMatch(r.text, /QUOTE_PCR_DIGEST_MISMATCH/);
        }
      }
    }
  });

  it('unusable input is exit 2 with one coded line', async () => {
    const missing = await run(['--quote', `${KEYLIME}quote.out`]);
    assert.equal(missing.code, 2);
    assert.match(missing.text, /IMS_CLI_USAGE: --sig is required/);
    const unreadable = await run([...keylimeArgs(), '--pcrs', join(dir, 'nope')]);
    assert.equal(unreadable.code, 2);
    assert.match(unreadable.text, /IMS_IO_READ_FAILED/);
    const swapped = await run([
      '--quote',
      `${KEYLIME}quotesig.out`,
      '--sig',
      `${KEYLIME}quote.out`,
      '--ak',
      `${KEYLIME}ak.pub`,
    ]);
    assert.equal(swapped.code, 2);
    assert.match(swapped.text, /IMS_TPM_/);
    assert.equal(swapped.text.split('\n').length, 1);
    const badNonce = await run([...keylimeArgs(), '--nonce', 'xyz']);
    assert.equal(badNonce.code, 2);
  });

  it('--help prints usage and exits 0', async () => {
    const r = await run(['--help']);
    assert.equal(r.code, 0);
    assert.match(r.text, /--pcrs-format/);
  });
});
