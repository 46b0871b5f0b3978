import { describe, expect, it } from 'vitest';
import { resolveTarget } from '../../src/connect/targets.js';
import { parseInventory } from '../../src/inventory/load.js';

const base = (ssh: string, nodeSsh = '') =>
  parseInventory(`
ssh: ${ssh}
masters: [{ name: m1, address: 192.0.2.11 }]
nodes: [{ name: node-1, address: 192.0.2.21${nodeSsh} }]
nginx: { version: 1.22.1, sources: [http://x.invalid/n.tar.gz], sha256: ${'a'.repeat(64)} }
`).inventory!;

const SSH_CONFIG = `
Host node-*
  User admin
  Port 2200
  IdentityFile /keys/missing
  IdentityFile /keys/admin
Host 192.0.2.21
  StrictHostKeyChecking accept-new
  UserKnownHostsFile /kh/cluster
`;
const exists = (p: string) => p === '/keys/admin' || p.endsWith('/.ssh/id_rsa');

describe('SSH targets', () => {
  it('take ~/.ssh/config Host entries by node name or address when the inventory says nothing', () => {
    const inv = base('{}');
    expect(resolveTarget(inv, inv.nodes[0]!, { sshConfig: SSH_CONFIG, exists })).toMatchObject({
      address: '192.0.2.21',
      user: 'admin',
      port: 2200,
      identityFile: '/keys/admin',
      knownHostsFile: '/kh/cluster',
      strictHostKeyChecking: 'accept-new',
    });
  });

  it('let the inventory override ssh config, and the node override the inventory', () => {
    const inv = base('{ user: root, port: 22, identityFile: /keys/root, strictHostKeyChecking: "yes" }', ', ssh: { user: deploy }');
    expect(resolveTarget(inv, inv.nodes[0]!, { sshConfig: SSH_CONFIG, exists })).toMatchObject({
      user: 'deploy',
      port: 22,
      identityFile: '/keys/root',
      strictHostKeyChecking: 'yes',
    });
  });

  it('default like OpenSSH: port 22, strict host keys, ~/.ssh/known_hosts, the first default key that exists', () => {
    const inv = base('{}');
    const t = resolveTarget(inv, inv.nodes[0]!, { sshConfig: null, exists });
    expect(t).toMatchObject({ user: 'root', port: 22, strictHostKeyChecking: 'yes', connectTimeoutMs: 10_000 });
    expect(t.knownHostsFile).toMatch(/\/\.ssh\/known_hosts$/);
    expect(t.identityFile).toMatch(/\/\.ssh\/id_rsa$/);
  });

  it('--accept-new-host-keys relaxes only strict checking, never an explicit "no"', () => {
    const strict = base('{}');
    expect(resolveTarget(strict, strict.nodes[0]!, { sshConfig: null, exists, acceptNewHostKeys: true }).strictHostKeyChecking).toBe('accept-new');
    const off = base('{ strictHostKeyChecking: "no" }');
    expect(resolveTarget(off, off.nodes[0]!, { sshConfig: null, exists, acceptNewHostKeys: true }).strictHostKeyChecking).toBe('no');
  });
});
