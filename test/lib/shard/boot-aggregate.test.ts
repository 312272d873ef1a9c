import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { hash } from '../../../lib/hash.ts';
import { buildImaNg, buildLegacyIma } from '../../../lib/ima/encode.ts';
import type { ImaRecord } from '../../../lib/ima/record.ts';
import type { PcrBank, PcrValues } from '../../../lib/pcr.ts';
import { checkBootAggregate } from '../../../lib/shard/boot-aggregate.ts';

const firmware = (size: number): PcrBank =>
  new Map(Array.from({ length: 10 }, (_, i) => [i, randomBytes(size)]));
const sha256 = firmware(32);
const sha1 = firmware(20);
const quoted: PcrValues = new Map([
  ['sha256', sha256],
  ['sha1', sha1],
]);
const upTo = (bank: PcrBank, n: number) => Array.from({ length: n }, (_, i) => bank.get(i)!);

function ngRecord(alg: string, digest: Uint8Array): ImaRecord {
  const templateData = buildImaNg({ alg, digest, name: 'boot_aggregate' });
  return {
    pcr: 10,
    templateName: 'ima-ng',
    templateData,
    templateDigest: hash('sha1', templateData),
    offset: 0,
  };
}

describe('checkBootAggregate', () => {
  it('matches the 0–9 form and the pre-5.8 0–7 form of a non-SHA-1 bank', () => {
    assert.equal(
      checkBootAggregate(ngRecord('sha256', hash('sha256', ...upTo(sha256, 10))), quoted, true),
      'matched',
    );
    assert.equal(
      checkBootAggregate(ngRecord('sha256', hash('sha256', ...upTo(sha256, 8))), quoted, true),
      'matched',
    );
  });

  it('uses PCRs 0–7 only for SHA-1, also in the legacy template', () => {
    const digest = hash('sha1', ...upTo(sha1, 8));
    assert.equal(checkBootAggregate(ngRecord('sha1', digest), quoted, true), 'matched');
    const templateData = buildLegacyIma({ fileDigest: digest, name: 'boot_aggregate' });
    const legacy = {
      pcr: 10,
      templateName: 'ima',
      templateData,
      templateDigest: new Uint8Array(20),
      offset: 0,
    };
    assert.equal(checkBootAggregate(legacy, quoted, true), 'matched');
    assert.equal(
      checkBootAggregate(ngRecord('sha1', hash('sha1', ...upTo(sha1, 10))), quoted, true),
      'mismatch',
    );
  });

  it('reports a mismatch, and unchecked when the quote lacks PCRs 0–7', () => {
    assert.equal(checkBootAggregate(ngRecord('sha256', new Uint8Array(32)), quoted, true), 'mismatch');
    const partial: PcrValues = new Map([['sha256', new Map([[10, new Uint8Array(32)]])]]);
    assert.equal(checkBootAggregate(ngRecord('sha256', new Uint8Array(32)), partial, true), 'unchecked');
    assert.equal(checkBootAggregate(ngRecord('sha384', new Uint8Array(48)), quoted, true), 'unchecked');
  });
});
