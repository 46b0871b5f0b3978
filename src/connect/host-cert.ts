/**
 * OpenSSH host certificates (PROTOCOL.certkeys): parse one and check it the way `ssh` does
 * against `@cert-authority` lines: signed by a CA trusted for this host, a host (not user)
 * certificate, valid now, naming the host among its principals (an empty list names every
 * host, as OpenSSH accepts), no critical option we do not know. Pure: node:crypto only.
 */
import { createPublicKey, verify, type KeyObject } from 'node:crypto';

export const CERT_SUFFIX = '-cert-v01@openssh.com';
const HOST_CERT = 2;

export interface HostCertificate {
  /** `ssh-ed25519-cert-v01@openssh.com`... */
  type: string;
  /** The certified key as a plain public key blob (`ssh-ed25519` + key). */
  publicKey: Buffer;
  serial: bigint;
  certType: number;
  keyId: string;
  principals: string[];
  validAfter: bigint;
  validBefore: bigint;
  criticalOptions: string[];
  /** The CA's public key blob. */
  signatureKey: Buffer;
  signature: Buffer;
  /** The bytes the CA signed: everything before the signature. */
  signed: Buffer;
}

class Reader {
  pos = 0;
  constructor(private readonly b: Buffer) {}
  string(): Buffer {
    if (this.pos + 4 > this.b.length) throw new Error('truncated');
    const len = this.b.readUInt32BE(this.pos);
    if (this.pos + 4 + len > this.b.length) throw new Error('truncated');
    const s = this.b.subarray(this.pos + 4, this.pos + 4 + len);
    this.pos += 4 + len;
    return s;
  }
  uint32(): number {
    if (this.pos + 4 > this.b.length) throw new Error('truncated');
    const v = this.b.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  uint64(): bigint {
    if (this.pos + 8 > this.b.length) throw new Error('truncated');
    const v = this.b.readBigUInt64BE(this.pos);
    this.pos += 8;
    return v;
  }
  done(): boolean {
    return this.pos === this.b.length;
  }
}

const sshString = (b: Buffer | string) => {
  const buf = typeof b === 'string' ? Buffer.from(b) : b;
  const len = Buffer.alloc(4);
  len.writeUInt32BE(buf.length);
  return Buffer.concat([len, buf]);
};

/** Number of key fields after the nonce, by certified key type. */
function keyFieldCount(plainType: string): number {
  if (plainType === 'ssh-ed25519') return 1;
  if (plainType.startsWith('ecdsa-sha2-')) return 2;
  if (plainType === 'ssh-rsa') return 2;
  throw new Error(`certificates of ${plainType} keys are not supported`);
}

export function isCertificate(blob: Buffer): boolean {
  try {
    return new Reader(blob).string().toString('latin1').endsWith(CERT_SUFFIX);
  } catch {
    return false;
  }
}

export function parseHostCertificate(blob: Buffer): HostCertificate {
  const r = new Reader(blob);
  const type = r.string().toString('latin1');
  if (!type.endsWith(CERT_SUFFIX)) throw new Error(`${type} is not a certificate type`);
  const plainType = type.slice(0, -CERT_SUFFIX.length);
  r.string(); // nonce
  const fields = Array.from({ length: keyFieldCount(plainType) }, () => r.string());
  // RSA certificates carry e, n; the plain key blob is e, n too. ecdsa: curve, Q. ed25519: key.
  const publicKey = Buffer.concat([sshString(plainType), ...fields.map(sshString)]);
  const serial = r.uint64();
  const certType = r.uint32();
  const keyId = r.string().toString('utf8');
  const principalsBlob = new Reader(r.string());
  const principals: string[] = [];
  while (!principalsBlob.done()) principals.push(principalsBlob.string().toString('utf8'));
  const validAfter = r.uint64();
  const validBefore = r.uint64();
  const criticalBlob = new Reader(r.string());
  const criticalOptions: string[] = [];
  while (!criticalBlob.done()) {
    criticalOptions.push(criticalBlob.string().toString('utf8'));
    criticalBlob.string();
  }
  r.string(); // extensions
  r.string(); // reserved
  const signatureKey = Buffer.from(r.string());
  const signed = blob.subarray(0, r.pos);
  const signature = Buffer.from(r.string());
  return { type, publicKey, serial, certType, keyId, principals, validAfter, validBefore, criticalOptions, signatureKey, signature, signed };
}

const b64url = (b: Buffer) => b.toString('base64url');
/** An SSH mpint as unsigned big-endian bytes. */
const unsigned = (b: Buffer) => (b[0] === 0 ? b.subarray(1) : b);

const CURVES: Record<string, { crv: string; hash: string; size: number }> = {
  nistp256: { crv: 'P-256', hash: 'sha256', size: 32 },
  nistp384: { crv: 'P-384', hash: 'sha384', size: 48 },
  nistp521: { crv: 'P-521', hash: 'sha512', size: 66 },
};

/** A CA key blob as a KeyObject, with how it signs. */
function caKey(blob: Buffer): { key: KeyObject; kind: 'ed25519' | 'ecdsa' | 'rsa'; curve?: (typeof CURVES)[string] } {
  const r = new Reader(blob);
  const type = r.string().toString('latin1');
  if (type === 'ssh-ed25519') {
    return { key: createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: b64url(r.string()) }, format: 'jwk' }), kind: 'ed25519' };
  }
  if (type.startsWith('ecdsa-sha2-')) {
    const curve = CURVES[r.string().toString('latin1')];
    if (!curve) throw new Error(`CA key curve of ${type} is not supported`);
    const q = r.string();
    const x = q.subarray(1, 1 + curve.size);
    const y = q.subarray(1 + curve.size);
    return { key: createPublicKey({ key: { kty: 'EC', crv: curve.crv, x: b64url(x), y: b64url(y) }, format: 'jwk' }), kind: 'ecdsa', curve };
  }
  if (type === 'ssh-rsa') {
    const e = unsigned(r.string());
    const n = unsigned(r.string());
    return { key: createPublicKey({ key: { kty: 'RSA', n: b64url(n), e: b64url(e) }, format: 'jwk' }), kind: 'rsa' };
  }
  throw new Error(`CA keys of type ${type} are not supported`);
}

/** Does the CA key's signature over the certificate hold? */
export function signatureHolds(cert: HostCertificate): boolean {
  const ca = caKey(cert.signatureKey);
  const sig = new Reader(cert.signature);
  const sigType = sig.string().toString('latin1');
  const value = sig.string();
  if (ca.kind === 'ed25519') return sigType === 'ssh-ed25519' && verify(null, cert.signed, ca.key, value);
  if (ca.kind === 'ecdsa') {
    const rs = new Reader(value);
    const pad = (b: Buffer) => Buffer.concat([Buffer.alloc(Math.max(0, ca.curve!.size - unsigned(b).length)), unsigned(b)]);
    const p1363 = Buffer.concat([pad(rs.string()), pad(rs.string())]);
    return verify(ca.curve!.hash, cert.signed, { key: ca.key, dsaEncoding: 'ieee-p1363' }, p1363);
  }
  // OpenSSH no longer accepts SHA-1 (ssh-rsa) signatures from a CA by default: neither do we.
  const hash = sigType === 'rsa-sha2-512' ? 'sha512' : sigType === 'rsa-sha2-256' ? 'sha256' : undefined;
  return !!hash && verify(hash, cert.signed, ca.key, value);
}

/** Why this certificate does not vouch for `host` now (undefined: it does, if its CA is trusted for the host). */
export function certificateProblem(cert: HostCertificate, host: string, now: Date = new Date()): string | undefined {
  if (cert.certType !== HOST_CERT) return `it is a user certificate (key id "${cert.keyId}"), not a host certificate`;
  const t = BigInt(Math.floor(now.getTime() / 1000));
  if (t < cert.validAfter) return `it is not valid before ${new Date(Number(cert.validAfter) * 1000).toISOString()} (key id "${cert.keyId}")`;
  if (t >= cert.validBefore) return `it expired at ${new Date(Number(cert.validBefore) * 1000).toISOString()} (key id "${cert.keyId}")`;
  if (cert.principals.length && !cert.principals.some((p) => p.toLowerCase() === host.toLowerCase())) {
    return `it names ${cert.principals.join(', ')}, not ${host} (key id "${cert.keyId}")`;
  }
  if (cert.criticalOptions.length) return `it has critical options k8s-ha does not know: ${cert.criticalOptions.join(', ')}`;
  try {
    if (!signatureHolds(cert)) return `its CA signature does not verify (key id "${cert.keyId}")`;
  } catch (e) {
    return (e as Error).message;
  }
  return undefined;
}
