import { fromHex } from '../bytes/hex.ts';
import { Reader } from '../bytes/reader.ts';
import { ImastreamError } from '../errors.ts';
import { digestSize, type HashAlg, hashAlgFromTpm, isHashAlg } from '../hash.ts';
import type { PcrValues } from '../pcr.ts';
import { MAX_SELECTION_BANKS, MAX_SIZEOF_SELECT, type PcrSelection, pcrsOfBitmap } from './pcr-selection.ts';

/**
 * PCR value files, as written by `tpm2_quote -o` / `tpm2_pcrread -o`, and a plain text form.
 * The values in them are claims of the host: they mean something only when they reproduce the
 * pcrDigest of a verified quote.
 */
export type PcrFileFormat = 'serialized' | 'values' | 'text';

/** PCR values from a file in `format`; `values` needs the quote's selection to cut the bytes. */
export function parsePcrFile(bytes: Uint8Array, format: PcrFileFormat, selection?: PcrSelection): PcrValues {
  if (format === 'serialized') return parseSerializedPcrs(bytes);
  if (format === 'text') return parseTextPcrs(new TextDecoder('utf-8', { fatal: false }).decode(bytes));
  if (selection === undefined) throw badFile('the values format needs the quote selection', 0);

  return parseValuesPcrs(bytes, selection);
}

/** Fixed sizes of tpm2-tools' in-memory structures (tss2 headers, x86-64 layout). */
const SELECTION_SLOT = 2 + 1 + 4 + 1; // hash u16, sizeofSelect u8, pcrSelect[4], pad
const SELECTION_SIZE = 4 + MAX_SELECTION_BANKS * SELECTION_SLOT; // 132
const DIGEST_SLOT = 2 + 64; // size u16, buffer[64]
const DIGESTS_PER_LIST = 8;
const DIGEST_LIST_SIZE = 4 + DIGESTS_PER_LIST * DIGEST_SLOT; // 532
/** 16 banks × 32 PCRs at 8 per list. */
const MAX_DIGEST_LISTS = (MAX_SELECTION_BANKS * MAX_SIZEOF_SELECT * 8) / DIGESTS_PER_LIST;

/*
 * tpm2-tools `serialized` PCR file (tpm2-tools lib/pcr.c pcr_fwrite_serialized; DOMAIN §4.8): a
 * dump of C structs, forced little-endian since 5.x:
 *   TPML_PCR_SELECTION  count u32le, then 16 slots of {hash u16le, sizeofSelect u8, pcrSelect[4], pad u8}
 *   u32le               number of TPML_DIGEST that follow
 *   TPML_DIGEST[n]      count u32le, then 8 slots of {size u16le, buffer[64]}
 * The digests fill the lists 8 at a time, in selection order, PCRs ascending within a bank.
 */
export function parseSerializedPcrs(bytes: Uint8Array): PcrValues {
  const r = new Reader(bytes, { truncatedCode: 'IMS_TPM_BAD_PCR_FILE' });
  const selection = readSerializedSelection(r);
  const listCount = r.u32(true, 'pcrs.count');
  if (listCount > MAX_DIGEST_LISTS) throw badFile(`${listCount} digest lists`, r.position - 4);
  const digests: Uint8Array[] = [];
  for (let i = 0; i < listCount; i++) digests.push(...readSerializedDigestList(r));
  if (r.remaining !== 0) throw badFile(`${r.remaining} bytes after the digests`, r.position);

  return assignDigests(selection, digests, 0);
}

function readSerializedSelection(r: Reader): PcrSelection {
  r.need(SELECTION_SIZE, 'TPML_PCR_SELECTION');
  const count = r.u32(true, 'TPML_PCR_SELECTION.count');
  if (count > MAX_SELECTION_BANKS) throw badFile(`selection count ${count}`, 0);
  const selection: PcrSelection = [];
  for (let i = 0; i < MAX_SELECTION_BANKS; i++) {
    const offset = r.position;
    const algId = r.u16(true, 'TPMS_PCR_SELECTION.hash');
    const sizeofSelect = r.u8('TPMS_PCR_SELECTION.sizeofSelect');
    const bitmap = r.bytes(MAX_SIZEOF_SELECT, 'TPMS_PCR_SELECTION.pcrSelect');
    r.skip(1, 'TPMS_PCR_SELECTION.pad');
    if (i >= count) continue;
    if (sizeofSelect > MAX_SIZEOF_SELECT) throw badFile(`sizeofSelect ${sizeofSelect}`, offset + 2);
    selection.push({
      bank: hashAlgFromTpm(algId) ?? algId,
      pcrs: pcrsOfBitmap(bitmap.subarray(0, sizeofSelect)),
    });
  }

  return selection;
}

function readSerializedDigestList(r: Reader): Uint8Array[] {
  const offset = r.position;
  r.need(DIGEST_LIST_SIZE, 'TPML_DIGEST');
  const count = r.u32(true, 'TPML_DIGEST.count');
  if (count > DIGESTS_PER_LIST) throw badFile(`TPML_DIGEST.count ${count}`, offset);
  const digests: Uint8Array[] = [];
  for (let i = 0; i < DIGESTS_PER_LIST; i++) {
    const size = r.u16(true, 'TPM2B_DIGEST.size');
    const buffer = r.bytes(64, 'TPM2B_DIGEST.buffer');
    if (i >= count) continue;
    if (size > 64) throw badFile(`digest size ${size}`, r.position - DIGEST_SLOT);
    digests.push(buffer.slice(0, size));
  }

  return digests;
}

/*
 * tpm2-tools `values` PCR file: the selected digests concatenated, in selection order and PCRs
 * ascending, with no framing; only the quote's selection says how to cut it.
 */
export function parseValuesPcrs(bytes: Uint8Array, selection: PcrSelection): PcrValues {
  const r = new Reader(bytes, { truncatedCode: 'IMS_TPM_BAD_PCR_FILE' });
  const digests: Uint8Array[] = [];
  for (const { bank, pcrs } of selection) {
    if (typeof bank === 'number') throw badFile(`bank 0x${bank.toString(16)} is not supported`, r.position);
    for (let i = 0; i < pcrs.length; i++) digests.push(r.bytes(digestSize(bank), `${bank} PCR`).slice());
  }
  if (r.remaining !== 0) throw badFile(`${r.remaining} bytes after the selected digests`, r.position);

  return assignDigests(selection, digests, 0);
}

/** Pairs digests with the selection's (bank, PCR) slots, checking each size against its bank. */
function assignDigests(selection: PcrSelection, digests: Uint8Array[], offset: number): PcrValues {
  const slots = selection.flatMap(({ bank, pcrs }) =>
    [...pcrs].sort((a, b) => a - b).map((pcr) => ({ bank, pcr })),
  );
  if (slots.length !== digests.length) {
    throw badFile(`${digests.length} digests for ${slots.length} selected PCRs`, offset);
  }
  const values: PcrValues = new Map();
  slots.forEach(({ bank, pcr }, i) => {
    if (typeof bank === 'number') return; // a bank we cannot hash: its values are of no use
    const digest = digests[i]!;
    if (digest.byteLength !== digestSize(bank))
      throw badFile(`${bank} PCR ${pcr}: ${digest.byteLength} bytes`, offset);
    setValue(values, bank, pcr, digest);
  });

  return values;
}

/** At most this many lines in a text PCR file (16 banks × 32 PCRs, with room for comments). */
const MAX_TEXT_LINES = 4096;

/**
 * Text PCR values, one `BANK:PCR=HEX` per line (`sha256:10=3d45…`); blank lines and lines
 * starting with `#` are ignored. A PCR given twice is an error rather than a silent override.
 */
export function parseTextPcrs(text: string): PcrValues {
  const lines = text.split('\n');
  if (lines.length > MAX_TEXT_LINES) throw badFile(`${lines.length} lines`, 0);
  const values: PcrValues = new Map();
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const m = /^([a-z0-9]+):(\d{1,2})\s*=\s*(?:0x)?([0-9a-fA-F]+)$/.exec(line);
    const bank = m?.[1];
    if (m === null || bank === undefined || !isHashAlg(bank))
      throw badFile(`line ${i + 1} is not BANK:PCR=HEX`, i + 1);
    const pcr = Number(m[2]);
    const digest = fromHex(m[3]!, `line ${i + 1}`);
    if (digest.byteLength !== digestSize(bank) || pcr >= MAX_SIZEOF_SELECT * 8) {
      throw badFile(`line ${i + 1}: ${bank} PCR ${pcr} with ${digest.byteLength} bytes`, i + 1);
    }
    if (values.get(bank)?.has(pcr)) throw badFile(`line ${i + 1}: ${bank}:${pcr} given twice`, i + 1);
    setValue(values, bank, pcr, digest);
  });

  return values;
}

/** The text form of PCR values, banks and PCRs in ascending order. */
export function formatTextPcrs(values: PcrValues): string {
  const lines: string[] = [];
  for (const [bank, pcrs] of values) {
    for (const [pcr, v] of [...pcrs].sort((a, b) => a[0] - b[0])) {
      lines.push(`${bank}:${pcr}=${Buffer.from(v).toString('hex')}`);
    }
  }

  return `${lines.join('\n')}\n`;
}

function setValue(values: PcrValues, bank: HashAlg, pcr: number, digest: Uint8Array): void {
  let bankValues = values.get(bank);
  if (bankValues === undefined) {
    bankValues = new Map();
    values.set(bank, bankValues);
  }
  bankValues.set(pcr, digest);
}

function badFile(message: string, offset: number): ImastreamError {
  return new ImastreamError('IMS_TPM_BAD_PCR_FILE', `PCR file: ${message}`, { details: { offset } });
}
