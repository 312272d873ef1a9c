import {
  constants,
  createCipheriv,
  createECDH,
  createHmac,
  createPublicKey,
  publicEncrypt,
  randomBytes,
} from 'node:crypto';
import { ImastreamError } from '../errors.ts';
import { digestSize, type HashAlg, hashAlgFromTpm } from '../hash.ts';
import { algName, TPM_ALG, TPM_ECC_CURVE } from './constants.ts';
import { kdfA, kdfE } from './kdf.ts';
import { toFixedSize, toJwk, webcryptoCurve } from './key.ts';
import { concat, expectEnd, readTpm2b, tpmReader, u16be, u32be } from './marshal.ts';
import { hasAttribute, type TpmPublic } from './public.ts';

/**
 * Software TPM2_MakeCredential (TCG Part 1, 24 "Credential Protection"; Part 3, 12.6): wraps a
 * secret so that only the TPM holding the EK can recover it, and only for an object with the
 * given Name loaded in that TPM. It is how enrolment binds an AK to an EK: the host proves both
 * keys are in one TPM by returning the secret.
 *
 * Nothing here is secret from the host except what the EK protects; the caller keeps `secret`
 * and compares the host's answer with it.
 */
export interface Credential {
  /** TPM2B_ID_OBJECT: u16be size ‖ TPM2B integrity HMAC ‖ encrypted identity. */
  idObject: Uint8Array;
  /** TPM2B_ENCRYPTED_SECRET: u16be size ‖ RSA-OAEP ciphertext or ephemeral TPMS_ECC_POINT. */
  encryptedSecret: Uint8Array;
}

/** Magic and version of the tpm2-tools credential file (`tpm2_makecredential -o`). */
const FILE_MAGIC = 0xbadcc0de;
const FILE_VERSION = 1;

/** Bounds from Part 2: TPMS_ID_OBJECT (two SHA-512 sized TPM2Bs), TPMU_ENCRYPTED_SECRET (RSA-4096). */
const MAX_ID_OBJECT = 2 * (2 + 64);
const MAX_ENCRYPTED_SECRET = 512;

const IDENTITY_LABEL = 'IDENTITY\0';

/**
 * Makes a credential for `akName` under `ek` carrying `secret`. `ek` must be a restricted
 * decryption key with an AES-CFB symmetric (any TCG EK template is); `secret` is 1 to
 * digestSize(ek.nameAlg) bytes, as TPM2_ActivateCredential refuses longer ones.
 *
 * Nothing is checked about the EK's provenance: that is the EK certificate's job (ek-cert.ts).
 */
export function makeCredential(ek: TpmPublic, akName: Uint8Array, secret: Uint8Array): Credential {
  const aes = ekSymmetric(ek);
  checkSecret(ek.nameAlg, secret);
  checkName(akName);

  const { seed, encSeed } = ek.key.type === 'rsa' ? rsaSeed(ek) : eccSeed(ek);
  const symKey = kdfA(ek.nameAlg, seed, 'STORAGE', akName, new Uint8Array(0), aes.keyBits);
  const encIdentity = aesCfb(aes.keyBits, symKey, concat(u16be(secret.byteLength), secret));
  const hmacKey = kdfA(
    ek.nameAlg,
    seed,
    'INTEGRITY',
    new Uint8Array(0),
    new Uint8Array(0),
    8 * digestSize(ek.nameAlg),
  );
  const integrity = createHmac(ek.nameAlg, hmacKey).update(encIdentity).update(akName).digest();

  const idBody = concat(u16be(integrity.byteLength), integrity, encIdentity);

  return {
    idObject: concat(u16be(idBody.byteLength), idBody),
    encryptedSecret: concat(u16be(encSeed.byteLength), encSeed),
  };
}

/*
 * tpm2-tools credential file (tpm2-tools lib/files.c, files_save_credential / tpm2_makecredential):
 *   magic    u32be  0xBADCC0DE
 *   version  u32be  1
 *   credentialBlob  TPM2B_ID_OBJECT
 *   secret          TPM2B_ENCRYPTED_SECRET
 */
export function credentialFile(credential: Credential): Uint8Array {
  return concat(u32be(FILE_MAGIC), u32be(FILE_VERSION), credential.idObject, credential.encryptedSecret);
}

/** Parses a tpm2-tools credential file (layout above); hostile input is refused with offsets. */
export function parseCredentialFile(bytes: Uint8Array): Credential {
  const r = tpmReader(bytes);
  const magic = r.u32be('credential.magic');
  const version = r.u32be('credential.version');
  if (magic !== FILE_MAGIC || version !== FILE_VERSION) {
    throw badCredential(
      `not a version 1 credential file (magic 0x${magic.toString(16)}, version ${version})`,
      {
        offset: 0,
      },
    );
  }
  const idStart = r.position;
  const id = readTpm2b(r, MAX_ID_OBJECT, 'TPM2B_ID_OBJECT', 'IMS_TPM_BAD_CREDENTIAL');
  const secretStart = r.position;
  const secret = readTpm2b(r, MAX_ENCRYPTED_SECRET, 'TPM2B_ENCRYPTED_SECRET', 'IMS_TPM_BAD_CREDENTIAL');
  expectEnd(r, 'credential file');

  return {
    idObject: bytes.slice(idStart, idStart + 2 + id.byteLength),
    encryptedSecret: bytes.slice(secretStart, secretStart + 2 + secret.byteLength),
  };
}

/* The EK's TPMT_SYM_DEF_OBJECT must be AES in CFB mode; the TPM uses it for the identity. */
function ekSymmetric(ek: TpmPublic): { keyBits: 128 | 192 | 256 } {
  if (!hasAttribute(ek, 'restricted') || !hasAttribute(ek, 'decrypt')) {
    throw new ImastreamError('IMS_TPM_BAD_EK', 'the EK is not a restricted decryption key', {
      details: { objectAttributes: ek.objectAttributes },
    });
  }
  const sym = ek.symmetric;
  const keyBits = sym?.keyBits;
  if (sym === null || sym.algorithm !== TPM_ALG.AES || sym.mode !== TPM_ALG.CFB || !isAesSize(keyBits)) {
    const what =
      sym === null ? 'TPM_ALG_NULL' : `${algName(sym.algorithm)}-${sym.keyBits}-${algName(sym.mode)}`;
    throw new ImastreamError('IMS_TPM_UNSUPPORTED_ALG', `EK symmetric ${what} is not AES-CFB`, {
      details: { symmetric: sym },
    });
  }

  return { keyBits };
}

function isAesSize(bits: number | undefined): bits is 128 | 192 | 256 {
  return bits === 128 || bits === 192 || bits === 256;
}

function checkSecret(nameAlg: HashAlg, secret: Uint8Array): void {
  const max = digestSize(nameAlg);
  if (secret.byteLength === 0 || secret.byteLength > max) {
    throw badCredential(`secret of ${secret.byteLength} bytes; 1 to ${max} allowed for ${nameAlg}`, {
      secretSize: secret.byteLength,
      max,
    });
  }
}

/** An object Name: nameAlg u16be ‖ digest of that algorithm's size (handles are not Names here). */
function checkName(name: Uint8Array): void {
  const id = name.byteLength >= 2 ? (name[0]! << 8) | name[1]! : -1;
  const alg = hashAlgFromTpm(id);
  if (alg === undefined || name.byteLength !== 2 + digestSize(alg)) {
    throw badCredential(`AK name of ${name.byteLength} bytes is not nameAlg ‖ digest`, {
      nameSize: name.byteLength,
      nameAlg: id,
    });
  }
}

/* RSA EK: seed encrypted with RSA-OAEP (hash and MGF1 = nameAlg, label "IDENTITY\0"). */
function rsaSeed(ek: TpmPublic): { seed: Uint8Array; encSeed: Uint8Array } {
  const seed = randomBytes(digestSize(ek.nameAlg));
  let encSeed: Buffer;
  try {
    const key = createPublicKey({ key: toJwk(ek.key), format: 'jwk' });
    encSeed = publicEncrypt(
      {
        key,
        padding: constants.RSA_PKCS1_OAEP_PADDING,
        oaepHash: ek.nameAlg,
        oaepLabel: Buffer.from(IDENTITY_LABEL),
      },
      seed,
    );
  } catch (cause) {
    throw new ImastreamError('IMS_TPM_BAD_PUBLIC', 'EK RSA key cannot encrypt the seed', { cause });
  }

  return { seed, encSeed };
}

const NODE_CURVES: ReadonlyMap<number, string> = new Map([
  [TPM_ECC_CURVE.NIST_P256, 'prime256v1'],
  [TPM_ECC_CURVE.NIST_P384, 'secp384r1'],
  [TPM_ECC_CURVE.NIST_P521, 'secp521r1'],
]);

/*
 * ECC EK: one-pass ECDH (Part 1, C.6.4). An ephemeral key on the EK's curve; Z = x of the shared
 * point; seed = KDFe(nameAlg, Z, "IDENTITY", ephemeral.x, EK.x). The encrypted "secret" is the
 * ephemeral public point as a TPMS_ECC_POINT (TPM2B x ‖ TPM2B y, coordinate-sized).
 */
function eccSeed(ek: TpmPublic): { seed: Uint8Array; encSeed: Uint8Array } {
  if (ek.key.type !== 'ecc') throw new Error('unreachable: eccSeed on a non-ECC key');
  const { size } = webcryptoCurve(ek.key.curveId);
  const curve = NODE_CURVES.get(ek.key.curveId)!;
  const ekX = toFixedSize(ek.key.x, size);
  const ekY = toFixedSize(ek.key.y, size);
  if (ekX === undefined || ekY === undefined) {
    throw new ImastreamError('IMS_TPM_BAD_PUBLIC', 'EK point coordinate is longer than the curve');
  }

  const ephemeral = createECDH(curve);
  const ephemeralPoint = ephemeral.generateKeys();
  let z: Buffer;
  try {
    z = ephemeral.computeSecret(concat(Uint8Array.of(4), ekX, ekY));
  } catch (cause) {
    throw new ImastreamError('IMS_TPM_BAD_PUBLIC', 'EK point is not on its curve', { cause });
  }
  const ephX = ephemeralPoint.subarray(1, 1 + size);
  const ephY = ephemeralPoint.subarray(1 + size);
  const seed = kdfE(ek.nameAlg, z, IDENTITY_LABEL, ephX, ek.key.x, 8 * digestSize(ek.nameAlg));

  return { seed, encSeed: concat(u16be(size), ephX, u16be(size), ephY) };
}

/** Full-block AES-CFB with a zero IV: what the TPM uses to protect the identity (Part 1, 24.4). */
function aesCfb(keyBits: 128 | 192 | 256, key: Uint8Array, plain: Uint8Array): Uint8Array {
  const cipher = createCipheriv(`aes-${keyBits}-cfb`, key, Buffer.alloc(16));

  return concat(cipher.update(plain), cipher.final());
}

function badCredential(message: string, details: Record<string, unknown>): ImastreamError {
  return new ImastreamError('IMS_TPM_BAD_CREDENTIAL', message, { details });
}
