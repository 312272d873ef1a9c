import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import type { CliIO } from '../../cli/io.ts';
import { main } from '../../cli/main.ts';
import { toHex } from '../../lib/bytes/hex.ts';
import { digestSize, type HashAlg } from '../../lib/hash.ts';
import { formatAsciiLine } from '../../lib/ima/ascii.ts';
import { templateDigestOf, violationDigest } from '../../lib/ima/digest.ts';
import { type ImaRecord, isViolation } from '../../lib/ima/record.ts';
import { PcrReplay } from '../../lib/ima/replay.ts';
import { generateLog } from '../../lib/ima/synthetic.ts';
import type { PcrValues } from '../../lib/pcr.ts';
import { objectName, qualifiedNameOfChain } from '../../lib/tpm/name.ts';
import { formatTextPcrs, parseSerializedPcrs } from '../../lib/tpm/pcr-file.ts';
import { checkAkAttributes, parsePublic } from '../../lib/tpm/public.ts';
import { checkClock, type QuoteVerdict, verifyQuote } from '../../lib/tpm/quote.ts';
import { type AkHandle, type EkHandle, Swtpm } from '../helpers/swtpm.ts';

/**
 * Quotes from a real (software) TPM: swtpm extended with a synthetic IMA log exactly as the kernel
 * (≥ 5.8) would, then quoted with RSASSA, RSAPSS and ECDSA AKs and verified by our verifier,
 * tpm2_checkquote (RSASSA/ECDSA oracle) and `imastream check-quote`.
 */
const BANKS: HashAlg[] = ['sha1', 'sha256', 'sha384'];
const SELECTION = 'sha1:10+sha256:0,10+sha384:10';
const LOG = generateLog({ records: 14, seed: 7, violations: [4] });
/** The TPM gets the first QUOTED records; the log file has all of them (it ran ahead of the quote). */
const QUOTED = 10;
const execFileAsync = promisify(execFile);
const codes = (v: QuoteVerdict) => v.failures.map((f) => f.code);
const nonce = Uint8Array.from(Buffer.from('0011223344556677', 'hex'));

/**
 * What the kernel extends into each bank for one record (DOMAIN §2.2–2.3): each bank's own hash
 * (≥ 5.8), or the SHA-1 template digest zero-padded to the bank size (4.11–5.7).
 */
function extendDigests(rec: ImaRecord, padded = false): Record<string, Uint8Array> {
  const out: Record<string, Uint8Array> = {};
  for (const bank of BANKS) {
    if (isViolation(rec)) out[bank] = violationDigest(bank, padded && bank !== 'sha1');
    else if (!padded) out[bank] = templateDigestOf(rec, bank);
    else {
      const digest = new Uint8Array(digestSize(bank));
      digest.set(templateDigestOf(rec, 'sha1'));
      out[bank] = digest;
    }
  }

  return out;
}

function flip(bytes: Uint8Array, at: number): Uint8Array {
  const out = bytes.slice();
  out[at] = (out[at] ?? 0) ^ 0x80;
  return out;
}

function captureIO(): CliIO & { lines: string[] } {
  const lines: string[] = [];
  return { lines, out: (l) => lines.push(l), err: (l) => lines.push(l) };
}

describe('quotes from swtpm', { timeout: 120_000 }, () => {
  let tpm: Swtpm;
  let ek: EkHandle;
  const aks: Record<string, AkHandle> = {};
  let expected: PcrValues;

  before(async () => {
    tpm = await Swtpm.start();
    ek = await tpm.createEk({ alg: 'rsa' });
    aks.rsassa = await tpm.createAk(ek, { scheme: 'rsassa', persist: '0x81010002' });
    aks.rsapss = await tpm.createAk(ek, { scheme: 'rsapss' });
    aks.ecdsa = await tpm.createAk(ek, { scheme: 'ecdsa' });
    aks.ecdsa384 = await tpm.createAk(ek, { scheme: 'ecdsa', keyAlg: 'ecc384', hashAlg: 'sha384' });
    aks.other = await tpm.createAk(ek, { scheme: 'rsassa' });
    for (const rec of LOG.records.slice(0, QUOTED)) await tpm.pcrExtend(rec.pcr, extendDigests(rec));
    expected = await tpm.pcrRead(SELECTION);
  });

  after(async () => {
    await tpm?.stop();
  });

  it('every AK passes the AK attribute check and its qualified name is H(QN_EK ‖ Name)', () => {
    const ekPub = parsePublic(ek.public);
    const ekName = objectName(ekPub.bytes, ekPub.nameAlg);
    for (const ak of Object.values(aks)) {
      const pub = parsePublic(ak.public);
      assert.deepEqual(checkAkAttributes(pub), []);
      assert.equal(toHex(objectName(pub.bytes, pub.nameAlg)), toHex(ak.name));
      assert.equal(toHex(qualifiedNameOfChain('endorsement', [ekName, ak.name])), toHex(ak.qualifiedName));
    }
  });

  it("the log replay (perbank) of the quoted records equals the TPM's PCR 10 in every bank", () => {
    const replay = new PcrReplay({ banks: BANKS, schemes: ['perbank'] });
    for (const rec of LOG.records.slice(0, QUOTED)) replay.extend(rec);
    for (const bank of BANKS)
      assert.equal(toHex(replay.value('perbank', bank, 10)), toHex(expected.get(bank)!.get(10)!));
  });

  for (const scheme of ['rsassa', 'rsapss', 'ecdsa', 'ecdsa384']) {
    it(`${scheme}: a multi-bank quote verifies against its PCR file`, async () => {
      const ak = aks[scheme]!;
      const q = await tpm.quote(ak, { selection: SELECTION, nonce });
      const pcrValues = parseSerializedPcrs(q.pcrs);
      assert.deepEqual(pcrValues, expected);
      const v = await verifyQuote({
        attest: q.attest,
        signature: q.signature,
        akPublic: parsePublic(ak.public),
        nonce,
        expectedQualifiedSigner: ak.qualifiedName,
        pcrValues,
      });
      assert.deepEqual(codes(v), []);
      assert.equal(v.signature?.hashAlg, ak.hashAlg);
      assert.deepEqual(v.attest?.quote?.pcrSelection, [
        { bank: 'sha1', pcrs: [10] },
        { bank: 'sha256', pcrs: [0, 10] },
        { bank: 'sha384', pcrs: [10] },
      ]);
      assert.deepEqual(checkClock(undefined, v.attest!.clockInfo), []);
    });
  }

  it('wrong nonce, another AK, a flipped signature or attest byte fail with their codes', async () => {
    const ak = aks.rsassa!;
    const q = await tpm.quote(ak, { selection: SELECTION, nonce });
    const akPublic = parsePublic(ak.public);
    const base = { attest: q.attest, signature: q.signature, akPublic };
    assert.deepEqual(codes(await verifyQuote({ ...base, nonce: Uint8Array.of(1, 2, 3) })), [
      'QUOTE_NONCE_MISMATCH',
    ]);
    const other = parsePublic(aks.other!.public);
    assert.deepEqual(codes(await verifyQuote({ ...base, akPublic: other })), ['QUOTE_BAD_SIGNATURE']);
    const pss = parsePublic(aks.rsapss!.public);
    assert.deepEqual(codes(await verifyQuote({ ...base, akPublic: pss })), ['QUOTE_SCHEME_MISMATCH']);
    assert.deepEqual(codes(await verifyQuote({ ...base, signature: flip(q.signature, 20) })), [
      'QUOTE_BAD_SIGNATURE',
    ]);
    assert.deepEqual(codes(await verifyQuote({ ...base, attest: flip(q.attest, 40) })), [
      'QUOTE_BAD_SIGNATURE',
    ]);
    const signer = aks.other!.qualifiedName;
    assert.deepEqual(codes(await verifyQuote({ ...base, expectedQualifiedSigner: signer })), [
      'QUOTE_SIGNER_MISMATCH',
    ]);
  });

  it('ECDSA: a flipped s byte fails', async () => {
    const q = await tpm.quote(aks.ecdsa!, { selection: SELECTION, nonce });
    const v = await verifyQuote({
      attest: q.attest,
      signature: flip(q.signature, q.signature.byteLength - 3),
      akPublic: parsePublic(aks.ecdsa!.public),
    });
    assert.deepEqual(codes(v), ['QUOTE_BAD_SIGNATURE']);
  });

  it('tpm2_checkquote agrees (RSASSA and ECDSA; 5.4 cannot check RSAPSS)', async () => {
    for (const scheme of ['rsassa', 'ecdsa']) {
      const ak = aks[scheme]!;
      const q = await tpm.quote(ak, { selection: SELECTION, nonce });
      const args = ['-u', ak.pubPath, '-m', q.paths.attest, '-s', q.paths.signature, '-f', q.paths.pcrs];
      await execFileAsync('tpm2_checkquote', [...args, '-g', 'sha256', '-q', toHex(nonce)], {
        timeout: 30_000,
      });
      const badSig = await tpm.writeFile(`${scheme}-bad.sig`, flip(q.signature, q.signature.byteLength - 5));
      const bad = ['-u', ak.pubPath, '-m', q.paths.attest, '-s', badSig, '-f', q.paths.pcrs, '-g', 'sha256'];
      await assert.rejects(execFileAsync('tpm2_checkquote', bad, { timeout: 30_000 }));
      const ours = await verifyQuote({
        attest: q.attest,
        signature: flip(q.signature, q.signature.byteLength - 5),
        akPublic: parsePublic(ak.public),
      });
      assert.deepEqual(codes(ours), ['QUOTE_BAD_SIGNATURE']);
    }
  });

  it('check-quote: exit 0 with the PCR file or the log, 1 on a mismatch, 2 on bad input', async () => {
    const ak = aks.rsapss!;
    const q = await tpm.quote(ak, { selection: SELECTION, nonce });
    const logPath = await tpm.writeFile('ima.bin', LOG.bytes);
    const pcr0 = new Map([['sha256' as HashAlg, new Map([[0, expected.get('sha256')!.get(0)!]])]]);
    const pcr0Path = await tpm.writeFile('pcr0.txt', formatTextPcrs(pcr0));
    const common = ['check-quote', '--quote', q.paths.attest, '--sig', q.paths.signature, '--ak', ak.pubPath];

    const withFile = captureIO();
    assert.equal(await main([...common, '--nonce', toHex(nonce), '--pcrs', q.paths.pcrs], withFile), 0);
    assert.match(withFile.lines.at(-1)!, /quote: valid/);

    const withLog = captureIO();
    const logArgs = [...common, '--log', logPath, '--pcrs', pcr0Path, '--pcrs-format', 'text'];
    assert.equal(await main(logArgs, withLog), 0, withLog.lines.join('\n'));
    assert.ok(withLog.lines.some((l) => l.includes(`after ${QUOTED} of ${LOG.records.length} records`)));
    assert.ok(withLog.lines.some((l) => l.includes('extend scheme perbank')));

    const asciiPath = await tpm.writeFile('ima.txt', LOG.records.map((r) => formatAsciiLine(r)).join(''));
    const ascii = captureIO();
    const asciiArgs = [...common, '--log', asciiPath, '--pcrs', pcr0Path, '--pcrs-format', 'text'];
    assert.equal(await main(asciiArgs, ascii), 0, ascii.lines.join('\n'));
    assert.ok(ascii.lines.some((l) => l.includes(`after ${QUOTED} of ${LOG.records.length} records`)));

    const json = captureIO();
    assert.equal(await main([...logArgs, '--json'], json), 0);
    assert.equal(JSON.parse(json.lines[0]!).logMatch.count, QUOTED);

    const noPcr0 = captureIO();
    assert.equal(await main([...common, '--log', logPath], noPcr0), 2);
    assert.match(noPcr0.lines.join('\n'), /sha256:0/);

    const wrongNonce = captureIO();
    assert.equal(await main([...common, '--nonce', '00', '--pcrs', q.paths.pcrs], wrongNonce), 1);
    assert.match(wrongNonce.lines.join('\n'), /QUOTE_NONCE_MISMATCH/);

    const shortLog = await tpm.writeFile('short.bin', LOG.bytes.subarray(0, LOG.records[QUOTED - 1]!.offset));
    const mismatch = captureIO();
    assert.equal(
      await main([...common, '--log', shortLog, '--pcrs', pcr0Path, '--pcrs-format', 'text'], mismatch),
      1,
    );
    assert.match(mismatch.lines.join('\n'), /QUOTE_PCR_DIGEST_MISMATCH/);

    const garbage = captureIO();
    const swapped = ['check-quote', '--quote', q.paths.pcrs, '--sig', q.paths.signature, '--ak', ak.pubPath];
    assert.equal(await main(swapped, garbage), 2);
    assert.match(garbage.lines.join('\n'), /IMS_TPM_/);
  });

  it('check-quote as a process: exit codes 0 and 2', async () => {
    const ak = aks.ecdsa!;
    const q = await tpm.quote(ak, { selection: SELECTION, nonce });
    const bin = new URL('../../bin/imastream.js', import.meta.url).pathname;
    const args = [
      bin,
      'check-quote',
      '--quote',
      q.paths.attest,
      '--sig',
      q.paths.signature,
      '--ak',
      ak.pubPath,
    ];
    const ok = await execFileAsync(process.execPath, [...args, '--pcrs', q.paths.pcrs], { timeout: 30_000 });
    assert.match(ok.stdout, /quote: valid/);
    const bad = execFileAsync(process.execPath, [...args, '--pcrs-format', 'nope', '--pcrs', q.paths.pcrs], {
      timeout: 30_000,
    });
    await assert.rejects(
      bad,
      (err: { code?: number; stderr?: string }) => err.code === 2 && /IMS_CLI_USAGE/.test(err.stderr ?? ''),
    );
  });

  it('a reset bumps resetCount, zeroes PCRs; the persisted AK still quotes; clock rules hold', async () => {
    const ak = aks.rsassa!;
    const akPublic = parsePublic(ak.public);
    const before = await verifyQuote({ ...(await quoteOf(ak)), akPublic });
    await tpm.reset();
    const after = await verifyQuote({ ...(await quoteOf(ak)), akPublic });
    assert.deepEqual(codes(after), []);
    const [b, a] = [before.attest!.clockInfo, after.attest!.clockInfo];
    assert.equal(a.resetCount, b.resetCount + 1);
    assert.equal(a.restartCount, 0);
    assert.deepEqual(checkClock(b, a), []);
    assert.deepEqual(
      checkClock(a, b).map((f) => f.code),
      ['QUOTE_RESET_COUNT_DECREASED'],
    );
    assert.equal(toHex((await tpm.pcrRead('sha256:10')).get('sha256')!.get(10)!), '00'.repeat(32));
  });

  it('suspend/resume bumps restartCount and keeps the PCRs; clock rules hold', async () => {
    const ak = aks.rsassa!;
    const akPublic = parsePublic(ak.public);
    await tpm.pcrExtend(10, { sha256: 'ab'.repeat(32) });
    const before = await verifyQuote({ ...(await quoteOf(ak)), akPublic });
    await tpm.suspendResume();
    const after = await verifyQuote({ ...(await quoteOf(ak)), akPublic });
    assert.deepEqual(codes(after), []);
    const [b, a] = [before.attest!.clockInfo, after.attest!.clockInfo];
    assert.equal(a.resetCount, b.resetCount);
    assert.equal(a.restartCount, b.restartCount + 1);
    assert.equal(toHex(after.attest!.quote!.pcrDigest), toHex(before.attest!.quote!.pcrDigest));
    assert.deepEqual(checkClock(b, a), []);
    assert.deepEqual(
      checkClock(a, b).map((f) => f.code),
      ['QUOTE_RESTART_COUNT_DECREASED'],
    );
  });

  it('after a reboot, a host extending padded SHA-1 (kernels 4.11–5.7) matches the padded scheme', async () => {
    await tpm.reset();
    for (const rec of LOG.records.slice(0, QUOTED)) await tpm.pcrExtend(rec.pcr, extendDigests(rec, true));
    const ak = aks.rsassa!; // persisted: it survives the reset
    const q = await tpm.quote(ak, { selection: SELECTION, nonce });
    const pcr0 = await tpm.writeFile('pcr0-padded.txt', `sha256:0=${'00'.repeat(32)}\n`);
    const logPath = await tpm.writeFile('ima-padded.bin', LOG.bytes);
    const args = ['check-quote', '--quote', q.paths.attest, '--sig', q.paths.signature, '--ak', ak.pubPath];
    const out = captureIO();
    const code = await main([...args, '--log', logPath, '--pcrs', pcr0, '--pcrs-format', 'text'], out);
    assert.equal(code, 0, out.lines.join('\n'));
    assert.ok(out.lines.some((l) => l.includes(`after ${QUOTED} of`) && l.includes('extend scheme padded')));
  });

  async function quoteOf(ak: AkHandle) {
    const q = await tpm.quote(ak, { selection: 'sha256:10', nonce });
    return { attest: q.attest, signature: q.signature, nonce };
  }
});
