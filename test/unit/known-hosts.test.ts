import { createHmac } from 'node:crypto';
import ssh2 from 'ssh2';
import { describe, expect, it } from 'vitest';
import {
  checkHostKey,
  entryMatches,
  fingerprint,
  hostKeyName,
  keyTypeOf,
  knownHostsLine,
  preferredHostKeyTypes,
  parseKnownHosts,
  parseRevokedKeys,
} from '../../src/connect/known-hosts.js';

function key(): { line: string; blob: Buffer } {
  const pub = ssh2.utils.generateKeyPairSync('ed25519').public.trim();
  return { line: pub, blob: Buffer.from(pub.split(' ')[1]!, 'base64') };
}

describe('known_hosts', () => {
  const a = key();
  const b = key();

  it('files hosts on other ports as [host]:port', () => {
    expect(hostKeyName('10.0.0.1', 22)).toBe('10.0.0.1');
    expect(hostKeyName('10.0.0.1', 2222)).toBe('[10.0.0.1]:2222');
    expect(knownHostsLine('h', 2222, a.blob)).toBe(`[h]:2222 ssh-ed25519 ${a.blob.toString('base64')}`);
  });

  it('matches plain, comma-separated, wildcard and negated patterns', () => {
    expect(entryMatches('10.0.0.1,node-1', 'node-1', 22)).toBe(true);
    expect(entryMatches('10.0.0.*', '10.0.0.7', 22)).toBe(true);
    expect(entryMatches('10.0.0.*,!10.0.0.7', '10.0.0.7', 22)).toBe(false);
    expect(entryMatches('[10.0.0.1]:2222', '10.0.0.1', 2222)).toBe(true);
    expect(entryMatches('10.0.0.1', '10.0.0.1', 2222)).toBe(false);
  });

  it('matches hashed host names the way ssh-keygen -H writes them', () => {
    const salt = Buffer.from('0123456789abcdef0123');
    const hash = createHmac('sha1', salt).update('10.0.0.9').digest('base64');
    const hashed = `|1|${salt.toString('base64')}|${hash}`;
    expect(entryMatches(hashed, '10.0.0.9', 22)).toBe(true);
    expect(entryMatches(hashed, '10.0.0.8', 22)).toBe(false);
    // OpenSSH hashes the lower-cased name: Node-1 and node-1 are one host.
    const lower = `|1|${salt.toString('base64')}|${createHmac('sha1', salt).update('node-1').digest('base64')}`;
    expect(entryMatches(lower, 'Node-1', 22)).toBe(true);
  });

  it('says match, unknown, changed or revoked', () => {
    const entries = parseKnownHosts(`# comment\n10.0.0.1 ${a.line.split(' ').slice(0, 2).join(' ')}\n\n@revoked 10.0.0.2 ${b.line}\n`);
    expect(checkHostKey(entries, '10.0.0.1', 22, a.blob).status).toBe('match');
    expect(checkHostKey(entries, '10.0.0.3', 22, a.blob).status).toBe('unknown');
    const changed = checkHostKey(entries, '10.0.0.1', 22, b.blob);
    expect(changed.status).toBe('mismatch');
    expect(changed.status === 'mismatch' && changed.expected[0]!.line).toBe(2);
    expect(checkHostKey(entries, '10.0.0.2', 22, b.blob).status).toBe('revoked');
  });

  it('names key types and fingerprints as OpenSSH prints them', () => {
    expect(keyTypeOf(a.blob)).toBe('ssh-ed25519');
    expect(fingerprint(a.blob)).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/);
    const entries = parseKnownHosts(`h ssh-rsa AAAA\nh ${a.line}\n`);
    expect(preferredHostKeyTypes(entries, 'h', 22)).toEqual(['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa', 'ssh-ed25519']);
  });
});

describe("ssh_config's RevokedHostKeys file", () => {
  const a = key();
  const b = key();

  it('revokes every listed key for every host, whatever known_hosts says of it', () => {
    const listed = parseRevokedKeys(Buffer.from(`# retired hosts\n${a.line} old-node\n\n`), '/etc/ssh/revoked');
    if (!('entries' in listed)) throw new Error(listed.problem);
    const known = parseKnownHosts(`10.0.0.1 ${a.line}\n10.0.0.2 ${b.line}\n`);
    const all = [...known, ...listed.entries];
    expect(checkHostKey(all, '10.0.0.1', 22, a.blob)).toMatchObject({ status: 'revoked', entry: { file: '/etc/ssh/revoked', line: 2, revokedList: true } });
    expect(checkHostKey(all, 'elsewhere', 2222, a.blob).status).toBe('revoked');
    expect(checkHostKey(all, '10.0.0.2', 22, b.blob).status).toBe('match');
  });

  it('refuses a line that is not a key, naming it, and a binary KRL, saying how to list its keys', () => {
    expect(parseRevokedKeys(Buffer.from(`${a.line}\nssh-ed25519 AAAA-not-base64\n`), '/r')).toEqual({ problem: expect.stringMatching(/^\/r:2 is not a public key/) });
    // A type that is not the blob's own: a hand-edited line.
    expect(parseRevokedKeys(Buffer.from(`ssh-rsa ${a.line.split(' ')[1]}\n`), '/r')).toEqual({ problem: expect.stringMatching(/^\/r:1 is not a public key/) });
    const krl = Buffer.concat([Buffer.from('SSHKRL\n\0', 'latin1'), Buffer.alloc(32)]);
    expect(parseRevokedKeys(krl, '/r.krl')).toEqual({ problem: expect.stringMatching(/^\/r\.krl is a binary key revocation list \(KRL\).*one public key a line/) });
    expect(parseRevokedKeys(Buffer.from(''), '/empty')).toEqual({ entries: [] });
  });
});
