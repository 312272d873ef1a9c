/**
 * TPM 2.0 constants used by the structure parsers, with the values of TCG "TPM 2.0 Library,
 * Part 2: Structures" (rev 1.59): TPM_ALG_ID (6.3), TPM_ST (6.9), TPM_GENERATED (6.2),
 * TPM_RH (7.4) and TPMA_OBJECT (8.3). Hash algorithm ids live in lib/hash.ts with the banks.
 */

/** TPM_GENERATED_VALUE: "\xffTCG", the first four bytes of everything a TPM signs itself. */
export const TPM_GENERATED_VALUE = 0xff544347;

/** TPM_ALG_ID values for keys, schemes and symmetric modes. */
export const TPM_ALG = {
  RSA: 0x0001,
  HMAC: 0x0005,
  AES: 0x0006,
  KEYEDHASH: 0x0008,
  NULL: 0x0010,
  RSASSA: 0x0014,
  RSAES: 0x0015,
  RSAPSS: 0x0016,
  OAEP: 0x0017,
  ECDSA: 0x0018,
  ECDH: 0x0019,
  ECDAA: 0x001a,
  SM2: 0x001b,
  ECSCHNORR: 0x001c,
  KDF1_SP800_56A: 0x0020,
  KDF2: 0x0021,
  KDF1_SP800_108: 0x0022,
  ECC: 0x0023,
  SYMCIPHER: 0x0025,
  CFB: 0x0043,
} as const;

/** TPMI_ST_ATTEST: the `type` of a TPMS_ATTEST. */
export const TPM_ST_ATTEST = {
  NV: 0x8014,
  COMMAND_AUDIT: 0x8015,
  SESSION_AUDIT: 0x8016,
  CERTIFY: 0x8017,
  QUOTE: 0x8018,
  TIME: 0x8019,
  CREATION: 0x801a,
  NV_DIGEST: 0x801c,
} as const;

/** A TPMI_ST_ATTEST value this code knows by name. */
export type AttestType = (typeof TPM_ST_ATTEST)[keyof typeof TPM_ST_ATTEST];

const ATTEST_TYPES: ReadonlySet<number> = new Set(Object.values(TPM_ST_ATTEST));

/** Whether `st` is one of the attestation types of Part 2, 10.12.12. */
export function isAttestType(st: number): st is AttestType {
  return ATTEST_TYPES.has(st);
}

/** Permanent hierarchy handles (TPM_RH), the parents of primary keys in a qualified name. */
export const TPM_RH = {
  OWNER: 0x40000001,
  NULL: 0x40000007,
  ENDORSEMENT: 0x4000000b,
  PLATFORM: 0x4000000c,
} as const;

/** The hierarchies a primary key (and so a qualified name chain) can start from. */
export type Hierarchy = 'owner' | 'null' | 'endorsement' | 'platform';

/** Handle of each hierarchy: the qualified name of its primary keys' parent. */
export const HIERARCHY_HANDLE: Readonly<Record<Hierarchy, number>> = {
  owner: TPM_RH.OWNER,
  null: TPM_RH.NULL,
  endorsement: TPM_RH.ENDORSEMENT,
  platform: TPM_RH.PLATFORM,
};

/** TPMA_OBJECT bits (Part 2, 8.3.2). */
export const TPMA_OBJECT = {
  fixedTPM: 1 << 1,
  stClear: 1 << 2,
  fixedParent: 1 << 4,
  sensitiveDataOrigin: 1 << 5,
  userWithAuth: 1 << 6,
  adminWithPolicy: 1 << 7,
  noDA: 1 << 10,
  encryptedDuplication: 1 << 11,
  restricted: 1 << 16,
  decrypt: 1 << 17,
  sign: 1 << 18,
} as const;

/** Name of a TPMA_OBJECT bit. */
export type ObjectAttribute = keyof typeof TPMA_OBJECT;

/** TPM_ECC_CURVE ids (Part 2, 6.4); key.ts maps the NIST ones to WebCrypto curve names. */
export const TPM_ECC_CURVE = {
  NIST_P192: 0x0001,
  NIST_P224: 0x0002,
  NIST_P256: 0x0003,
  NIST_P384: 0x0004,
  NIST_P521: 0x0005,
  BN_P256: 0x0010,
  BN_P638: 0x0011,
  SM2_P256: 0x0020,
} as const;

/** Size limits from the reference implementation's TPM2B buffers (Part 2, 10.4 and 11.2). */
export const LIMITS = {
  /** TPM2B_NAME: nameAlg plus the largest digest (SHA-512). */
  name: 2 + 64,
  /** TPM2B_DATA (extraData / qualifyingData): sizeof(TPMT_HA). */
  data: 64,
  /** TPM2B_DIGEST: the largest digest. */
  digest: 64,
  /** TPM2B_PUBLIC_KEY_RSA: 4096-bit modulus. */
  rsaKey: 512,
  /** TPM2B_ECC_PARAMETER: P-521 / BN-638 coordinate. */
  eccParameter: 80,
  /** TPMS_ATTEST as a whole (TPM2B_ATTEST). */
  attest: 2048,
  /** TPMT_PUBLIC as a whole (TPM2B_PUBLIC). */
  publicArea: 1024,
  /** TPMS_ATTEST.attested for types we keep as raw bytes. */
  attested: 1024,
} as const;

/** A readable name for an algorithm id, for messages only. */
export function algName(id: number): string {
  for (const [name, value] of Object.entries(TPM_ALG)) {
    if (value === id) return `TPM_ALG_${name}`;
  }
  return `0x${id.toString(16).padStart(4, '0')}`;
}
