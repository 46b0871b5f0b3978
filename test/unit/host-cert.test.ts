/**
 * Host certificates made by the real ssh-keygen, checked against @cert-authority lines the way
 * `ssh` checks them.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { certificateProblem, isCertificate, parseHostCertificate } from '../../src/connect/host-cert.js';
import { checkHostKey, parseKnownHosts, parseRevokedKeys, preferredHostKeyTypes } from '../../src/connect/known-hosts.js';
import { hostCertificates } from '../../src/connect/ssh2-certs.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-cert-'));
// Its keys (a CA's among them) go with the tests: a test run leaves no key in /tmp.
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const keygen = (...args: string[]) => execFileSync('ssh-keygen', ['-q', ...args], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
const blobOf = (file: string) => Buffer.from(fs.readFileSync(path.join(dir, file), 'utf8').trim().split(/\s+/)[1]!, 'base64');
const lineOf = (file: string) => fs.readFileSync(path.join(dir, file), 'utf8').trim().split(/\s+/).slice(0, 2).join(' ');

function newKey(name: string, type = 'ed25519'): void {
  keygen('-t', type, '-N', '', '-C', name, '-f', name);
}

/** Sign host key `name` with `ca`; returns the certificate blob. */
function sign(ca: string, name: string, certName: string, extra: string[]): Buffer {
  fs.copyFileSync(path.join(dir, `${name}.pub`), path.join(dir, `${certName}.pub`));
  keygen('-s', ca, '-I', certName, ...extra, `${certName}.pub`);
  return blobOf(`${certName}-cert.pub`);
}

newKey('ca');
newKey('other-ca', 'ecdsa');
newKey('host');
newKey('host-ecdsa', 'ecdsa');
const good = sign('ca', 'host', 'good', ['-h', '-n', '10.0.0.5,bastion', '-V', '-5m:+1h']);
const anyName = sign('ca', 'host', 'any', ['-h', '-V', '-5m:+1h']);
const expired = sign('ca', 'host', 'expired', ['-h', '-n', '10.0.0.5', '-V', '20200101:20200102']);
const user = sign('ca', 'host', 'user', ['-n', '10.0.0.5']);
const otherCa = sign('other-ca', 'host', 'other', ['-h', '-n', '10.0.0.5']);
const ecdsaHost = sign('other-ca', 'host-ecdsa', 'ecdsa', ['-h', '-n', '10.0.0.5']);

const trust = (ca: string, pattern = '10.0.0.*') => parseKnownHosts(`@cert-authority ${pattern} ${lineOf(`${ca}.pub`)}\n`, '/kh');

describe('host certificates', () => {
  it('are parsed: type, certified key, principals, CA', () => {
    expect(isCertificate(good)).toBe(true);
    expect(isCertificate(blobOf('host.pub'))).toBe(false);
    const c = parseHostCertificate(good);
    expect(c.type).toBe('ssh-ed25519-cert-v01@openssh.com');
    expect(c.publicKey.equals(blobOf('host.pub'))).toBe(true);
    expect(c.signatureKey.equals(blobOf('ca.pub'))).toBe(true);
    expect(c.principals).toEqual(['10.0.0.5', 'bastion']);
    expect(c.certType).toBe(2);
  });

  it('are accepted with only a @cert-authority line for the host, from an ed25519 or an ecdsa CA', () => {
    expect(checkHostKey(trust('ca'), '10.0.0.5', 22, good).status).toBe('match');
    expect(checkHostKey(trust('other-ca'), '10.0.0.5', 22, ecdsaHost).status).toBe('match');
    expect(checkHostKey(trust('ca'), '10.0.0.7', 22, anyName).status).toBe('match');
  });

  it('are refused, with the reason, when expired, for users, for other names, or from a CA not trusted here', () => {
    expect(checkHostKey(trust('ca'), '10.0.0.5', 22, expired)).toEqual({ status: 'cert-invalid', reason: 'it expired at 2020-01-02T00:00:00.000Z (key id "expired")' });
    expect(checkHostKey(trust('ca'), '10.0.0.5', 22, user)).toEqual({ status: 'cert-invalid', reason: 'it is a user certificate (key id "user"), not a host certificate' });
    expect(checkHostKey(trust('ca'), '10.0.0.6', 22, good)).toEqual({ status: 'cert-invalid', reason: 'it names 10.0.0.5, bastion, not 10.0.0.6 (key id "good")' });
    expect(checkHostKey(trust('ca'), '10.0.0.5', 22, otherCa).status).toBe('cert-invalid');
    // A CA trusted only for other hosts vouches for nothing here: the host is simply unknown.
    expect(checkHostKey(trust('ca', '192.0.2.*'), '10.0.0.5', 22, good).status).toBe('unknown');
  });

  it('fall back to the plain key, as OpenSSH does, when the certificate is refused but the key is known', () => {
    const entries = [...trust('ca'), ...parseKnownHosts(`10.0.0.5 ${lineOf('host.pub')}\n`, '/kh')];
    expect(checkHostKey(entries, '10.0.0.5', 22, expired).status).toBe('match');
  });

  it('are refused when the CA or the certified key is @revoked', () => {
    const revokedCa = [...trust('ca'), ...parseKnownHosts(`@revoked * ${lineOf('ca.pub')}\n`, '/kh')];
    expect(checkHostKey(revokedCa, '10.0.0.5', 22, good).status).toBe('revoked');
    const revokedKey = [...trust('ca'), ...parseKnownHosts(`@revoked * ${lineOf('host.pub')}\n`, '/kh')];
    expect(checkHostKey(revokedKey, '10.0.0.5', 22, good).status).toBe('revoked');
  });

  it("are refused when RevokedHostKeys lists the CA, the certified key, or any certificate of that key", () => {
    const listed = (file: string) => {
      const r = parseRevokedKeys(fs.readFileSync(path.join(dir, file)), `/revoked/${file}`);
      if ('problem' in r) throw new Error(r.problem);
      return [...trust('ca'), ...r.entries];
    };
    expect(checkHostKey(listed('ca.pub'), '10.0.0.5', 22, good).status).toBe('revoked');
    expect(checkHostKey(listed('host.pub'), '10.0.0.5', 22, good).status).toBe('revoked');
    // As OpenSSH compares them, by public key: a listed certificate revokes the key it certifies, in
    // every certificate of it and as a plain key too.
    expect(checkHostKey(listed('any-cert.pub'), '10.0.0.5', 22, good).status).toBe('revoked');
    expect(checkHostKey([...listed('any-cert.pub'), ...parseKnownHosts(`10.0.0.5 ${lineOf('host.pub')}\n`)], '10.0.0.5', 22, blobOf('host.pub')).status).toBe('revoked');
    // Another key's certificate revokes nothing of this host's.
    expect(checkHostKey(listed('ecdsa-cert.pub'), '10.0.0.5', 22, good).status).toBe('match');
  });

  it('notice a forged signature', () => {
    const forged = Buffer.from(good);
    forged[forged.length - 10]! ^= 0xff;
    expect(certificateProblem(parseHostCertificate(forged), '10.0.0.5')).toBe('its CA signature does not verify (key id "good")');
  });

  it('are asked for first when a CA is trusted for the host and ssh2 was taught them', () => {
    expect(hostCertificates).toBe(true);
    expect(preferredHostKeyTypes(trust('ca'), '10.0.0.5', 22, true).slice(0, 2)).toEqual(['ssh-ed25519-cert-v01@openssh.com', 'ecdsa-sha2-nistp256-cert-v01@openssh.com']);
    expect(preferredHostKeyTypes(trust('ca'), '192.0.2.1', 22, true)).toEqual([]);
  });
});
