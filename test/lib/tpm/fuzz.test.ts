import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { isImastreamError } from '../../../lib/errors.ts';
import { parseAttest } from '../../../lib/tpm/attest.ts';
import { parseSerializedPcrs } from '../../../lib/tpm/pcr-file.ts';
import { parsePublic } from '../../../lib/tpm/public.ts';
import { verifyQuote } from '../../../lib/tpm/quote.ts';
import { parseSignature } from '../../../lib/tpm/signature.ts';
import { goAttestation, keylimeBundle, veraison } from './corpus.ts';

/**
 * Property tests over real bytes: any truncation, bit flip or splice of a corpus structure either
 * parses or throws an ImastreamError — never another exception, never a hang.
 */
const k = keylimeBundle();
const e = veraison();
const g = goAttestation();
const SEEDS: Record<string, { bytes: Uint8Array; parse: (b: Uint8Array) => unknown }[]> = {
  attest: [k.attest, e.attest, g.attest, g.createAttestation].map((bytes) => ({ bytes, parse: parseAttest })),
  signature: [k.signature, e.signature, g.signature].map((bytes) => ({ bytes, parse: parseSignature })),
  public: [k.akPub, g.akPublic].map((bytes) => ({ bytes, parse: parsePublic })),
  pcrFile: [{ bytes: k.pcrFile, parse: parseSerializedPcrs }],
};

/** Mutations: truncate, flip bits, overwrite a u16 (length fields), append bytes. */
function mutation(seed: Uint8Array) {
  const at = fc.nat({ max: Math.max(0, seed.byteLength - 1) });
  return fc.oneof(
    fc.nat({ max: seed.byteLength }).map((n) => seed.subarray(0, n)),
    fc.array(fc.tuple(at, fc.integer({ min: 0, max: 7 })), { minLength: 1, maxLength: 8 }).map((flips) => {
      const out = seed.slice();
      for (const [i, bit] of flips) out[i] = (out[i] ?? 0) ^ (1 << bit);
      return out;
    }),
    fc.tuple(at, fc.integer({ min: 0, max: 0xffff })).map(([i, v]) => {
      const out = seed.slice();
      out[i] = v >> 8;
      if (i + 1 < out.byteLength) out[i + 1] = v & 0xff;
      return out;
    }),
    fc.uint8Array({ minLength: 1, maxLength: 64 }).map((tail) => new Uint8Array([...seed, ...tail])),
  );
}

function parsesOrThrowsCoded(parse: (b: Uint8Array) => unknown, bytes: Uint8Array): boolean {
  try {
    parse(bytes);
    return true;
  } catch (err) {
    return isImastreamError(err);
  }
}

describe('TPM parsers under mutation', { timeout: 60_000 }, () => {
  for (const [name, seeds] of Object.entries(SEEDS)) {
    it(`${name}: mutated corpus bytes parse or throw ImastreamError`, () => {
      for (const { bytes, parse } of seeds) {
        fc.assert(
          fc.property(mutation(bytes), (b) => parsesOrThrowsCoded(parse, b)),
          { numRuns: 400 },
        );
      }
    });
  }

  it('random bytes never escape as anything but ImastreamError', () => {
    const parsers = Object.values(SEEDS).map((s) => s[0]!.parse);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 700 }), (b) => parsers.every((p) => parsesOrThrowsCoded(p, b))),
      { numRuns: 500 },
    );
  });
});

describe('verifyQuote under mutation', { timeout: 60_000 }, () => {
  const akPublic = parsePublic(k.akPub);

  it('a mutated attest or signature gives a failing verdict or an ImastreamError', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.boolean(),
        fc.boolean(),
        mutation(k.attest),
        mutation(k.signature),
        async (ma, ms, a, s) => {
          if (!ma && !ms) return;
          try {
            const verdict = await verifyQuote({
              attest: ma ? a : k.attest,
              signature: ms ? s : k.signature,
              akPublic,
            });
            const unchanged =
              Buffer.compare(ma ? a : k.attest, k.attest) === 0 &&
              Buffer.compare(ms ? s : k.signature, k.signature) === 0;
            assert.equal(verdict.ok, unchanged);
          } catch (err) {
            assert.ok(isImastreamError(err), String(err));
          }
        },
      ),
      { numRuns: 150 },
    );
  });

  it('a mutated AK public area gives a verdict or an ImastreamError', async () => {
    await fc.assert(
      fc.asyncProperty(mutation(k.akPub), async (pub) => {
        try {
          const verdict = await verifyQuote({
            attest: k.attest,
            signature: k.signature,
            akPublic: parsePublic(pub),
          });
          assert.equal(typeof verdict.ok, 'boolean');
        } catch (err) {
          assert.ok(isImastreamError(err), String(err));
        }
      }),
      { numRuns: 150 },
    );
  });
});
