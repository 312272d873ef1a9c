import assert from 'node:assert/strict';
import {
  constants,
  createDecipheriv,
  createECDH,
  createHmac,
  generateKeyPairSync,
  type KeyObject,
  privateDecrypt,
} from 'node:crypto';
import { bytesEqual, fromHex } from '../../lib/bytes/hex.ts';
import { digestSize } from '../../lib/hash.ts';
import { type Credential, parseCredentialFile } from '../../lib/tpm/credential.ts';
import { kdfA, kdfE } from '../../lib/tpm/kdf.ts';
import { concat, u16be, u32be } from '../../lib/tpm/marshal.ts';
import type { TpmPublic } from '../../lib/tpm/public.ts';

/**
 * Unit-test stand-ins for what a TPM holds: EK and AK public areas built from Node key pairs,
 * and TPM2_ActivateCredential done in software with the EK private key (TCG Part 1, 24). The
 * real TPM is the oracle in test/integration/enrol-*.test.ts; this is only for pure-logic tests.
 */

/** TCG default EK policy: PolicySecret(TPM_RH_ENDORSEMENT). */
const EK_POLICY = fromHex('837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa');
export const EK_ATTRIBUTES = 0x000300b2;
/** fixedTPM, fixedParent, sensitiveDataOrigin, userWithAuth, restricted, sign (tpm2_createak). */
export const AK_ATTRIBUTES = 0x00050072;
export const AES_128_CFB = concat(u16be(0x0006), u16be(128), u16be(0x0043));
const NULL = u16be(0x0010);

function b64u(s: string): Uint8Array {
  return new Uint8Array(Buffer.from(s, 'base64url'));
}

/*
 * TPMT_PUBLIC: type ‖ nameAlg ‖ attributes u32 ‖ TPM2B authPolicy ‖ symmetric ‖ scheme ‖
 *   RSA: keyBits ‖ exponent 0 ‖ TPM2B modulus        ECC: curve ‖ kdf NULL ‖ TPM2B x ‖ TPM2B y
 */
function tpmtPublic(
  key: KeyObject,
  attributes: number,
  policy: Uint8Array,
  sym: Uint8Array,
  scheme: Uint8Array,
) {
  const jwk = key.export({ format: 'jwk' });
  const head = (type: number) =>
    concat(u16be(type), u16be(0x000b), u32be(attributes), u16be(policy.length), policy);
  if (jwk.kty === 'RSA') {
    const n = b64u(jwk.n!);
    return concat(head(0x0001), sym, scheme, u16be(n.length * 8), u32be(0), u16be(n.length), n);
  }
  const curve = jwk.crv === 'P-256' ? 0x0003 : 0x0004;
  const x = b64u(jwk.x!);
  const y = b64u(jwk.y!);
  return concat(head(0x0023), sym, scheme, u16be(curve), NULL, u16be(x.length), x, u16be(y.length), y);
}

/** TPMT_PUBLIC of an EK in the TCG template shape for `key`. */
export function ekPublicBytes(key: KeyObject, opts: { attributes?: number; symmetric?: Uint8Array } = {}) {
  return tpmtPublic(key, opts.attributes ?? EK_ATTRIBUTES, EK_POLICY, opts.symmetric ?? AES_128_CFB, NULL);
}

/** TPM2B_PUBLIC of an AK as tpm2_createak makes it (RSASSA or ECDSA with SHA-256). */
export function akPublicBytes(key: KeyObject, attributes = AK_ATTRIBUTES): Uint8Array {
  const scheme = key.asymmetricKeyType === 'rsa' ? 0x0014 : 0x0018;
  const tpmt = tpmtPublic(key, attributes, new Uint8Array(), NULL, concat(u16be(scheme), u16be(0x000b)));
  return concat(u16be(tpmt.length), tpmt);
}

/** A software TPM: one EK key pair, ActivateCredential for it. */
export class SoftTpm {
  readonly ek: { publicKey: KeyObject; privateKey: KeyObject };
  constructor(kind: 'rsa' | 'ecc' = 'rsa') {
    this.ek =
      kind === 'rsa'
        ? generateKeyPairSync('rsa', { modulusLength: 2048 })
        : generateKeyPairSync('ec', { namedCurve: 'P-256' });
  }

  get ekPublic(): Uint8Array {
    return ekPublicBytes(this.ek.publicKey);
  }

  /** TPM2_ActivateCredential; throws like the TPM would when the integrity check fails. */
  activate(ek: TpmPublic, akName: Uint8Array, credential: Credential | Uint8Array): Uint8Array {
    const cred = credential instanceof Uint8Array ? parseCredentialFile(credential) : credential;
    const alg = ek.nameAlg;
    const encSeed = cred.encryptedSecret.subarray(2);
    const seed = ek.key.type === 'rsa' ? this.rsaSeed(encSeed) : this.eccSeed(ek, encSeed);
    const id = cred.idObject.subarray(2);
    const integritySize = (id[0]! << 8) | id[1]!;
    const integrity = id.subarray(2, 2 + integritySize);
    const encIdentity = id.subarray(2 + integritySize);
    const hmacKey = kdfA(alg, seed, 'INTEGRITY', new Uint8Array(), new Uint8Array(), 8 * digestSize(alg));
    const expected = createHmac(alg, hmacKey).update(encIdentity).update(akName).digest();
    if (!bytesEqual(expected, integrity))
      throw new Error('TPM_RC_INTEGRITY: credential is not for this AK/EK');
    const symKey = kdfA(alg, seed, 'STORAGE', akName, new Uint8Array(), 128);
    const d = createDecipheriv('aes-128-cfb', symKey, Buffer.alloc(16));
    const plain = concat(d.update(encIdentity), d.final());
    const size = (plain[0]! << 8) | plain[1]!;
    assert.equal(plain.length, 2 + size);
    return plain.subarray(2);
  }

  private rsaSeed(encSeed: Uint8Array): Uint8Array {
    const label = Buffer.from('IDENTITY\0');
    const opts = {
      key: this.ek.privateKey,
      padding: constants.RSA_PKCS1_OAEP_PADDING,
      oaepHash: 'sha256',
      oaepLabel: label,
    };
    return privateDecrypt(opts, encSeed);
  }

  private eccSeed(ek: TpmPublic, encSeed: Uint8Array): Uint8Array {
    if (ek.key.type !== 'ecc') throw new Error('not ECC');
    const size = (encSeed[0]! << 8) | encSeed[1]!;
    const x = encSeed.subarray(2, 2 + size);
    const y = encSeed.subarray(4 + size);
    const ecdh = createECDH('prime256v1');
    ecdh.setPrivateKey(b64u(this.ek.privateKey.export({ format: 'jwk' }).d!));
    const z = ecdh.computeSecret(concat(Uint8Array.of(4), x, y));
    return kdfE(ek.nameAlg, z, 'IDENTITY', x, ek.key.x, 8 * digestSize(ek.nameAlg));
  }
}
