import type { Reader } from '../bytes/reader.ts';
import { ImastreamError } from '../errors.ts';
import { LIMITS, TPM_ST_ATTEST } from './constants.ts';
import { expectEnd, readTpm2b, tpmReader } from './marshal.ts';
import { type PcrSelection, readPcrSelection } from './pcr-selection.ts';

/**
 * TPMS_CLOCK_INFO. `resetCount`, `restartCount` (and the attest's `firmwareVersion`) are
 * obfuscated by the TPM unless the signing key is in the endorsement or platform hierarchy:
 * then they are stable per key but carry no absolute meaning.
 */
export interface ClockInfo {
  /** Milliseconds the TPM has been powered; may go backwards after an unorderly shutdown. */
  clock: bigint;
  /** +1 on every TPM Reset (the boot epoch); PCRs were reset. */
  resetCount: number;
  /** +1 on every TPM Restart/Resume; PCRs were kept; back to 0 on a reset. */
  restartCount: number;
  /** False when a reported clock may have been exceeded before. */
  safe: boolean;
}

/** TPMS_QUOTE_INFO: what a quote attests. */
export interface QuoteInfo {
  /** The selection the TPM actually quoted, which may differ from the one requested. */
  pcrSelection: PcrSelection;
  /** H_sig(selected PCR values), the hash being the signing scheme's. */
  pcrDigest: Uint8Array;
}

/**
 * A parsed TPMS_ATTEST. Nothing in it is trustworthy until its signature has been verified with
 * an enrolled AK and `magic`/`type` checked: use {@link verifyQuote} rather than reading it raw.
 */
export interface Attest {
  magic: number;
  /** TPMI_ST_ATTEST; 0x8018 for a quote. */
  type: number;
  /** The signing key's qualified name (not its Name). */
  qualifiedSigner: Uint8Array;
  /** qualifyingData from the caller: the verifier's nonce. */
  extraData: Uint8Array;
  clockInfo: ClockInfo;
  firmwareVersion: bigint;
  /** Present when `type` is a quote. */
  quote?: QuoteInfo;
  /** The raw `attested` union for types other than a quote. */
  attested?: Uint8Array;
}

/*
 * TPMS_ATTEST (TCG Part 2, 10.12.12), big-endian, no TPM2B_ATTEST size prefix
 * (this is what `tpm2_quote -m` writes):
 *   magic            TPM_GENERATED   u32 = 0xff544347
 *   type             TPMI_ST_ATTEST  u16
 *   qualifiedSigner  TPM2B_NAME      ≤ 2 + 64 bytes
 *   extraData        TPM2B_DATA      ≤ 64 bytes
 *   clockInfo        TPMS_CLOCK_INFO clock u64, resetCount u32, restartCount u32, safe u8
 *   firmwareVersion  u64
 *   attested         TPMU_ATTEST     for TPM_ST_ATTEST_QUOTE: TPMS_QUOTE_INFO =
 *                                      pcrSelect TPML_PCR_SELECTION, pcrDigest TPM2B_DIGEST
 * Other attestation types are kept as raw `attested` bytes.
 */
export function parseAttest(bytes: Uint8Array): Attest {
  if (bytes.byteLength > LIMITS.attest) {
    throw new ImastreamError(
      'IMS_TPM_BAD_ATTEST',
      `TPMS_ATTEST: ${bytes.byteLength} bytes exceeds ${LIMITS.attest}`,
    );
  }
  const r = tpmReader(bytes);
  const header = readHeader(r);
  if (header.type !== TPM_ST_ATTEST.QUOTE) {
    return { ...header, attested: r.bytes(r.remaining, 'TPMS_ATTEST.attested').slice() };
  }
  const quote = readQuoteInfo(r);
  expectEnd(r, 'TPMS_ATTEST');

  return { ...header, quote };
}

function readHeader(r: Reader): Omit<Attest, 'quote' | 'attested'> {
  const magic = r.u32be('TPMS_ATTEST.magic');
  const type = r.u16be('TPMS_ATTEST.type');
  const qualifiedSigner = readTpm2b(r, LIMITS.name, 'TPMS_ATTEST.qualifiedSigner', 'IMS_TPM_BAD_ATTEST');
  const extraData = readTpm2b(r, LIMITS.data, 'TPMS_ATTEST.extraData', 'IMS_TPM_BAD_ATTEST');
  const clockInfo = readClockInfo(r);
  const firmwareVersion = r.u64be('TPMS_ATTEST.firmwareVersion');

  return {
    magic,
    type,
    qualifiedSigner: qualifiedSigner.slice(),
    extraData: extraData.slice(),
    clockInfo,
    firmwareVersion,
  };
}

/* TPMS_CLOCK_INFO (Part 2, 10.11.1): clock u64, resetCount u32, restartCount u32, safe TPMI_YES_NO u8. */
function readClockInfo(r: Reader): ClockInfo {
  const clock = r.u64be('TPMS_CLOCK_INFO.clock');
  const resetCount = r.u32be('TPMS_CLOCK_INFO.resetCount');
  const restartCount = r.u32be('TPMS_CLOCK_INFO.restartCount');
  const safeOffset = r.position;
  const safe = r.u8('TPMS_CLOCK_INFO.safe');
  if (safe > 1) {
    throw new ImastreamError('IMS_TPM_BAD_ATTEST', `TPMS_CLOCK_INFO.safe is ${safe}, not YES/NO`, {
      details: { offset: safeOffset },
    });
  }

  return { clock, resetCount, restartCount, safe: safe === 1 };
}

/* TPMS_QUOTE_INFO (Part 2, 10.12.1): pcrSelect TPML_PCR_SELECTION, pcrDigest TPM2B_DIGEST. */
function readQuoteInfo(r: Reader): QuoteInfo {
  const pcrSelection = readPcrSelection(r);
  const pcrDigest = readTpm2b(r, LIMITS.digest, 'TPMS_QUOTE_INFO.pcrDigest', 'IMS_TPM_BAD_ATTEST');

  return { pcrSelection, pcrDigest: pcrDigest.slice() };
}
