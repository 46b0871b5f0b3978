/**
 * Bad input is refused through the real CLI before any connection: exit 2, the file, the path and
 * the fix. The nodes point at a port of this machine that counts the connections made to it: none
 * may be. (No lab host is needed; the suite's lab is simply not used here.)
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { k8sha } from '../helpers/cli.js';

let dir: string;
let server: net.Server;
let port: number;
let connections = 0;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-load-errors-'));
  server = net.createServer((s) => {
    connections++;
    s.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as net.AddressInfo).port;
  // A home of its own: ssh_config with a ProxyCommand that puts %r into a shell command.
  fs.mkdirSync(path.join(dir, 'home', '.ssh'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'home', '.ssh', 'config'), 'Host *\n  ProxyCommand echo %r\n');
});

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
  fs.rmSync(dir, { recursive: true, force: true });
});

function inventory(name: string, head: string, tls: string): string {
  const file = path.join(dir, name);
  fs.writeFileSync(
    file,
    `${head}
masters: [{ name: m1, address: 127.0.0.1, port: ${port} }]
nodes: [{ name: n1, address: 127.0.0.1, ssh: { port: ${port} } }, { name: n2, address: 127.0.0.2, ssh: { port: ${port} } }]
lb: { impl: haproxy, listen: "127.0.0.1:18443" }
tls: ${tls}
`,
  );
  return file;
}

const env = () => ({ HOME: path.join(dir, 'home') });

describe('refused at load, before any connection (exit 2)', () => {
  it('a shell command in ssh.user: deploy --check and status name the path, and it never runs', async () => {
    const mark = path.join(dir, 'X');
    const file = inventory('user.yaml', `ssh: { user: 'ops$(touch ${mark})' }`, '{ insecureSkipVerify: true }');
    for (const args of [['deploy', '--check', '-i', file], ['status', '-i', file]]) {
      const r = await k8sha(args, { env: env() });
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toContain(`${file}:1:14: ssh.user: "ops$(touch ${mark})" is not a user name: a login name is letters, digits`);
      expect(r.stderr).toContain('fix:');
    }
    // With --json, the same error as JSON on stdout: a script reading it gets an answer, not nothing.
    for (const args of [['deploy', '--check', '--json', '-i', file], ['status', '--json', '-i', file]]) {
      const r = await k8sha(args, { env: env() });
      expect(r.code, r.stderr).toBe(2);
      const out = JSON.parse(r.stdout) as { ok: boolean; exitCode: number; error: { message: string; hint?: string } };
      expect(out).toMatchObject({ schemaVersion: 1, ok: false, exitCode: 2 });
      expect(out.error.message).toContain(`${file}:1:14: ssh.user: "ops$(touch ${mark})" is not a user name`);
    }
    expect(fs.existsSync(mark)).toBe(false);
    expect(connections).toBe(0);
  });

  it('-u and --private-key are checked as the inventory\'s ssh: would be; K8S_HA_INVENTORY stands for -i', async () => {
    const mark = path.join(dir, 'U');
    const file = inventory('flags.yaml', '', '{ insecureSkipVerify: true }');
    for (const cmd of [['deploy', '--check'], ['status'], ['build']]) {
      const user = await k8sha([...cmd, '-u', `ops$(touch ${mark})`], { env: { ...env(), K8S_HA_INVENTORY: file } });
      expect(user.code, user.stderr).toBe(2);
      expect(user.stderr).toContain(`k8s-ha: error: -u "ops$(touch ${mark})" is not a user name: a login name is letters, digits`);
      const key = await k8sha([...cmd, '-i', file, '--private-key', path.join(dir, 'no-key')], { env: env() });
      expect(key.code, key.stderr).toBe(2);
      expect(key.stderr).toContain(`k8s-ha: error: --private-key: ${path.join(dir, 'no-key')} does not exist`);
    }
    fs.writeFileSync(path.join(dir, 'open-key'), 'not a key', { mode: 0o644 });
    const open = await k8sha(['deploy', '--check', '-i', file, '--private-key', path.join(dir, 'open-key')], { env: env() });
    expect(open.code, open.stderr).toBe(2);
    expect(open.stderr).toContain(`is readable by others (mode 0644): OpenSSH and k8s-ha refuse such a key; chmod 600`);
    expect(fs.existsSync(mark)).toBe(false);
    expect(connections).toBe(0);
  });

  it('a missing tls.caFile: deploy stops with the CA error, not at verify after the change is live', async () => {
    const file = inventory('ca.yaml', '', '{ caFile: pki/missing-ca.crt, serverName: kubernetes }');
    const r = await k8sha(['deploy', '-i', file], { env: env() });
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toContain(`${file}:5:16: tls.caFile: ${path.join(dir, 'pki/missing-ca.crt')} does not exist: point it at the cluster CA`);
    expect(r.stderr).not.toMatch(/unreachable|connect/i);
    expect(connections).toBe(0);
  });

  it('a missing ssh.identityFile: once, at load, not per node at login', async () => {
    const file = inventory('key.yaml', 'ssh: { identityFile: keys/none }', '{ insecureSkipVerify: true }');
    const r = await k8sha(['deploy', '--check', '-i', file], { env: env() });
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr.match(/keys\/none does not exist/g)).toHaveLength(1);
    expect(r.stderr).toContain(`${file}:1:22: ssh.identityFile: ${path.join(dir, 'keys/none')} does not exist`);
    expect(connections).toBe(0);
  });

  it("ssh_config's RevokedHostKeys naming a binary KRL: refused before any login, with the line that names it", async () => {
    const home = path.join(dir, 'home-krl');
    fs.mkdirSync(path.join(home, '.ssh'), { recursive: true });
    // What `ssh-keygen -k` writes starts with this magic; k8s-ha cannot read the rest, so nothing may pass as unrevoked.
    fs.writeFileSync(path.join(home, '.ssh', 'revoked.krl'), Buffer.concat([Buffer.from('SSHKRL\n\0', 'latin1'), Buffer.alloc(40)]));
    fs.writeFileSync(path.join(home, '.ssh', 'config'), 'Host *\n  StrictHostKeyChecking no\n  RevokedHostKeys ~/.ssh/revoked.krl\n');
    const file = inventory('krl.yaml', '', '{ insecureSkipVerify: true }');
    for (const args of [['deploy', '--check', '-i', file], ['status', '-i', file]]) {
      const r = await k8sha(args, { env: { HOME: home } });
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toContain(`${path.join(home, '.ssh', 'revoked.krl')} is a binary key revocation list (KRL), which k8s-ha does not read`);
      expect(r.stderr).toContain(`RevokedHostKeys at ${path.join(home, '.ssh', 'config')}:3`);
    }
    expect(connections).toBe(0);
  });

  it('a --repoint-timeout that cannot fit in timeouts.repoint: refused with the most it may be', async () => {
    const file = inventory('repoint.yaml', '', '{ insecureSkipVerify: true }');
    const r = await k8sha(['deploy', '--repoint-kubeconfigs', '--repoint-timeout', '2m', '-i', file], { env: env() });
    expect(r.code, r.stderr).toBe(2);
    // Two kubeconfigs by default, each waited for in turn, and 30 s for restarts, within the default 3 min.
    expect(r.stderr).toContain(`--repoint-timeout 120 s for each of 2 services, and the restarts, does not fit in timeouts.repoint (180 s) of ${file}`);
    expect(r.stderr).toContain('give --repoint-timeout at most 75s, or raise timeouts.repoint');
    expect(connections).toBe(0);
  });
});
