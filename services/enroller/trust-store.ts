import { readdir, readFile } from 'node:fs/promises';
import { extname, join } from 'node:path';
import { ImastreamError } from '../../lib/errors.ts';
import { type TrustStore, trustStoreFromCertificates } from '../../lib/tpm/ek-cert.ts';

/** File name endings read as certificates; anything else in the directory is ignored. */
const CERT_EXTENSIONS: ReadonlySet<string> = new Set(['.pem', '.crt', '.cer', '.der']);
/** A trust store is configuration: refuse absurd sizes rather than read them. */
const MAX_FILE_BYTES = 1024 * 1024;
const MAX_CERTIFICATES = 10_000;

/**
 * Loads the EK manufacturer trust store from a directory of PEM or DER files (TPM vendors publish
 * both; a PEM file may hold several certificates). Self-signed certificates become roots, the
 * others intermediates. A directory without any root is refused: it could validate nothing.
 */
export async function loadTrustStore(dir: string): Promise<TrustStore> {
  const certs: Uint8Array[] = [];
  for (const name of (await listDir(dir)).sort()) {
    if (!CERT_EXTENSIONS.has(extname(name).toLowerCase())) continue;
    certs.push(...splitCertificates(await readCert(join(dir, name))));
    if (certs.length > MAX_CERTIFICATES)
      throw configError(`${dir}: more than ${MAX_CERTIFICATES} certificates`);
  }
  let store: TrustStore;
  try {
    store = await trustStoreFromCertificates(certs);
  } catch (cause) {
    throw configError(`${dir}: ${cause instanceof Error ? cause.message : String(cause)}`, cause);
  }
  if (store.roots.length === 0)
    throw configError(`${dir}: no self-signed manufacturer root among ${certs.length} certificates`);

  return store;
}

/** Each PEM CERTIFICATE block of a file as its own PEM text; a DER file as it is. */
export function splitCertificates(bytes: Uint8Array): Uint8Array[] {
  const text = new TextDecoder().decode(bytes.subarray(0, Math.min(bytes.byteLength, MAX_FILE_BYTES)));
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g);
  if (blocks === null) return [bytes];

  return blocks.map((b) => new TextEncoder().encode(`${b}\n`));
}

async function listDir(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (cause) {
    throw configError(`trust store directory ${dir} cannot be read`, cause);
  }
}

async function readCert(path: string): Promise<Uint8Array> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (cause) {
    throw new ImastreamError('IMS_IO_READ_FAILED', `${path} cannot be read`, { cause, details: { path } });
  }
  if (bytes.byteLength > MAX_FILE_BYTES) throw configError(`${path}: over ${MAX_FILE_BYTES} bytes`);

  return new Uint8Array(bytes);
}

function configError(message: string, cause?: unknown): ImastreamError {
  return new ImastreamError('IMS_CONFIG_INVALID', message, { cause });
}
