import type { Reader } from '../bytes/reader.ts';
import { ImastreamError } from '../errors.ts';
import { type HashAlg, hashAlgFromTpm, isHashAlg, tpmAlgId } from '../hash.ts';
import { concat, u16be, u32be } from './marshal.ts';

/**
 * Which PCRs of which banks, in TPML order. A bank the TPM named with an algorithm imastream
 * does not know stays a numeric TPM_ALG_ID (see {@link unknownBanks}); its PCRs cannot be
 * matched against values, but the selection is still exactly what the TPM signed.
 */
export type PcrSelection = { bank: HashAlg | number; pcrs: number[] }[];

/** TPML_PCR_SELECTION.count is bounded by HASH_COUNT; 16 is the reference implementation's. */
export const MAX_SELECTION_BANKS = 16;
/** sizeofSelect ≤ 4 covers PCRs 0..31 (PCR_SELECT_MAX for a 24-PCR TPM is 3). */
export const MAX_SIZEOF_SELECT = 4;

/*
 * TPML_PCR_SELECTION (TCG Part 2, 10.9.7), big-endian:
 *   count          u32            number of TPMS_PCR_SELECTION that follow (≤ HASH_COUNT)
 *   pcrSelections[count]:
 *     hash         TPMI_ALG_HASH  u16, the bank
 *     sizeofSelect u8             bytes in the bitmap (≥ PCR_SELECT_MIN = 3 on PC clients)
 *     pcrSelect    u8[sizeofSelect]  PCR i is bit (i % 8) of byte (i / 8)
 */
export function readPcrSelection(r: Reader): PcrSelection {
  const offset = r.position;
  const count = r.u32be('TPML_PCR_SELECTION.count');
  if (count > MAX_SELECTION_BANKS) {
    throw badSelection(`count ${count} exceeds ${MAX_SELECTION_BANKS}`, offset);
  }
  const selection: PcrSelection = [];
  for (let i = 0; i < count; i++) {
    selection.push(readOneSelection(r));
  }

  return selection;
}

function readOneSelection(r: Reader): { bank: HashAlg | number; pcrs: number[] } {
  const algId = r.u16be('TPMS_PCR_SELECTION.hash');
  const sizeOffset = r.position;
  const sizeofSelect = r.u8('TPMS_PCR_SELECTION.sizeofSelect');
  if (sizeofSelect > MAX_SIZEOF_SELECT) {
    throw badSelection(`sizeofSelect ${sizeofSelect} exceeds ${MAX_SIZEOF_SELECT}`, sizeOffset);
  }
  const bitmap = r.bytes(sizeofSelect, 'TPMS_PCR_SELECTION.pcrSelect');

  return { bank: hashAlgFromTpm(algId) ?? algId, pcrs: pcrsOfBitmap(bitmap) };
}

/** PCR indices set in a pcrSelect bitmap, ascending. */
export function pcrsOfBitmap(bitmap: Uint8Array): number[] {
  const pcrs: number[] = [];
  for (let byte = 0; byte < bitmap.byteLength; byte++) {
    for (let bit = 0; bit < 8; bit++) {
      if (((bitmap[byte] ?? 0) >> bit) & 1) pcrs.push(byte * 8 + bit);
    }
  }

  return pcrs;
}

/** Encodes a selection as TPML_PCR_SELECTION, with at least 3 bitmap bytes as PC-client TPMs expect. */
export function encodePcrSelection(selection: PcrSelection): Uint8Array {
  if (selection.length > MAX_SELECTION_BANKS) throw badSelection(`${selection.length} banks`, 0);
  const parts = [u32be(selection.length)];
  for (const { bank, pcrs } of selection) {
    const algId = typeof bank === 'number' ? bank : tpmAlgId(bank);
    const bitmap = bitmapOfPcrs(pcrs);
    parts.push(u16be(algId), Uint8Array.of(bitmap.byteLength), bitmap);
  }

  return concat(...parts);
}

function bitmapOfPcrs(pcrs: number[]): Uint8Array {
  const highest = Math.max(23, ...pcrs);
  if (highest >= MAX_SIZEOF_SELECT * 8 || pcrs.some((p) => !Number.isInteger(p) || p < 0)) {
    throw badSelection(`PCR index out of range in [${pcrs.join(',')}]`, 0);
  }
  const bitmap = new Uint8Array(Math.ceil((highest + 1) / 8));
  for (const pcr of pcrs) bitmap[pcr >> 3] = (bitmap[pcr >> 3] ?? 0) | (1 << (pcr & 7));

  return bitmap;
}

/** Banks of the selection that imastream cannot hash, as TPM_ALG_IDs. */
export function unknownBanks(selection: PcrSelection): number[] {
  return selection.flatMap(({ bank }) => (typeof bank === 'number' ? [bank] : []));
}

/**
 * Parses a tpm2-tools selection string, `sha1:10+sha256:0,10` (banks joined by `+`, PCRs by `,`,
 * ranges like `0-7` allowed). The order of banks is kept, PCRs are sorted and deduplicated.
 */
export function parseSelectionSpec(spec: string): PcrSelection {
  const selection: PcrSelection = [];
  for (const part of spec.split('+')) {
    const [bank, list, ...rest] = part.trim().split(':');
    if (bank === undefined || list === undefined || rest.length > 0 || !isHashAlg(bank)) {
      throw badSelection(`'${part}' is not BANK:PCRS`, 0);
    }
    selection.push({ bank, pcrs: parsePcrList(list) });
  }
  if (selection.length > MAX_SELECTION_BANKS) throw badSelection(`${selection.length} banks`, 0);

  return selection;
}

function parsePcrList(list: string): number[] {
  const pcrs = new Set<number>();
  for (const item of list.split(',')) {
    const m = /^(\d{1,2})(?:-(\d{1,2}))?$/.exec(item.trim());
    if (m === null) throw badSelection(`'${item}' is not a PCR or range`, 0);
    const from = Number(m[1]);
    const to = m[2] === undefined ? from : Number(m[2]);
    if (to < from || to >= MAX_SIZEOF_SELECT * 8) throw badSelection(`PCR range '${item}'`, 0);
    for (let p = from; p <= to; p++) pcrs.add(p);
  }

  return [...pcrs].sort((a, b) => a - b);
}

/** tpm2-tools spelling of a selection, `sha1:10+sha256:0,10`. */
export function formatSelectionSpec(selection: PcrSelection): string {
  return selection.map(({ bank, pcrs }) => `${bank}:${pcrs.join(',')}`).join('+');
}

function badSelection(message: string, offset: number): ImastreamError {
  return new ImastreamError('IMS_TPM_BAD_PCR_SELECTION', `TPML_PCR_SELECTION: ${message}`, {
    details: { offset },
  });
}
