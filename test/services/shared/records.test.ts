import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { it } from 'node:test';

import { renderRecords } from '../../../services/shared/records-gen.ts';

it('services/shared/records.ts matches what records-gen.ts renders from schemas/', () => {
  const checkedIn = readFileSync(new URL('../../../services/shared/records.ts', import.meta.url), 'utf8');

  assert.equal(checkedIn, renderRecords(), 'regenerate: node --import tsx services/shared/records-gen.ts');
});
