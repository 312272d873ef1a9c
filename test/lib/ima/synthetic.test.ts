import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkTemplateDigest } from '../../../lib/ima/check.ts';
import { decodePrefixedDigest, nameBytes } from '../../../lib/ima/fields.ts';
import { isViolation } from '../../../lib/ima/record.ts';
import { generateLog } from '../../../lib/ima/synthetic.ts';
import { splitFields } from '../../../lib/ima/templates.ts';

describe('synthetic logs', () => {
  it('are deterministic per seed and differ between seeds', () => {
    const a = generateLog({ records: 50, seed: 5 });
    assert.deepEqual(generateLog({ records: 50, seed: 5 }).bytes, a.bytes);
    assert.notDeepEqual(generateLog({ records: 50, seed: 6 }).bytes, a.bytes);
  });

  it('start with boot_aggregate, mix templates, and put violations where asked', () => {
    const { records } = generateLog({ records: 300, seed: 7, violations: [0, 100] });
    const first = splitFields(records[0]!.templateData, 2, true) as Uint8Array[];
    assert.equal(Buffer.from(nameBytes(first[1]!)).toString(), 'boot_aggregate');
    assert.equal(decodePrefixedDigest(first[0]!)?.alg, 'sha256');
    const names = new Set(records.map((r) => r.templateName));
    assert.deepEqual([...names].sort(), ['ima-buf', 'ima-ng', 'ima-sig']);
    assert.deepEqual(
      records.flatMap((r, i) => (isViolation(r) ? [i] : [])),
      [0, 100],
    );
    assert.ok(records.some((r) => r.templateName === 'ima-sig' && r.templateData.byteLength > 200));
    for (const r of records) assert.equal(checkTemplateDigest(r, 'sha1'), undefined);
  });

  it('offsets point at each record in the bytes', () => {
    const { records, bytes } = generateLog({ records: 10, seed: 8 });
    for (const r of records)
      assert.equal(new DataView(bytes.buffer, bytes.byteOffset).getUint32(r.offset, true), 10);
  });
});
