import type { Alert } from '../shared/records.ts';

/** One line for a terminal: time, severity, kind, where, and the message. */
export function alertLine(a: Alert): string {
  const where = [
    `host=${a.hostId}`,
    a.bootId === null ? null : `boot=${a.bootId}`,
    a.seq === null ? null : `seq=${a.seq}`,
    a.bank === null ? null : `bank=${a.bank}`,
    a.pcr === null ? null : `pcr=${a.pcr}`,
  ].filter((x) => x !== null);

  return `${new Date(a.at).toISOString()} ${a.severity.padEnd(8)} ${a.kind} ${where.join(' ')} ${oneLine(a.message)}`;
}

/** A JSON line: the alert with its details parsed back into an object when they are JSON. */
export function alertJson(a: Alert): string {
  let details: unknown = a.details;
  try {
    details = JSON.parse(a.details);
  } catch {
    // Keep the text as sent: details come from other components and may not be JSON.
  }

  return JSON.stringify({ ...a, details });
}

/** Alert text comes from the pipeline (and partly from hosts): never let it break the line. */
function oneLine(s: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what we remove
  return s.replace(/[\u0000-\u001f\u007f]+/g, ' ');
}
