import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { toHex } from '../../../lib/bytes/hex.ts';
import { hasCode } from '../../../lib/errors.ts';
import type { HashAlg } from '../../../lib/hash.ts';
import type { ImaRecord } from '../../../lib/ima/record.ts';
import { extendDigest, PcrReplay, templateDigestOf } from '../../../lib/ima/replay.ts';

/*
 * Hand-built records. Expected values are computed here with node:crypto, step by step, from
 * the rules in DOMAIN.md §1.7 and §2 — independently of lib/ima/replay.ts.
 */

const H = (alg: string, ...parts: Uint8Array[]) => {
  const h = createHash(alg);
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
};
const u32le = (n: number) => new Uint8Array(new Uint32Array([n]).buffer);
const ascii = (s: string) => new Uint8Array(Buffer.from(s, 'latin1'));
const cat = (...parts: Uint8Array[]) => new Uint8Array(Buffer.concat(parts));
const fill = (n: number, b: number) => new Uint8Array(n).fill(b);
const SIZES: Record<string, number> = { sha1: 20, sha256: 32, sha384: 48, sha512: 64 };

/** ima-ng template data: u32 40 | "sha256:" NUL | 32 × 0x11 ; u32 5 | "/bin" NUL */
const NG_DATA = cat(u32le(40), ascii('sha256:\0'), fill(32, 0x11), u32le(5), ascii('/bin\0'));
const ng = (pcr = 10): ImaRecord => ({
  pcr,
  templateName: 'ima-ng',
  templateData: NG_DATA,
  templateDigest: H('sha1', NG_DATA),
  offset: 0,
});

/** A violation: same shape, all-zero template digest. */
const violation = (pcr = 10): ImaRecord => ({ ...ng(pcr), templateDigest: new Uint8Array(20) });

/** Legacy ima data: filedigest[20] (0x22…) | u32 4 | "/abc" (no NUL). */
const LEGACY_DATA = cat(fill(20, 0x22), u32le(4), ascii('/abc'));
/** What the kernel hashed: filedigest || "/abc" zero-padded to 256 bytes = 276 bytes. */
const LEGACY_HASHED = cat(fill(20, 0x22), ascii('/abc'), new Uint8Array(252));
const legacy: ImaRecord = {
  pcr: 10,
  templateName: 'ima',
  templateData: LEGACY_DATA,
  templateDigest: H('sha1', LEGACY_HASHED),
  offset: 0,
};

/** PCR_new = H(PCR_old || d), from zeros. */
function chain(alg: string, digests: Uint8Array[]): string {
  let pcr = new Uint8Array(SIZES[alg]!);
  for (const d of digests) pcr = H(alg, pcr, d);
  return toHex(pcr);
}
const pad = (d: Uint8Array, size: number) => cat(d, new Uint8Array(size - d.byteLength));

describe('replay: extend rules', () => {
  it('perbank extends H_bank(template data); padded extends SHA-1 zero-padded', () => {
    const r = new PcrReplay({ banks: ['sha1', 'sha256', 'sha384', 'sha512'] });
    r.extend(ng());
    for (const bank of ['sha256', 'sha384', 'sha512'] as const) {
      assert.equal(toHex(r.value('perbank', bank, 10)), chain(bank, [H(bank, NG_DATA)]), bank);
      const padded = pad(H('sha1', NG_DATA), SIZES[bank]!);
      assert.equal(toHex(r.value('padded', bank, 10)), chain(bank, [padded]), `${bank} padded`);
    }
    // SHA-1: both schemes are the same chain
    assert.equal(toHex(r.value('perbank', 'sha1', 10)), chain('sha1', [H('sha1', NG_DATA)]));
    assert.deepEqual(r.value('padded', 'sha1', 10), r.value('perbank', 'sha1', 10));
  });

  it('a violation extends 0xFF × size, or 0xFF × 20 then zeros in the padded scheme', () => {
    const r = new PcrReplay({ banks: ['sha1', 'sha256', 'sha512'] });
    r.extend(violation());
    assert.equal(toHex(r.value('perbank', 'sha1', 10)), chain('sha1', [fill(20, 0xff)]));
    assert.equal(toHex(r.value('perbank', 'sha256', 10)), chain('sha256', [fill(32, 0xff)]));
    assert.equal(toHex(r.value('padded', 'sha256', 10)), chain('sha256', [pad(fill(20, 0xff), 32)]));
    assert.equal(toHex(r.value('padded', 'sha512', 10)), chain('sha512', [pad(fill(20, 0xff), 64)]));
  });

  it('legacy ima hashes digest || name padded to 256 bytes, not the logged data', () => {
    assert.equal(LEGACY_HASHED.byteLength, 276);
    assert.deepEqual(templateDigestOf(legacy, 'sha1'), legacy.templateDigest);
    const r = new PcrReplay();
    r.extend(legacy);
    assert.equal(toHex(r.value('perbank', 'sha1', 10)), chain('sha1', [H('sha1', LEGACY_HASHED)]));
    assert.equal(toHex(r.value('perbank', 'sha256', 10)), chain('sha256', [H('sha256', LEGACY_HASHED)]));
    assert.equal(
      toHex(r.value('padded', 'sha256', 10)),
      chain('sha256', [pad(H('sha1', LEGACY_HASHED), 32)]),
    );
  });

  it('keeps one chain per PCR index; PCRs never extended read as zeros', () => {
    const r = new PcrReplay();
    r.extend(ng(10));
    r.extend(ng(11));
    r.extend(violation(11));
    r.extend(legacy);
    assert.equal(r.count, 4);
    const d = H('sha256', NG_DATA);
    assert.equal(toHex(r.value('perbank', 'sha256', 10)), chain('sha256', [d, H('sha256', LEGACY_HASHED)]));
    assert.equal(toHex(r.value('perbank', 'sha256', 11)), chain('sha256', [d, fill(32, 0xff)]));
    assert.deepEqual(r.value('perbank', 'sha256', 12), new Uint8Array(32));
    const values = r.values('perbank');
    assert.deepEqual([...values.keys()], ['sha1', 'sha256']);
    assert.deepEqual([...values.get('sha256')!.keys()], [10, 11]);
  });

  it('extendDigest gives the same digests the replay extends', () => {
    const bank: HashAlg = 'sha256';
    assert.deepEqual(extendDigest(ng(), bank, 'perbank'), H('sha256', NG_DATA));
    assert.deepEqual(extendDigest(ng(), bank, 'padded'), pad(H('sha1', NG_DATA), 32));
    assert.deepEqual(extendDigest(ng(), 'sha1', 'padded'), H('sha1', NG_DATA));
    assert.deepEqual(extendDigest(violation(), bank, 'perbank'), fill(32, 0xff));
    assert.deepEqual(extendDigest(violation(), bank, 'padded'), pad(fill(20, 0xff), 32));
  });

  it('rejects PCR indexes outside 0–23', () => {
    const r = new PcrReplay();
    assert.throws(
      () => r.extend(ng(24)),
      (e) => hasCode(e, 'IMS_IMA_BAD_PCR'),
    );
    assert.throws(
      () => r.extend({ ...ng(), pcr: -1 }),
      (e) => hasCode(e, 'IMS_IMA_BAD_PCR'),
    );
    assert.equal(r.count, 0);
  });

  it('lastTemplateDigest exposes the hashes of the last record, none after a violation', () => {
    const r = new PcrReplay();
    r.extend(ng());
    assert.deepEqual(Uint8Array.from(r.lastTemplateDigest('sha256')!), H('sha256', NG_DATA));
    r.extend(violation());
    assert.equal(r.lastTemplateDigest('sha256'), undefined);
  });
});

describe('replay: state, pin, clone', () => {
  it('state() round-trips through JSON and fromState()', () => {
    const r = new PcrReplay({ banks: ['sha1', 'sha256', 'sha384'] });
    for (const rec of [ng(10), violation(11), legacy]) r.extend(rec);
    const state = JSON.parse(JSON.stringify(r.state()));
    const back = PcrReplay.fromState(state);
    assert.deepEqual(back.state(), r.state());
    back.extend(ng(10));
    r.extend(ng(10));
    assert.deepEqual(back.state(), r.state());
    assert.equal(back.count, 4);
  });

  it('state() lists every extended PCR as lowercase hex under each scheme and bank', () => {
    const r = new PcrReplay();
    r.extend(ng(10));
    const s = r.state();
    assert.deepEqual(s.banks, ['sha1', 'sha256']);
    assert.deepEqual(s.schemes, ['perbank', 'padded']);
    assert.equal(s.pcrs.perbank?.sha256?.['10'], chain('sha256', [H('sha256', NG_DATA)]));
    assert.equal(s.pcrs.padded?.sha1?.['10'], chain('sha1', [H('sha1', NG_DATA)]));
  });

  it('pin() drops the other scheme and keeps the values', () => {
    const r = new PcrReplay();
    r.extend(ng());
    const padded = r.value('padded', 'sha256', 10);
    r.pin('padded');
    assert.deepEqual(r.schemes, ['padded']);
    assert.deepEqual(r.value('padded', 'sha256', 10), padded);
    assert.deepEqual(r.value('padded', 'sha1', 10), H('sha1', new Uint8Array(20), H('sha1', NG_DATA)));
    assert.throws(() => r.value('perbank', 'sha256', 10), RangeError);
    assert.equal(Object.keys(r.state().pcrs).join(), 'padded');
  });

  it('clone() is independent of the original', () => {
    const r = new PcrReplay();
    r.extend(ng());
    const c = r.clone();
    c.extend(ng());
    assert.equal(r.count, 1);
    assert.equal(c.count, 2);
    assert.notDeepEqual(c.value('perbank', 'sha1', 10), r.value('perbank', 'sha1', 10));
    assert.notDeepEqual(c.value('padded', 'sha1', 10), r.value('padded', 'sha1', 10));
  });

  it('fromState() keeps SHA-1 chains apart when stored values disagree', () => {
    const r = new PcrReplay();
    r.extend(ng());
    const s = r.state();
    s.pcrs.padded!.sha1!['10'] = '00'.repeat(20);
    const back = PcrReplay.fromState(s);
    assert.deepEqual(back.value('padded', 'sha1', 10), new Uint8Array(20));
    assert.deepEqual(back.value('perbank', 'sha1', 10), r.value('perbank', 'sha1', 10));
  });

  const good = () => new PcrReplay().state() as unknown as Record<string, unknown>;
  const hostile: [string, unknown][] = [
    ['null', null],
    ['array', []],
    ['no banks', { ...good(), banks: [] }],
    ['unknown bank', { ...good(), banks: ['md5'] }],
    ['repeated bank', { ...good(), banks: ['sha1', 'sha1'] }],
    ['unknown scheme', { ...good(), schemes: ['both'] }],
    ['negative count', { ...good(), count: -1 }],
    ['fractional count', { ...good(), count: 1.5 }],
    ['string count', { ...good(), count: '3' }],
    ['pcrs not an object', { ...good(), pcrs: 'x' }],
    ['undeclared scheme', { ...good(), schemes: ['perbank'], pcrs: { padded: {} } }],
    ['undeclared bank', { ...good(), pcrs: { perbank: { sha512: {} } } }],
    ['PCR 24', { ...good(), pcrs: { perbank: { sha1: { '24': '00'.repeat(20) } } } }],
    ['PCR "010"', { ...good(), pcrs: { perbank: { sha1: { '010': '00'.repeat(20) } } } }],
    ['short value', { ...good(), pcrs: { perbank: { sha1: { '10': '00'.repeat(19) } } } }],
    ['uppercase hex', { ...good(), pcrs: { perbank: { sha1: { '10': 'AA'.repeat(20) } } } }],
    [
      '__proto__ key',
      JSON.parse('{"banks":["sha1"],"schemes":["perbank"],"count":0,"pcrs":{"__proto__":{}}}'),
    ],
  ];
  for (const [name, state] of hostile) {
    it(`fromState() rejects hostile state: ${name}`, () => {
      assert.throws(
        () => PcrReplay.fromState(state),
        (e) => hasCode(e, 'IMS_REPLAY_BAD_STATE'),
      );
    });
  }
});
