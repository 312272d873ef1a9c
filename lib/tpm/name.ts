import { ImastreamError } from '../errors.ts';
import { digestSize, type HashAlg, hash, hashAlgFromTpm, tpmAlgId } from '../hash.ts';
import { HIERARCHY_HANDLE, type Hierarchy } from './constants.ts';
import { concat, u16be, u32be } from './marshal.ts';

/*
 * Names (TCG Part 1, 16 "Names"):
 *   Name           = nameAlg (u16be) ‖ H_nameAlg(TPMT_PUBLIC)   — the public area without its TPM2B size
 *   Qualified name = nameAlg ‖ H_nameAlg(QN_parent ‖ Name)
 *   QN of a hierarchy = its 4-byte handle (e.g. endorsement 0x4000000B)
 * TPMS_ATTEST.qualifiedSigner is the signer's qualified name, so a quote by an AK under the EK
 * carries H(QN_EK ‖ Name_AK), never the AK's Name.
 */

/** The Name of an object from its TPMT_PUBLIC bytes (what `tpm2_createak -n` writes). */
export function objectName(tpmtPublic: Uint8Array, nameAlg: HashAlg): Uint8Array {
  return concat(u16be(tpmAlgId(nameAlg)), hash(nameAlg, tpmtPublic));
}

/** The qualified name of an object whose parent has qualified name `parentQN`. */
export function qualifiedName(parentQN: Uint8Array, name: Uint8Array): Uint8Array {
  const nameAlg = nameAlgOf(name);

  return concat(name.subarray(0, 2), hash(nameAlg, parentQN, name));
}

/** The qualified name of a hierarchy: its handle, the parent QN of a primary key. */
export function hierarchyQualifiedName(hierarchy: Hierarchy): Uint8Array {
  return u32be(HIERARCHY_HANDLE[hierarchy]);
}

/** The qualified name along a chain: hierarchy, then each object's Name from the primary down. */
export function qualifiedNameOfChain(hierarchy: Hierarchy, names: Uint8Array[]): Uint8Array {
  return names.reduce((qn, name) => qualifiedName(qn, name), hierarchyQualifiedName(hierarchy));
}

function nameAlgOf(name: Uint8Array): HashAlg {
  const id = name.byteLength >= 2 ? (name[0]! << 8) | name[1]! : -1;
  const alg = hashAlgFromTpm(id);
  if (alg === undefined || name.byteLength !== 2 + digestSize(alg)) {
    throw new ImastreamError(
      'IMS_TPM_BAD_PUBLIC',
      `not a Name: ${name.byteLength} bytes, alg 0x${id.toString(16)}`,
    );
  }

  return alg;
}
