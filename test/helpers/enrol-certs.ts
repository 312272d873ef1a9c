import { generateKeyPairSync, type KeyObject, webcrypto } from 'node:crypto';
// asn1js comes with pkijs (its dependency); building certificates with pkijs needs its types.
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';

/**
 * Test certificates shaped like TPM EK certificates (TCG EK Credential Profile 2.x): empty
 * subject, critical subjectAltName with the TPM manufacturer attributes, critical key usage,
 * basicConstraints CA:FALSE. Built with pkijs and Node's WebCrypto, so tests need no CA files.
 */

/** Node's WebCrypto in the type pkijs declares (the DOM `Crypto`, which this project's lib lacks). */
type PkiCrypto = pkijs.CryptoEngineParameters['crypto'];
const crypto = webcrypto as unknown as PkiCrypto;
const engine = new pkijs.CryptoEngine({ name: 'node', crypto });

export const DAY = 24 * 3600 * 1000;

/** keyUsage bits (first octet of the BIT STRING). */
export const KU = {
  digitalSignature: 0x80,
  keyEncipherment: 0x20,
  keyAgreement: 0x08,
  keyCertSign: 0x04,
  cRLSign: 0x02,
};

export interface Issuer {
  der: Uint8Array;
  cert: pkijs.Certificate;
  privateKey: KeyObject;
}

export interface CertOptions {
  /** Common name; omit for an empty subject (EK certificates). */
  cn?: string;
  /** Subject public key; a fresh P-256 key when omitted. */
  publicKey?: KeyObject;
  /** Signing key and its certificate; self-signed with `signingKey` when omitted. */
  issuer?: Issuer;
  /** Private key matching `publicKey` when self-signing. */
  signingKey?: KeyObject;
  notBefore?: Date;
  notAfter?: Date;
  keyUsage?: number;
  ca?: boolean;
  /** TPM manufacturer attributes in a critical SAN directoryName. */
  tpm?: { manufacturer: string; model: string; version: string };
  serial?: number;
}

let nextSerial = 1000;

/** A certificate per `opts`, DER-encoded and parsed. */
export async function makeCert(opts: CertOptions): Promise<Issuer> {
  // CA and throw-away keys are P-256: RSA key generation would dominate the tests' run time.
  const own = opts.publicKey === undefined ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : undefined;
  const publicKey = opts.publicKey ?? own!.publicKey;
  const selfKey = opts.signingKey ?? own?.privateKey;
  const signer = opts.issuer?.privateKey ?? selfKey;
  if (signer === undefined) throw new Error('makeCert: no signing key');

  const cert = new pkijs.Certificate();
  cert.version = 2;
  cert.serialNumber = new asn1js.Integer({ value: opts.serial ?? nextSerial++ });
  setName(cert.subject, opts.cn);
  if (opts.issuer === undefined) setName(cert.issuer, opts.cn);
  else cert.issuer = opts.issuer.cert.subject;
  cert.notBefore.value = opts.notBefore ?? new Date(Date.now() - 365 * DAY);
  cert.notAfter.value = opts.notAfter ?? new Date(Date.now() + 365 * DAY);
  const spki = publicKey.export({ format: 'der', type: 'spki' });
  cert.subjectPublicKeyInfo = pkijs.PublicKeyInfo.fromBER(spki);
  cert.extensions = extensions(opts);

  const key = await importSigner(signer);
  await cert.sign(key, 'SHA-256', engine);
  const der = new Uint8Array(cert.toSchema(true).toBER(false));

  return { der, cert: pkijs.Certificate.fromBER(der), privateKey: selfKey ?? signer };
}

function setName(name: pkijs.RelativeDistinguishedNames, cn: string | undefined): void {
  if (cn === undefined) return;
  name.typesAndValues.push(
    new pkijs.AttributeTypeAndValue({ type: '2.5.4.3', value: new asn1js.Utf8String({ value: cn }) }),
  );
}

function extensions(opts: CertOptions): pkijs.Extension[] {
  const out: pkijs.Extension[] = [];
  const basic = new pkijs.BasicConstraints({ cA: opts.ca ?? false });
  out.push(
    new pkijs.Extension({
      extnID: '2.5.29.19',
      critical: true,
      extnValue: basic.toSchema().toBER(false),
      parsedValue: basic,
    }),
  );
  if (opts.keyUsage !== undefined) {
    const bits = new asn1js.BitString({ valueHex: Uint8Array.of(opts.keyUsage).buffer });
    out.push(new pkijs.Extension({ extnID: '2.5.29.15', critical: true, extnValue: bits.toBER(false) }));
  }
  if (opts.tpm !== undefined) out.push(tpmSan(opts.tpm));

  return out;
}

function tpmSan(tpm: NonNullable<CertOptions['tpm']>): pkijs.Extension {
  const attr = (type: string, value: string) =>
    new pkijs.AttributeTypeAndValue({ type, value: new asn1js.Utf8String({ value }) });
  const dir = new pkijs.RelativeDistinguishedNames({
    typesAndValues: [
      attr('2.23.133.2.1', tpm.manufacturer),
      attr('2.23.133.2.2', tpm.model),
      attr('2.23.133.2.3', tpm.version),
    ],
  });
  const san = new pkijs.AltName({ altNames: [new pkijs.GeneralName({ type: 4, value: dir })] });

  return new pkijs.Extension({ extnID: '2.5.29.17', critical: true, extnValue: san.toSchema().toBER(false) });
}

/** Signs (again) `cert` with `issuer`'s key, after a test has changed it; returns the DER. */
export async function resign(cert: pkijs.Certificate, issuer: Issuer): Promise<Uint8Array> {
  await cert.sign(await importSigner(issuer.privateKey), 'SHA-256', engine);

  return new Uint8Array(cert.toSchema(true).toBER(false));
}

async function importSigner(key: KeyObject): Promise<webcrypto.CryptoKey> {
  const pkcs8 = key.export({ format: 'der', type: 'pkcs8' });
  if (key.asymmetricKeyType === 'rsa') {
    return crypto.subtle.importKey('pkcs8', pkcs8, { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }, false, [
      'sign',
    ]);
  }
  const namedCurve = key.asymmetricKeyDetails?.namedCurve === 'secp384r1' ? 'P-384' : 'P-256';

  return crypto.subtle.importKey('pkcs8', pkcs8, { name: 'ECDSA', namedCurve }, false, ['sign']);
}

/** A manufacturer root and an intermediate under it, like swtpm_localca's pair. */
export async function makeCaPair(
  prefix: string,
  dates: { notBefore?: Date; notAfter?: Date } = {},
): Promise<{ root: Issuer; intermediate: Issuer }> {
  const caUsage = KU.keyCertSign | KU.cRLSign;
  const root = await makeCert({ cn: `${prefix} root`, ca: true, keyUsage: caUsage });
  const intermediate = await makeCert({
    cn: `${prefix} ca`,
    ca: true,
    keyUsage: caUsage,
    issuer: root,
    ...dates,
  });

  return { root, intermediate };
}
