import type { ErrorCode } from '../errors.ts';
import { type FieldId, isFieldId, prefixedDigestProblem } from './fields.ts';
import { LEGACY_DIGEST_SIZE, LEGACY_IMA, LEGACY_NAME_MAX } from './record.ts';

/**
 * Template descriptors: which fields a template name stands for (kernel ima_template.c,
 * DOMAIN.md §1.5). A custom `ima_template_fmt=` log names each record by its format string, so a
 * name made only of known field ids is its own descriptor.
 */
export const TEMPLATES: Readonly<Record<string, readonly FieldId[]>> = {
  ima: ['d', 'n'],
  'ima-ng': ['d-ng', 'n-ng'],
  'ima-sig': ['d-ng', 'n-ng', 'sig'],
  'ima-buf': ['d-ng', 'n-ng', 'buf'],
  'ima-modsig': ['d-ng', 'n-ng', 'sig', 'd-modsig', 'modsig'],
  'evm-sig': ['d-ng', 'n-ng', 'evmsig', 'xattrnames', 'xattrlengths', 'xattrvalues', 'iuid', 'igid', 'imode'],
  'ima-ngv2': ['d-ngv2', 'n-ng'],
  'ima-sigv2': ['d-ngv2', 'n-ng', 'sig'],
};

/** IMA_TEMPLATE_NUM_FIELDS_MAX in the kernel. */
export const MAX_TEMPLATE_FIELDS = 15;

/** `builtin`: in the table; `custom`: a format string of known fields; `unknown`: neither. */
export type TemplateKind = 'legacy' | 'builtin' | 'custom' | 'unknown';

export interface TemplateDescriptor {
  kind: TemplateKind;
  /** Field ids in order; empty for `unknown`. */
  fields: readonly FieldId[];
}

const UNKNOWN: TemplateDescriptor = { kind: 'unknown', fields: [] };
const cache = new Map<string, TemplateDescriptor>();
/** Custom names come from hostile input: bound the cache so it cannot grow without end. */
const CACHE_MAX = 1024;

/** The descriptor of a template name (cached; names are few in any real log). */
export function templateDescriptor(name: string): TemplateDescriptor {
  const hit = cache.get(name);
  if (hit !== undefined) return hit;
  const d = describe(name);
  if (cache.size < CACHE_MAX) cache.set(name, d);

  return d;
}

function describe(name: string): TemplateDescriptor {
  if (name === LEGACY_IMA) return { kind: 'legacy', fields: TEMPLATES.ima! };
  if (Object.hasOwn(TEMPLATES, name)) return { kind: 'builtin', fields: TEMPLATES[name]! };
  const parts = name.split('|');
  if (parts.length > MAX_TEMPLATE_FIELDS || !parts.every(isFieldId)) return UNKNOWN;

  return { kind: 'custom', fields: parts };
}

/**
 * Splits template data into its fields: each is `u32 len || len bytes`, the length in the log's
 * byte order. Returns the fields as views, or a message saying where they stop fitting.
 * Not for the legacy template, whose data has no per-field lengths.
 */
export function splitFields(data: Uint8Array, count: number, littleEndian: boolean): Uint8Array[] | string {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const fields: Uint8Array[] = [];
  let pos = 0;
  for (let i = 0; i < count; i++) {
    if (data.byteLength - pos < 4) return `field ${i + 1} of ${count}: length missing at +${pos}`;
    const len = view.getUint32(pos, littleEndian);
    pos += 4;
    if (len > data.byteLength - pos) {
      return `field ${i + 1} of ${count}: length ${len} overruns data at +${pos}`;
    }
    fields.push(data.subarray(pos, pos + len));
    pos += len;
  }
  if (pos !== data.byteLength) return `${data.byteLength - pos} bytes left after ${count} fields`;

  return fields;
}

/** Legacy `ima` data: filedigest[20] || u32 name_len || name. Returns the name or a message. */
export function splitLegacy(
  data: Uint8Array,
  littleEndian: boolean,
): { fileDigest: Uint8Array; name: Uint8Array } | string {
  if (data.byteLength < LEGACY_DIGEST_SIZE + 4) return 'legacy ima data shorter than digest and name length';
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const len = view.getUint32(LEGACY_DIGEST_SIZE, littleEndian);
  if (len > LEGACY_NAME_MAX) return `legacy ima name length ${len} exceeds ${LEGACY_NAME_MAX}`;
  if (len !== data.byteLength - LEGACY_DIGEST_SIZE - 4) {
    return `legacy ima name length ${len} does not fill the data`;
  }

  return { fileDigest: data.subarray(0, LEGACY_DIGEST_SIZE), name: data.subarray(LEGACY_DIGEST_SIZE + 4) };
}

/** A problem found inside one record's template data; the record itself still replays. */
export interface TemplateProblem {
  code: ErrorCode;
  message: string;
}

/**
 * What is wrong with a record's template data, if anything: fields that do not exactly fill it,
 * or a malformed digest field. Violations are exempt from the digest-field check: older kernels
 * log `<alg>:` with 20 zero bytes whatever the algorithm. Unknown templates are not checked.
 */
export function templateDataProblem(
  name: string,
  data: Uint8Array,
  littleEndian: boolean,
  violation: boolean,
): TemplateProblem | undefined {
  const d = templateDescriptor(name);
  if (d.kind === 'unknown') return undefined;
  if (d.kind === 'legacy') {
    const legacy = splitLegacy(data, littleEndian);
    return typeof legacy === 'string' ? { code: 'IMS_IMA_BAD_TEMPLATE_DATA', message: legacy } : undefined;
  }
  return walkFields(name, d.fields, data, littleEndian, !violation);
}

/** Digest fields written `<alg>:` NUL digest (compared as strings: a Set lookup per field costs more). */
function isPrefixedDigest(id: FieldId): boolean {
  return id === 'd-ng' || id === 'd-ngv2' || id === 'd-modsig';
}

/**
 * Walks `u32 len || bytes` fields in place (no copies: this runs for every record) and checks
 * that they exactly fill the data and, when asked, that digest fields are well formed.
 */
function walkFields(
  name: string,
  ids: readonly FieldId[],
  data: Uint8Array,
  le: boolean,
  checkDigests: boolean,
): TemplateProblem | undefined {
  const n = data.length;
  let pos = 0;
  for (let i = 0; i < ids.length; i++) {
    if (n - pos < 4) return badData(`${name}: field ${i + 1} of ${ids.length}: length missing at +${pos}`);
    const len = le
      ? (data[pos]! | (data[pos + 1]! << 8) | (data[pos + 2]! << 16) | (data[pos + 3]! << 24)) >>> 0
      : ((data[pos]! << 24) | (data[pos + 1]! << 16) | (data[pos + 2]! << 8) | data[pos + 3]!) >>> 0;
    pos += 4;
    if (len > n - pos) {
      return badData(`${name}: field ${i + 1} of ${ids.length}: length ${len} overruns data`);
    }
    if (checkDigests && isPrefixedDigest(ids[i]!)) {
      const problem = prefixedDigestProblem(data.subarray(pos, pos + len));
      if (problem !== undefined) return { code: 'IMS_IMA_BAD_FIELD', message: `${ids[i]}: ${problem}` };
    }
    pos += len;
  }
  if (pos !== n) return badData(`${name}: ${n - pos} bytes left after ${ids.length} fields`);

  return undefined;
}

function badData(message: string): TemplateProblem {
  return { code: 'IMS_IMA_BAD_TEMPLATE_DATA', message };
}
