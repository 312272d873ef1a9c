import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { alertJson, alertLine } from '../../../services/alerts/format.ts';
import { alertId, makeAlert } from '../../../services/alerts/make.ts';

const alert = makeAlert({
  kind: 'PCR_MISMATCH',
  hostId: 'web-7',
  bootId: 'b:3',
  seq: 120,
  bank: 'sha256',
  pcr: 10,
  message: 'replay disagrees\nwith the quote',
  details: { quoteId: 'q9' },
  at: Date.UTC(2026, 0, 2, 3, 4, 5),
});

describe('alert output', () => {
  it('prints one line naming severity, kind, host, boot, seq, bank and PCR', () => {
    const line = alertLine(alert);

    assert.equal(
      line,
      '2026-01-02T03:04:05.000Z CRITICAL PCR_MISMATCH host=web-7 boot=b:3 seq=120 bank=sha256 pcr=10 replay disagrees with the quote',
    );
  });

  it('leaves out what an alert does not know', () => {
    const a = makeAlert({ kind: 'UNKNOWN_AK', hostId: 'h', message: 'm', at: 0 });

    assert.equal(alertLine(a), '1970-01-01T00:00:00.000Z CRITICAL UNKNOWN_AK host=h m');
  });

  it('prints JSON lines with the details as an object', () => {
    const parsed = JSON.parse(alertJson(alert)) as { details: unknown; kind: string };

    assert.deepEqual(parsed.details, { quoteId: 'q9' });
    assert.equal(parsed.kind, 'PCR_MISMATCH');
  });
});

describe('alert ids', () => {
  it('are the same for the same finding whenever it is raised, and differ between findings', () => {
    const again = makeAlert({ ...JSON.parse(alertJson(alert)), kind: 'PCR_MISMATCH', at: 99, details: {} });

    assert.equal(again.alertId, alert.alertId);
    assert.notEqual(
      alertId({ kind: 'PCR_MISMATCH', hostId: 'web-7', bootId: 'b:3', seq: 121 }),
      alert.alertId,
    );
    assert.notEqual(
      alertId({ kind: 'SEQUENCE_GAP', hostId: 'web-7', bootId: 'b:3', seq: 120 }),
      alert.alertId,
    );
  });
});
