import { bytesEqual, toHex } from '../bytes/hex.ts';
import { digestSize, type HashAlg, webcryptoName } from '../hash.ts';
import type { PcrValues } from '../pcr.ts';
import { type Attest, parseAttest } from './attest.ts';
import { TPM_ALG, TPM_GENERATED_VALUE, TPM_ST_ATTEST } from './constants.ts';
import { importVerifyKey, toFixedSize, webcryptoCurve } from './key.ts';
import { computePcrDigest } from './pcr-digest.ts';
import type { AkPublic } from './public.ts';
import { parseSignature, type TpmSignature } from './signature.ts';

/** Clock and PCR helpers for callers that hold a verified Attest. */
export { type ClockFailure, type ClockState, checkClock } from './clock.ts';
export { matchPcrDigest } from './pcr-digest.ts';

/** Why a quote was not accepted. Stable: alerts and verdict records carry these codes. */
export type QuoteFailureCode =
  | 'QUOTE_BAD_SIGNATURE'
  | 'QUOTE_SCHEME_MISMATCH'
  | 'QUOTE_HASH_MISMATCH'
  | 'QUOTE_BAD_MAGIC'
  | 'QUOTE_NOT_A_QUOTE'
  | 'QUOTE_NONCE_MISMATCH'
  | 'QUOTE_SIGNER_MISMATCH'
  | 'QUOTE_PCR_DIGEST_MISMATCH'
  | 'QUOTE_PCRS_MISSING';

/** One failed check, with a message for people (the code is for machines). */
export interface QuoteFailure {
  code: QuoteFailureCode;
  message: string;
}

/**
 * The outcome of {@link verifyQuote}. `ok` means every check that was asked for passed. `attest`
 * is trustworthy only when `ok` is true; it is returned either way for diagnostics.
 */
export interface QuoteVerdict {
  ok: boolean;
  attest?: Attest;
  signature?: TpmSignature;
  failures: QuoteFailure[];
}

/** What {@link verifyQuote} checks; optional fields add checks. */
export interface QuoteInput {
  /** TPMS_ATTEST bytes exactly as signed (`tpm2_quote -m`). */
  attest: Uint8Array;
  /** TPMT_SIGNATURE bytes (`tpm2_quote -s`, tss format). */
  signature: Uint8Array;
  /** The AK; trust in it (enrolment) is the caller's business. */
  akPublic: AkPublic;
  /** The nonce the verifier issued; compared byte for byte with extraData. */
  nonce?: Uint8Array;
  /** The AK's qualified name, when known. */
  expectedQualifiedSigner?: Uint8Array;
  /** PCR values to recompute pcrDigest from (from a PCR read or a log replay). */
  pcrValues?: PcrValues;
}

/**
 * Verifies a TPM 2.0 quote (DOMAIN §4.1): the signature over the raw TPMS_ATTEST bytes with the
 * AK, then magic, type, nonce, qualified signer and, when values are given, pcrDigest. Every
 * failed check is reported, not only the first. Malformed bytes throw ImastreamError
 * (IMS_TPM_*); a well-formed quote that fails a check is a verdict with `ok: false`.
 * Clock rules across quotes are {@link checkClock}'s job.
 */
export async function verifyQuote(input: QuoteInput): Promise<QuoteVerdict> {
  const attest = parseAttest(input.attest);
  const signature = parseSignature(input.signature);
  const failures = checkScheme(signature, input.akPublic);
  if (failures.length === 0 && !(await verifySignature(input.attest, signature, input.akPublic))) {
    failures.push({
      code: 'QUOTE_BAD_SIGNATURE',
      message: `${signature.sigAlg} signature does not verify with the AK`,
    });
  }
  failures.push(...checkAttest(attest, input, signature.hashAlg));

  return { ok: failures.length === 0, attest, signature, failures };
}

/** The signature must match the AK's key type and, when the AK fixes a scheme, its scheme and hash. */
function checkScheme(signature: TpmSignature, ak: AkPublic): QuoteFailure[] {
  const wantsEcc = signature.sigAlg === 'ecdsa';
  if (wantsEcc !== (ak.key.type === 'ecc')) {
    return [
      { code: 'QUOTE_SCHEME_MISMATCH', message: `${signature.sigAlg} signature from an ${ak.key.type} AK` },
    ];
  }
  if (ak.scheme === null) return [];
  if (ak.scheme.scheme !== SIG_ALG_ID[signature.sigAlg]) {
    return [
      {
        code: 'QUOTE_SCHEME_MISMATCH',
        message: `${signature.sigAlg} signature, AK scheme 0x${ak.scheme.scheme.toString(16)}`,
      },
    ];
  }
  if (ak.scheme.hashAlg !== signature.hashAlg) {
    return [
      {
        code: 'QUOTE_HASH_MISMATCH',
        message: `signature hash ${signature.hashAlg}, AK scheme hash ${ak.scheme.hashAlg}`,
      },
    ];
  }

  return [];
}

const SIG_ALG_ID: Readonly<Record<TpmSignature['sigAlg'], number>> = {
  rsassa: TPM_ALG.RSASSA,
  rsapss: TPM_ALG.RSAPSS,
  ecdsa: TPM_ALG.ECDSA,
};

/**
 * WebCrypto verification over the raw message (WebCrypto hashes it; the TPM signed H(attest)).
 * RSA-PSS is tried with salt = hash length (libtpms, current TPMs) and then the maximum salt
 * (older firmware), since WebCrypto needs the exact salt length.
 */
async function verifySignature(message: Uint8Array, signature: TpmSignature, ak: AkPublic): Promise<boolean> {
  const key = await importVerifyKey(ak.key, signature.sigAlg, signature.hashAlg);
  if (signature.sigAlg === 'ecdsa') {
    const raw = rawEcdsaSignature(signature, ak);
    if (raw === undefined) return false;
    return crypto.subtle.verify({ name: 'ECDSA', hash: webcryptoName(signature.hashAlg) }, key, raw, message);
  }
  if (signature.sigAlg === 'rsassa') {
    return crypto.subtle.verify({ name: 'RSASSA-PKCS1-v1_5' }, key, signature.sig, message);
  }
  for (const saltLength of pssSaltLengths(ak, signature.hashAlg)) {
    if (await crypto.subtle.verify({ name: 'RSA-PSS', saltLength }, key, signature.sig, message)) return true;
  }

  return false;
}

function pssSaltLengths(ak: AkPublic, hashAlg: HashAlg): number[] {
  const hLen = digestSize(hashAlg);
  const bits = ak.key.type === 'rsa' ? ak.key.keyBits : 0;
  const emLen = Math.ceil((bits - 1) / 8);
  const max = emLen - hLen - 2;

  // A key too small for the hash (emLen < hLen + 2) holds no PSS signature at all; WebCrypto
  // would throw an OperationError rather than say false, so nothing is tried.
  if (max < 0) return [];

  return max > hLen ? [hLen, max] : [max];
}

/** ECDSA r and s as WebCrypto's raw `r ‖ s`, each left-padded to the curve size; undefined if too long. */
function rawEcdsaSignature(
  signature: TpmSignature & { sigAlg: 'ecdsa' },
  ak: AkPublic,
): Uint8Array | undefined {
  if (ak.key.type !== 'ecc') return undefined;
  const { size } = webcryptoCurve(ak.key.curveId);
  const r = toFixedSize(signature.r, size);
  const s = toFixedSize(signature.s, size);
  if (r === undefined || s === undefined) return undefined;
  const raw = new Uint8Array(2 * size);
  raw.set(r, 0);
  raw.set(s, size);

  return raw;
}

/** The checks on the (signed) content: magic, type, nonce, qualified signer, pcrDigest. */
function checkAttest(attest: Attest, input: QuoteInput, hashAlg: HashAlg): QuoteFailure[] {
  const failures: QuoteFailure[] = [];
  if (attest.magic !== TPM_GENERATED_VALUE) {
    failures.push({ code: 'QUOTE_BAD_MAGIC', message: `magic 0x${attest.magic.toString(16)}` });
  }
  if (attest.type !== TPM_ST_ATTEST.QUOTE) {
    failures.push({ code: 'QUOTE_NOT_A_QUOTE', message: `attestation type 0x${attest.type.toString(16)}` });
  }
  if (input.nonce !== undefined && !bytesEqual(input.nonce, attest.extraData)) {
    failures.push({
      code: 'QUOTE_NONCE_MISMATCH',
      message: `extraData ${toHex(attest.extraData)}, expected ${toHex(input.nonce)}`,
    });
  }
  const signer = input.expectedQualifiedSigner;
  if (signer !== undefined && !bytesEqual(signer, attest.qualifiedSigner)) {
    failures.push({
      code: 'QUOTE_SIGNER_MISMATCH',
      message: `qualifiedSigner ${toHex(attest.qualifiedSigner)}`,
    });
  }
  if (input.pcrValues !== undefined && attest.quote !== undefined) {
    failures.push(...checkPcrDigest(attest, input.pcrValues, hashAlg));
  }

  return failures;
}

function checkPcrDigest(attest: Attest, values: PcrValues, hashAlg: HashAlg): QuoteFailure[] {
  const quote = attest.quote!;
  const digest = computePcrDigest(quote.pcrSelection, values, hashAlg);
  if (!(digest instanceof Uint8Array)) {
    const list = digest.missing.map(({ bank, pcr }) => `${bank}:${pcr}`).join(', ');
    return [{ code: 'QUOTE_PCRS_MISSING', message: `no value for ${list}` }];
  }
  if (!bytesEqual(digest, quote.pcrDigest)) {
    return [
      {
        code: 'QUOTE_PCR_DIGEST_MISMATCH',
        message: `pcrDigest ${toHex(quote.pcrDigest)}, values give ${toHex(digest)}`,
      },
    ];
  }

  return [];
}
