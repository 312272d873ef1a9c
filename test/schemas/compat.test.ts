/**
 * Backward compatibility: every older schema of a record must resolve to every newer one (a
 * consumer on the new schema reads old data), and a record written with the old schema must read
 * back with its fields kept and new fields at their defaults.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';

import avro from 'avsc';

import {
  loadCatalogue,
  SCHEMA_DIR,
  SCHEMA_NAMESPACE,
  type SchemaEntry,
} from '../../services/shared/schemas.ts';

const catalogue = loadCatalogue();

function pairs(): [SchemaEntry, SchemaEntry][] {
  const out: [SchemaEntry, SchemaEntry][] = [];
  for (const older of catalogue.entries) {
    for (const newer of catalogue.entries) {
      if (older.name === newer.name && older.version < newer.version) out.push([older, newer]);
    }
  }
  return out;
}

interface Field {
  name: string;
  default?: unknown;
}

/** Fields as written in the .avsc file (avsc's own schema() export leaves out defaults). */
function fieldsOf(entry: SchemaEntry): Field[] {
  return (JSON.parse(readFileSync(new URL(entry.file, SCHEMA_DIR), 'utf8')) as { fields: Field[] }).fields;
}

function plain(v: unknown): unknown {
  return v === undefined ? undefined : JSON.parse(JSON.stringify(v));
}

describe('schema evolution', () => {
  it('has at least one older schema to check', () => {
    assert.ok(pairs().length >= 1);
  });

  for (const [older, newer] of pairs()) {
    it(`${older.name} v${older.version} (id ${older.id}) resolves to v${newer.version} (id ${newer.id})`, () => {
      const resolver = newer.type.createResolver(older.type);
      const added = fieldsOf(newer).filter((f) => !fieldsOf(older).some((o) => o.name === f.name));

      for (let i = 0; i < 50; i++) {
        const written = older.type.random() as unknown as Record<string, unknown>;
        const read = newer.type.fromBuffer(older.type.toBuffer(written), resolver) as Record<string, unknown>;

        // Compared as plain data: nested records of the two schemas are instances of different
        // (same-named) avsc classes, which a prototype-strict comparison would tell apart.
        for (const field of fieldsOf(older))
          assert.deepEqual(plain(read[field.name]), plain(written[field.name]), field.name);
        for (const field of added)
          assert.deepEqual(read[field.name], field.default, `default of ${field.name}`);
      }
    });
  }

  it('refuses to resolve a newer schema that adds a field without a default', () => {
    const older = catalogue.entries.find((e) => e.name === 'LogRecord' && e.version === 1)!;
    const newer = catalogue.current('LogRecord');
    const raw = JSON.parse(readFileSync(new URL(newer.file, SCHEMA_DIR), 'utf8')) as { fields: Field[] };
    const parse = (schema: unknown) => avro.Type.forSchema(schema as avro.Schema, { wrapUnions: false });

    assert.doesNotThrow(() => parse(raw).createResolver(older.type));
    raw.fields = raw.fields.map(({ default: _d, ...f }) =>
      f.name === 'producedAt' ? f : { ...f, default: _d },
    );
    assert.throws(() => parse(raw).createResolver(older.type), /producedAt/);
  });
});

describe('schema files', () => {
  it('every record is in the io.imastream.v1 namespace with a doc on every field', () => {
    for (const entry of catalogue.entries) {
      assert.ok(entry.type.name?.startsWith(`${SCHEMA_NAMESPACE}.`), entry.file);
      const raw = JSON.parse(readFileSync(new URL(entry.file, SCHEMA_DIR), 'utf8')) as {
        fields: { doc?: string }[];
      };
      for (const field of raw.fields) assert.ok(field.doc, `${entry.file}: a field has no doc`);
    }
  });

  it('defines PcrValue identically wherever it is inlined', () => {
    const shapes = ['Checkpoint', 'Verdict'].map((name) => {
      const text = JSON.stringify(catalogue.current(name).type.schema());
      const at = text.indexOf('{"name":"io.imastream.v1.PcrValue"');
      assert.ok(at >= 0, `${name} embeds PcrValue`);
      return text.slice(at, text.indexOf(']}', at) + 2);
    });

    assert.equal(shapes[0], shapes[1]);
  });

  it('assigns each (name, version) a single id and ids in the catalogue only', () => {
    const keys = catalogue.entries.map((e) => `${e.name}@${e.version}`);

    assert.equal(new Set(keys).size, keys.length);
    assert.equal(catalogue.byId(0), undefined);
  });
});
