import type { Reader } from '../bytes/reader.ts';
import { ImastreamError } from '../errors.ts';
import { type HashAlg, hashAlgFromTpm } from '../hash.ts';
import { algName, LIMITS, TPM_ALG } from './constants.ts';
import { expectEnd, readTpm2b, tpmReader } from './marshal.ts';

/** A quote signature imastream can verify. The bytes are untrusted until verified. */
export type TpmSignature =
  | { sigAlg: 'rsassa' | 'rsapss'; hashAlg: HashAlg; sig: Uint8Array }
  | { sigAlg: 'ecdsa'; hashAlg: HashAlg; r: Uint8Array; s: Uint8Array };

/** The signature schemes imastream verifies. */
export type SigAlg = TpmSignature['sigAlg'];

/** Signature algorithms a TPM may use that WebCrypto cannot verify: recognised, then refused. */
const REFUSED: ReadonlyMap<number, string> = new Map([
  [TPM_ALG.ECDAA, 'ecdaa'],
  [TPM_ALG.SM2, 'sm2'],
  [TPM_ALG.ECSCHNORR, 'ecschnorr'],
  [TPM_ALG.HMAC, 'hmac'],
  [TPM_ALG.NULL, 'null'],
]);

/*
 * TPMT_SIGNATURE (TCG Part 2, 11.3.4), big-endian; the `tpm2_quote -s` file in `tss` format:
 *   sigAlg      TPMI_ALG_SIG_SCHEME  u16
 *   signature   TPMU_SIGNATURE, selected by sigAlg:
 *     RSASSA, RSAPSS   TPMS_SIGNATURE_RSA: hash u16, sig TPM2B_PUBLIC_KEY_RSA
 *     ECDSA            TPMS_SIGNATURE_ECC: hash u16, signatureR, signatureS TPM2B_ECC_PARAMETER
 *     ECDAA, SM2, ECSCHNORR (as ECDSA), HMAC (TPMT_HA), NULL (empty): refused
 */
export function parseSignature(bytes: Uint8Array): TpmSignature {
  const r = tpmReader(bytes);
  const sigAlgId = r.u16be('TPMT_SIGNATURE.sigAlg');
  const refused = REFUSED.get(sigAlgId);
  if (refused !== undefined) {
    throw new ImastreamError(
      'IMS_TPM_UNSUPPORTED_ALG',
      `${algName(sigAlgId)} signatures cannot be verified`,
      {
        details: { sigAlg: refused, offset: 0 },
      },
    );
  }
  const signature = readSignatureBody(r, sigAlgId);
  expectEnd(r, 'TPMT_SIGNATURE');

  return signature;
}

function readSignatureBody(r: Reader, sigAlgId: number): TpmSignature {
  if (sigAlgId === TPM_ALG.RSASSA || sigAlgId === TPM_ALG.RSAPSS) {
    const hashAlg = readSigHash(r);
    const sig = readTpm2b(r, LIMITS.rsaKey, 'TPMS_SIGNATURE_RSA.sig', 'IMS_TPM_BAD_SIGNATURE_FORMAT');
    return { sigAlg: sigAlgId === TPM_ALG.RSASSA ? 'rsassa' : 'rsapss', hashAlg, sig: sig.slice() };
  }
  if (sigAlgId === TPM_ALG.ECDSA) {
    const hashAlg = readSigHash(r);
    const sigR = readTpm2b(
      r,
      LIMITS.eccParameter,
      'TPMS_SIGNATURE_ECC.signatureR',
      'IMS_TPM_BAD_SIGNATURE_FORMAT',
    );
    const sigS = readTpm2b(
      r,
      LIMITS.eccParameter,
      'TPMS_SIGNATURE_ECC.signatureS',
      'IMS_TPM_BAD_SIGNATURE_FORMAT',
    );
    return { sigAlg: 'ecdsa', hashAlg, r: sigR.slice(), s: sigS.slice() };
  }
  throw new ImastreamError('IMS_TPM_BAD_SIGNATURE_FORMAT', `unknown sigAlg ${algName(sigAlgId)}`, {
    details: { offset: 0, sigAlg: sigAlgId },
  });
}

function readSigHash(r: Reader): HashAlg {
  const offset = r.position;
  const id = r.u16be('TPMT_SIGNATURE.hash');
  const alg = hashAlgFromTpm(id);
  if (alg === undefined) {
    throw new ImastreamError('IMS_TPM_UNSUPPORTED_ALG', `signature hash ${algName(id)} is not supported`, {
      details: { offset, hashAlg: id },
    });
  }

  return alg;
}
