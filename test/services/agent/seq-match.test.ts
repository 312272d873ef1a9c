import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fromHex } from '../../../lib/bytes/hex.ts';
import { hash } from '../../../lib/hash.ts';
import { parseBinaryLog } from '../../../lib/ima/binary.ts';
import { parseSelectionSpec } from '../../../lib/tpm/pcr-selection.ts';
import { BankTracker, SeqMatcher } from '../../../services/agent/seq-match.ts';

const CORPUS = new URL('../../../../shared/corpus/', import.meta.url);
const SELECTION = parseSelectionSpec('sha1:10+sha256:10');

function corpusLog(path: string) {
  return parseBinaryLog(new Uint8Array(readFileSync(new URL(path, CORPUS))), { digestAlg: 'sha1' }).records;
}

/** pcrDigest a TPM signs with an SHA-256 AK for sha1:10+sha256:10 (DOMAIN.md §4.3). */
function quotedDigest(sha1: string, sha256: string): Uint8Array {
  return hash('sha256', fromHex(sha1), fromHex(sha256));
}

// Expected PCR 10 values: tpm2-tss corpus README (independent replay), sml-ima-ng-sha1.bin, 6 records.
const NG_FINAL = quotedDigest(
  'ef2a20de2a84a4780f92ab11d5c4934c709dff00',
  '700a1bb47bc2bc005f2d8e23d80e2a1e301733c1d29023c52d1d7d149719eb64',
);

test('a quote of the whole log matches at the number of records read', () => {
  const records = corpusLog('tpm2-tss/sml-ima-ng-sha1.bin');
  const m = new SeqMatcher(new BankTracker(['sha1', 'sha256']), SELECTION, 'sha256');
  for (const r of records) m.add(r);
  assert.equal(m.count, 6);
  const found = m.match(NG_FINAL, 6);
  assert.equal(found?.seq, 6);
  assert.equal(
    Buffer.from(found!.pcrs.get('sha1')!.get(10)!).toString('hex'),
    'ef2a20de2a84a4780f92ab11d5c4934c709dff00',
  );
});

test('a quote that lags the log, or runs ahead of the hint, is still placed', () => {
  const records = corpusLog('tpm2-tss/sml-ima-ng-sha1.bin');
  const m = new SeqMatcher(new BankTracker(['sha1', 'sha256']), SELECTION, 'sha256');
  for (const r of records.slice(0, 4)) m.add(r);
  const at4 = m.valuesAt(4)!;
  const digestAt4 = hash('sha256', at4.get('sha1')!.get(10)!, at4.get('sha256')!.get(10)!);
  for (const r of records.slice(4)) m.add(r);

  assert.equal(m.match(digestAt4, 6)?.seq, 4, 'the TPM is behind what was read');
  assert.equal(m.match(NG_FINAL, 2)?.seq, 6, 'the TPM is ahead of what was read before the quote');
  assert.equal(m.match(new Uint8Array(32), 6), undefined, 'no state matches');
});

test('violations extend 0xFF: the legacy log with one matches its published value', () => {
  const records = corpusLog('tpm2-tss/sml-ima-sha1-invalidated.bin');
  const tracker = new BankTracker(['sha1', 'sha256']);
  for (const r of records) tracker.extend(r);
  assert.equal(
    Buffer.from(tracker.value('sha1', 10)!).toString('hex'),
    'bac37b84f007d0238af95af707cac8d61254870e',
  );
});

test('old states leave the window, and the count keeps counting', () => {
  const records = corpusLog('tpm2-tss/sml-ima-sha1.bin');
  const m = new SeqMatcher(new BankTracker(['sha1', 'sha256']), SELECTION, 'sha256', 0, 4);
  for (const r of records) m.add(r);
  assert.equal(m.count, 12);
  assert.equal(m.valuesAt(7), undefined);
  assert.ok(m.valuesAt(8) !== undefined);
  const sha256 = '239ba8e6f20ecfec961d771036c68f02dbeb771678b64c18cba81363e8e7139a';
  assert.equal(m.match(quotedDigest('062a05a9d18d1a51775ff8162bf6964b8dd23eb4', sha256), 0)?.seq, 12);
});
