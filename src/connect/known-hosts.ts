/**
 * OpenSSH known_hosts, read the way `ssh` reads it: plain and hashed
 * (`|1|salt|hash`) host names, `[host]:port` for other ports, `*`/`?`
 * patterns, `!` negation and the `@revoked` marker. Pure: no I/O.
 */
import { createHash, createHmac } from 'node:crypto';
import { patternListMatches } from './ssh-config.js';
import { certificateProblem, isCertificate, parseHostCertificate, type HostCertificate } from './host-cert.js';

/** What ssh2 can negotiate once taught (ssh2-certs.ts): listed here so this module stays pure. */
export const CERT_HOST_KEY_ALGORITHMS = [
  'ssh-ed25519-cert-v01@openssh.com',
  'ecdsa-sha2-nistp256-cert-v01@openssh.com',
  'ecdsa-sha2-nistp384-cert-v01@openssh.com',
  'ecdsa-sha2-nistp521-cert-v01@openssh.com',
];

export interface KnownHostEntry {
  /** The file it came from ('' when parsed from text alone). */
  file: string;
  line: number;
  marker?: '@revoked' | '@cert-authority';
  /** Set for a key from ssh_config's RevokedHostKeys file: revoked for every host. */
  revokedList?: true;
  patterns: string;
  keyType: string;
  key: Buffer;
}

export type HostKeyCheck =
  | { status: 'match'; entry: KnownHostEntry }
  | { status: 'unknown' }
  | { status: 'revoked'; entry: KnownHostEntry }
  | { status: 'mismatch'; expected: KnownHostEntry[] }
  /** A host certificate that no trusted CA vouches for (or is expired, or names other hosts), and no plain key line either. */
  | { status: 'cert-invalid'; reason: string };

export function parseKnownHosts(text: string, file = ''): KnownHostEntry[] {
  const entries: KnownHostEntry[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const fields = line.split(/\s+/);
    let marker: KnownHostEntry['marker'];
    if (fields[0] === '@revoked' || fields[0] === '@cert-authority') marker = fields.shift() as KnownHostEntry['marker'];
    const [patterns, keyType, b64] = fields;
    if (!patterns || !keyType || !b64) return;
    entries.push({ file, line: i + 1, marker, patterns, keyType, key: Buffer.from(b64, 'base64') });
  });
  return entries;
}

/** OpenSSH's binary key revocation list (KRL) starts with these bytes. */
const KRL_MAGIC = Buffer.from('SSHKRL\n\0', 'latin1');

/**
 * ssh_config's RevokedHostKeys file as plain text: one public key a line (`TYPE BASE64 [comment]`),
 * each revoked for every host, and a certificate whose key or CA is listed revoked too (OpenSSH's
 * sshkey_in_file with check_ca). A line that is not a key is refused, not skipped: a typo in a
 * revocation list must not quietly let a revoked key in. A binary KRL (`ssh-keygen -k`) is refused
 * with the way to list its keys as text, since k8s-ha does not read KRLs.
 */
export function parseRevokedKeys(content: Buffer, file: string): { entries: KnownHostEntry[] } | { problem: string } {
  if (content.subarray(0, KRL_MAGIC.length).equals(KRL_MAGIC)) {
    return { problem: `${file} is a binary key revocation list (KRL), which k8s-ha does not read: list the revoked keys as text instead, one public key a line (the .pub files the KRL was made from)` };
  }
  const entries: KnownHostEntry[] = [];
  const lines = content.toString('utf8').split('\n');
  for (const [i, raw] of lines.entries()) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const [keyType, b64] = line.split(/\s+/);
    const key = b64 && /^[A-Za-z0-9+/]+={0,2}$/.test(b64) ? Buffer.from(b64, 'base64') : undefined;
    if (!keyType || !key || keyTypeOf(key) !== keyType) {
      return { problem: `${file}:${i + 1} is not a public key ("TYPE BASE64 [comment]", as in a .pub file)` };
    }
    // As OpenSSH compares them, by public key: a listed certificate revokes its key, and so every
    // certificate of that key and the plain key itself (compared whole, it would match nothing).
    let revoked: Buffer = key;
    if (isCertificate(key)) {
      try {
        revoked = parseHostCertificate(key).publicKey;
      } catch (e) {
        return { problem: `${file}:${i + 1} is a certificate that does not parse: ${(e as Error).message}` };
      }
    }
    entries.push({ file, line: i + 1, marker: '@revoked', revokedList: true, patterns: '*', keyType: keyTypeOf(revoked), key: revoked });
  }
  return { entries };
}

/** The name a host is filed under: `host` on port 22, `[host]:port` otherwise. */
export function hostKeyName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

/** Does an entry's host field name this host? */
export function entryMatches(patterns: string, host: string, port: number): boolean {
  const name = hostKeyName(host, port);
  if (patterns.startsWith('|1|')) {
    const [, , salt, hash] = patterns.split('|');
    if (!salt || !hash) return false;
    // OpenSSH hashes the lower-cased name.
    const mac = createHmac('sha1', Buffer.from(salt, 'base64')).update(name.toLowerCase()).digest('base64');
    return mac === hash;
  }
  // The same pattern lists as ssh_config's Host lines (OpenSSH's match_hostname).
  return patternListMatches(patterns.split(','), [name]);
}

/** The key type named inside an SSH public key blob (its first string). */
export function keyTypeOf(blob: Buffer): string {
  if (blob.length < 4) return 'unknown';
  const len = blob.readUInt32BE(0);
  return blob.subarray(4, 4 + len).toString('latin1');
}

export function fingerprint(blob: Buffer): string {
  return 'SHA256:' + createHash('sha256').update(blob).digest('base64').replace(/=+$/, '');
}

/**
 * Check what a host presented: a plain key against its known_hosts lines, a certificate against
 * the `@cert-authority` lines for the host (falling back to its plain key, as OpenSSH does).
 */
export function checkHostKey(entries: KnownHostEntry[], host: string, port: number, presented: Buffer, now: Date = new Date()): HostKeyCheck {
  if (!isCertificate(presented)) return checkPlainKey(entries, host, port, presented);
  let cert: HostCertificate;
  try {
    cert = parseHostCertificate(presented);
  } catch (e) {
    return { status: 'cert-invalid', reason: `malformed certificate: ${(e as Error).message}` };
  }
  const forHost = entries.filter((e) => entryMatches(e.patterns, host, port));
  const revoked = forHost.find((e) => e.marker === '@revoked' && (e.key.equals(cert.publicKey) || e.key.equals(cert.signatureKey)));
  if (revoked) return { status: 'revoked', entry: revoked };
  const plain = checkPlainKey(entries, host, port, cert.publicKey);
  const ca = forHost.find((e) => e.marker === '@cert-authority' && e.key.equals(cert.signatureKey));
  if (!ca) {
    if (plain.status !== 'unknown' || !forHost.some((e) => e.marker === '@cert-authority')) return plain;
    return { status: 'cert-invalid', reason: `its CA (${keyTypeOf(cert.signatureKey)} ${fingerprint(cert.signatureKey)}) is not a @cert-authority for ${hostKeyName(host, port)}` };
  }
  const problem = certificateProblem(cert, host, now);
  if (!problem) return { status: 'match', entry: ca };
  return plain.status === 'match' ? plain : { status: 'cert-invalid', reason: problem };
}

/** The plain public key of what a host presented (a certificate's certified key). */
export function plainKeyOf(presented: Buffer): Buffer {
  return isCertificate(presented) ? parseHostCertificate(presented).publicKey : presented;
}

function checkPlainKey(entries: KnownHostEntry[], host: string, port: number, presented: Buffer): HostKeyCheck {
  const forHost = entries.filter((e) => e.marker !== '@cert-authority' && entryMatches(e.patterns, host, port));
  const revoked = forHost.find((e) => e.marker === '@revoked' && e.key.equals(presented));
  if (revoked) return { status: 'revoked', entry: revoked };
  const plain = forHost.filter((e) => !e.marker);
  const match = plain.find((e) => e.key.equals(presented));
  if (match) return { status: 'match', entry: match };
  const type = keyTypeOf(presented);
  const sameType = plain.filter((e) => e.keyType === type);
  // Like OpenSSH, a host known only by keys of other types is "unknown" for this type,
  // but the connection asks for the known types first (see knownKeyTypes), so this is rare.
  if (sameType.length) return { status: 'mismatch', expected: sameType };
  return plain.length ? { status: 'mismatch', expected: plain } : { status: 'unknown' };
}

/**
 * Host key algorithms to offer first, so a host presents a key we know: certificates when a CA
 * is trusted for the host (and ssh2 can take them), then the types of its known plain keys.
 */
export function preferredHostKeyTypes(entries: KnownHostEntry[], host: string, port: number, certificates = false): string[] {
  const types = new Set<string>();
  if (certificates && entries.some((e) => e.marker === '@cert-authority' && entryMatches(e.patterns, host, port))) {
    CERT_HOST_KEY_ALGORITHMS.forEach((t) => types.add(t));
  }
  for (const e of entries) {
    if (e.marker || !entryMatches(e.patterns, host, port)) continue;
    if (e.keyType === 'ssh-rsa') ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'].forEach((t) => types.add(t));
    else types.add(e.keyType);
  }
  return [...types];
}

export function knownHostsLine(host: string, port: number, blob: Buffer): string {
  return `${hostKeyName(host, port)} ${keyTypeOf(blob)} ${blob.toString('base64')}`;
}
