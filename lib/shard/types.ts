import type { HashAlg } from '../hash.ts';
import type { ByteOrder } from '../ima/record.ts';
import type { PcrValues } from '../pcr.ts';

/**
 * How the kernel extended non-SHA-1 banks (DOMAIN §2.1): `perbank` = H_b(template data) (≥ 5.8),
 * `padded` = SHA-1 template digest zero-padded (4.11–5.7). Null while no quote has told them
 * apart, for example when only the SHA-1 bank is quoted (both schemes agree there).
 */
export type ShardScheme = 'perbank' | 'padded' | null;

/** How to parse the raw records of a shard: the bank of their template-digest field and the order. */
export interface RecordFormat {
  /** `sha1` for the legacy file, else the `_<alg>` file's bank (digest field = its size). */
  digestAlg: HashAlg;
  /** Byte order of the integers inside the raw records (DOMAIN §1.3). */
  byteOrder: ByteOrder;
}

/**
 * The quote that closes a shard. Untrusted as stored: the signature, the nonce, the AK and the
 * PCR values are all checked by {@link verifyShardChain}; `pcrs` say nothing until their digest
 * equals the verified attest's pcrDigest.
 */
export interface ClosingQuote {
  /** TPMS_ATTEST bytes, as signed (tpm2_quote -m). */
  attest: Uint8Array;
  /** TPMT_SIGNATURE bytes (tpm2_quote -s, -f tss). */
  signature: Uint8Array;
  /** TPM2B_PUBLIC of the AK that signed (tpm2_createak -u, -f tss). */
  akPublic: Uint8Array;
  /** The qualifyingData the agent asked for; must equal the attest's extraData. */
  nonce: Uint8Array;
  /** PCR values read with the quote (scheme "tpm"): the shard's quoted end state. */
  pcrs: PcrValues;
}

/**
 * A sealed shard: records [startSeq, endSeq) of one boot of one host, the PCR state they start
 * from and the quote that closes them (DESIGN §4, DOMAIN §3.5). As decoded from a file it is a
 * claim; {@link verifyShardChain} is what turns it into a verdict.
 */
export interface SealedShard {
  hostId: string;
  bootId: string;
  /** Absolute seq of the first record (0 = the boot's boot_aggregate). */
  startSeq: number;
  /** Absolute seq after the last record; records.length === endSeq - startSeq. */
  endSeq: number;
  /** PCR values before the first record: the previous shard's quoted end, or zeros at seq 0. */
  startPcrs: PcrValues;
  /** The scheme the previous shards settled on, pinned for this one; null while unknown. */
  scheme: ShardScheme;
  recordFormat: RecordFormat;
  /** Raw binary records exactly as the kernel wrote them, one per element, any template mix. */
  records: Uint8Array[];
  closingQuote: ClosingQuote;
  /** Digest of the previous shard file of this boot; all zeros for the first shard of a boot. */
  prevShardDigest: Uint8Array;
}
