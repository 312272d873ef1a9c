import { createHash } from 'node:crypto';

import { buildImaNg } from '../../../lib/ima/encode.ts';
import type { BootEvent, LogRecord, QuoteTaken, SnapshotEvent } from '../../../services/shared/records.ts';

/** An ima-ng record for a made-up file; the logged digest is the true SHA-1 of the data. */
export function logRecord(
  hostId: string,
  bootId: string,
  seq: number,
  name = `/usr/bin/tool-${seq}`,
): LogRecord {
  const fileDigest = createHash('sha256').update(name).digest();
  const data = Buffer.from(buildImaNg({ alg: 'sha256', digest: fileDigest, name }));

  return {
    hostId,
    bootId,
    seq,
    pcr: 10,
    templateName: 'ima-ng',
    templateData: data,
    templateDigest: createHash('sha1').update(data).digest(),
    digestAlg: 'sha1',
    byteOrder: 'LE',
    producedAt: 0,
  };
}

export function bootEvent(hostId: string, bootId: string, kind: 'COLD' | 'KEXEC' = 'COLD'): BootEvent {
  return {
    hostId,
    bootId,
    hostBootId: bootId.split(':')[0] ?? bootId,
    resetCount: 1,
    firstSeq: 0,
    kind,
    at: 0,
  };
}

export function quoteTaken(hostId: string, bootId: string, seq: number): QuoteTaken {
  return { hostId, bootId, seq, quoteId: `q-${seq}`, at: 0 };
}

export function snapshot(hostId: string, bootId: string, seq: number): SnapshotEvent {
  return { hostId, bootId, seq, kind: 'VIRTUAL', quoteId: null, at: 0 };
}
