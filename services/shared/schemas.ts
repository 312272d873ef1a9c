/**
 * The schema catalogue: schemas/catalogue.json maps each wire schema id to one .avsc file.
 *
 * The highest version of a record name is its *current* schema: the one we write, and the reader
 * schema every older version is resolved to on decode. Loading checks the catalogue against the
 * files (name, namespace, version) so a mislabelled entry fails at start, not on the first message.
 */
import { readFileSync } from 'node:fs';

import avro, { type Type } from 'avsc';

import { ImastreamError } from '../../lib/errors.ts';
import type { RecordName } from './records.ts';

export const SCHEMA_NAMESPACE = 'io.imastream.v1';

/** schemas/ at the repository root. */
export const SCHEMA_DIR = new URL('../../schemas/', import.meta.url);

/** One catalogue entry with its parsed Avro type. */
export interface SchemaEntry {
  readonly id: number;
  readonly name: RecordName;
  readonly version: number;
  readonly file: string;
  readonly type: Type;
}

/** A loaded catalogue: lookup by wire id and by record name. */
export interface SchemaCatalogue {
  /** Every entry, ordered by id. */
  readonly entries: readonly SchemaEntry[];
  byId(id: number): SchemaEntry | undefined;
  /** The current (highest) version of a record; throws IMS_WIRE_UNKNOWN_SCHEMA for a name we lack. */
  current(name: string): SchemaEntry;
  /** Resolver from a writer entry to the current schema of its name; undefined when it is current. */
  resolverFor(entry: SchemaEntry): object | undefined;
}

interface CatalogueFile {
  schemas: Record<string, { name: string; version: number; file: string }>;
}

const MAX_SCHEMA_ID = 0xffff_ffff;

/** Parses one .avsc file with the options every imastream type uses. */
export function parseSchemaFile(dir: URL, file: string): { schema: Record<string, unknown>; type: Type } {
  const schema = JSON.parse(readFileSync(new URL(file, dir), 'utf8')) as Record<string, unknown>;
  const type = avro.Type.forSchema(schema as avro.Schema, { wrapUnions: false });

  return { schema, type };
}

function invalid(message: string): ImastreamError {
  return new ImastreamError('IMS_CONFIG_INVALID', `schema catalogue: ${message}`);
}

function loadEntry(dir: URL, idText: string, raw: CatalogueFile['schemas'][string]): SchemaEntry {
  const id = Number(idText);
  if (!Number.isInteger(id) || id < 1 || id > MAX_SCHEMA_ID) {
    throw invalid(`id ${idText} is not an integer in [1, 2^32)`);
  }

  const { schema, type } = parseSchemaFile(dir, raw.file);
  if (type.name !== `${SCHEMA_NAMESPACE}.${raw.name}`) {
    throw invalid(`id ${id}: ${raw.file} defines ${type.name}, catalogue says ${raw.name}`);
  }
  if (schema.version !== raw.version) {
    throw invalid(
      `id ${id}: ${raw.file} has version ${String(schema.version)}, catalogue says ${raw.version}`,
    );
  }

  return { id, name: raw.name as RecordName, version: raw.version, file: raw.file, type };
}

/** Reads and checks schemas/catalogue.json and every file it names. */
export function loadCatalogue(dir: URL = SCHEMA_DIR): SchemaCatalogue {
  const file = JSON.parse(readFileSync(new URL('catalogue.json', dir), 'utf8')) as CatalogueFile;
  const entries = Object.entries(file.schemas)
    .map(([id, raw]) => loadEntry(dir, id, raw))
    .sort((a, b) => a.id - b.id);

  const current = new Map<string, SchemaEntry>();
  for (const entry of entries) {
    const seen = current.get(entry.name);
    if (seen?.version === entry.version) {
      throw invalid(`${entry.name} v${entry.version} has two ids (${seen.id}, ${entry.id})`);
    }
    if (!seen || seen.version < entry.version) current.set(entry.name, entry);
  }

  const byId = new Map(entries.map((e) => [e.id, e]));
  const resolvers = new Map<number, object>();
  for (const entry of entries) {
    const target = current.get(entry.name)!;
    if (target !== entry) resolvers.set(entry.id, target.type.createResolver(entry.type));
  }

  return {
    entries,
    byId: (id) => byId.get(id),
    current(name) {
      const entry = current.get(name);
      if (!entry) throw new ImastreamError('IMS_WIRE_UNKNOWN_SCHEMA', `no schema named ${name}`);
      return entry;
    },
    resolverFor: (entry) => resolvers.get(entry.id),
  };
}
