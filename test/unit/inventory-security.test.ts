/**
 * What the inventory refuses at load because it would reach a shell or a config file (user names,
 * server names, node paths), and the files on this machine it names, checked before any connection.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ExitCode } from '../../src/errors.js';
import { formatDiagnostic } from '../../src/inventory/diagnostics.js';
import { loadInventory, parseInventory, resolvePaths } from '../../src/inventory/load.js';
import { parseStore } from '../../src/inventory/schema.js';

const BASE = `masters: [{ name: m1, address: 192.0.2.11 }]
nodes: [{ name: n1, address: 192.0.2.21 }, { name: n2, address: 192.0.2.22 }, { name: n3, address: 192.0.2.23 }]
lb: { impl: kube-lb }
`;

function lines(text: string): string[] {
  return parseInventory(text).diagnostics.map((d) => formatDiagnostic('inv.yaml', d));
}

const USER_FIX = 'a login name is letters, digits, "_", ".", "@" or "-", not starting with "-" (a trailing "$" allowed), at most 256 characters';

describe('user names (they reach ProxyCommand %r)', () => {
  const inv = (ssh: string, nodes = '') => `ssh: ${ssh}\n${BASE.replace(/^nodes:.*\n/m, nodes || 'nodes: [{ name: n1, address: 192.0.2.21 }]\n')}tls: { insecureSkipVerify: true }\n`;

  it('refuses a shell command in ssh.user, naming the path, line and the rule', () => {
    expect(lines(inv(`{ user: 'ops$(touch X)' }`))).toEqual([`inv.yaml:1:14: ssh.user: "ops$(touch X)" is not a user name: ${USER_FIX}`]);
  });

  it('in nodes[].ssh, masters[].ssh and a bastion of ssh.proxyJump alike', () => {
    const text = `ssh: { proxyJump: "a;b@gw" }
masters: [{ name: m1, address: 192.0.2.11, ssh: { user: "root\`id\`" } }]
nodes:
  - { name: n1, address: 192.0.2.21 }
  - { name: n2, address: 192.0.2.22 }
  - { name: n3, address: 192.0.2.23, ssh: { user: "-oProxyCommand=x" } }
tls: { insecureSkipVerify: true }
lb: { impl: kube-lb }
`;
    expect(lines(text)).toEqual([
      expect.stringMatching(/^inv\.yaml:1:19: ssh\.proxyJump: "a;b@gw" is not \[user@\]host\[:port\]: "a;b" is not a user name/),
      `inv.yaml:2:57: masters[0].ssh.user: "root\`id\`" is not a user name: ${USER_FIX}`,
      `inv.yaml:6:51: nodes[2].ssh.user: "-oProxyCommand=x" is not a user name: ${USER_FIX}`,
    ]);
  });

  it('accepts what useradd and directory services make: dots, dashes, underscores, a trailing $, capitals, user@domain; at most 256', () => {
    for (const u of ['root', 'ops.admin', 'svc-deploy_1', '_apt', 'MACHINE$', 'alice@corp.example.com', '1ops', 'a'.repeat(256)]) expect(lines(inv(`{ user: "${u}" }`)), u).toEqual([]);
    expect(lines(inv(`{ user: "${'a'.repeat(257)}" }`))[0]).toMatch(/ssh\.user: .* is longer than 256 characters/);
    expect(lines(inv('{ user: "-oProxyCommand=x" }'))[0]).toMatch(/ssh\.user: "-oProxyCommand=x" is not a user name/);
    expect(lines(inv('{ user: "" }'))[0]).toMatch(/ssh\.user: is empty/);
  });
});

describe('tls.serverName (written into haproxy and kube-lb configs)', () => {
  const inv = (tls: string) => `${BASE}tls: ${tls}\n`;

  it('refuses haproxy words and a newline, naming the path', () => {
    expect(lines(inv('{ insecureSkipVerify: true, serverName: "kubernetes verify none" }'))).toEqual([
      `inv.yaml:4:46: tls.serverName: "kubernetes verify none" is not a DNS name or IP address: write a name the apiservers' certificate carries, e.g. kubernetes or kubernetes.default.svc`,
    ]);
    expect(lines(inv('{ insecureSkipVerify: true, serverName: "kubernetes\\n    http-check send meth GET uri /x" }'))[0]).toMatch(
      /^inv\.yaml:4:46: tls\.serverName: "kubernetes\\n {4}http-check.*" is not a DNS name or IP address/,
    );
  });

  it('accepts DNS names and IP addresses', () => {
    for (const n of ['kubernetes', 'kubernetes.default.svc.cluster.local', '10.96.0.1', 'fd00::1']) expect(lines(inv(`{ insecureSkipVerify: true, serverName: "${n}" }`)), n).toEqual([]);
  });
});

describe('node paths (written into scripts and configs on the nodes)', () => {
  it('kubeconfigs[].path and kubeLb.check client files follow the one node path rule', () => {
    const text = `${BASE}tls: { insecureSkipVerify: true }
kubeconfigs: [{ path: "/etc/kubernetes/$(reboot).conf" }, { path: /etc/kubernetes/../shadow }]
kubeLb: { check: { clientCertFile: "/etc/pki/a b.crt" } }
`;
    expect(lines(text)).toEqual([
      'inv.yaml:6:36: kubeLb.check.clientCertFile: holds " ": a path on a node may hold only letters, digits and . _ + @ = : , / - (nothing a shell or a config file reads specially), like /etc/kubernetes/pki/apiserver-kubelet-client.crt',
      'inv.yaml:5:23: kubeconfigs[0].path: holds "$": a path on a node may hold only letters, digits and . _ + @ = : , / - (nothing a shell or a config file reads specially), like /etc/kubernetes/kubelet.kubeconfig',
      'inv.yaml:5:67: kubeconfigs[1].path: must not hold a ".." segment: write the path plainly, like /etc/kubernetes/kubelet.kubeconfig',
    ]);
  });
});

// Files on this machine: checked by loadInventory, relative to the inventory file.
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function folder(files: Record<string, string | { text: string; mode: number }>): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-inv-'));
  dirs.push(dir);
  for (const [name, f] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    const { text, mode } = typeof f === 'string' ? { text: f, mode: 0o600 } : f;
    fs.writeFileSync(path.join(dir, name), text, { mode });
    fs.chmodSync(path.join(dir, name), mode);
  }
  return dir;
}

/** A self-signed certificate made by openssl, as a cluster CA would be. */
function pemCert(dir: string): string {
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', '/CN=test-ca', '-days', '1', '-keyout', path.join(dir, 'ca.key'), '-out', path.join(dir, 'ca.pem')], { stdio: 'ignore' });
  return fs.readFileSync(path.join(dir, 'ca.pem'), 'utf8');
}

async function loadError(dir: string, text: string): Promise<{ code: number; message: string }> {
  fs.writeFileSync(path.join(dir, 'inv.yaml'), text);
  try {
    await loadInventory(path.join(dir, 'inv.yaml'));
  } catch (e) {
    return { code: (e as { exitCode: number }).exitCode, message: (e as Error).message };
  }
  throw new Error('the inventory loaded');
}

describe('files the inventory names on this machine, checked at load', () => {
  it('a missing tls.caFile: exit 2, naming the field, line and the file, relative to the inventory', async () => {
    const dir = folder({});
    const e = await loadError(dir, `${BASE}tls: { caFile: pki/ca.crt }\n`);
    expect(e.code).toBe(ExitCode.usage);
    expect(e.message).toContain(`${dir}/inv.yaml:4:16: tls.caFile: ${path.join(dir, 'pki/ca.crt')} does not exist: point it at the cluster CA`);
  });

  it('a tls.caFile that is not PEM certificates, or is a directory, or holds one that does not parse', async () => {
    const dir = folder({ 'garbage.crt': 'not a certificate\n', 'broken.crt': '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n' });
    fs.mkdirSync(path.join(dir, 'adir'));
    expect((await loadError(dir, `${BASE}tls: { caFile: garbage.crt }\n`)).message).toMatch(/tls\.caFile: .*garbage\.crt holds no PEM certificate/);
    expect((await loadError(dir, `${BASE}tls: { caFile: adir }\n`)).message).toMatch(/tls\.caFile: .*adir is not a regular file \(a directory\)/);
    const broken = await loadError(dir, `${BASE}tls: { caFile: broken.crt }\n`);
    expect(broken.code).toBe(ExitCode.usage);
    expect(broken.message).toMatch(/tls\.caFile: .*broken\.crt certificate 1 of 1 does not parse/);
  });

  it('build.store: missing, or writable by others, is refused at load naming the field and line; a shared one loads, relative to the inventory', async () => {
    const dir = folder({});
    const ca = pemCert(dir) && 'tls: { caFile: ca.pem }\n';
    const missing = await loadError(dir, `${BASE}${ca}build: { store: shared/store }\n`);
    expect(missing.code).toBe(ExitCode.usage);
    expect(missing.message).toContain(`${dir}/inv.yaml:5:17: build.store: ${path.join(dir, 'shared/store')} does not exist: mount the shared folder there`);
    fs.mkdirSync(path.join(dir, 'shared/store'), { recursive: true });
    fs.chmodSync(path.join(dir, 'shared/store'), 0o777);
    expect((await loadError(dir, `${BASE}${ca}build: { store: shared/store }\n`)).message).toMatch(/build\.store: .*shared\/store is writable by every user of this machine \(mode 0777\)/);
    fs.chmodSync(path.join(dir, 'shared/store'), 0o2775);
    fs.writeFileSync(path.join(dir, 'inv.yaml'), `${BASE}${ca}build: { store: shared/store }\n`);
    expect((await loadInventory(path.join(dir, 'inv.yaml'))).inventory.build.store).toBe(path.join(dir, 'shared/store'));
  });

  it("build.store on a build node (HOST:/PATH, as scp reads it) is kept as written, not checked here; a bad host, user or path is refused at load", async () => {
    const dir = folder({});
    const ca = pemCert(dir) && 'tls: { caFile: ca.pem }\n';
    for (const [spec, parsed] of [
      ['node-1:/srv/k8s-ha-store', { host: 'node-1', path: '/srv/k8s-ha-store' }],
      ['ops@store.example.com:/srv/store', { user: 'ops', host: 'store.example.com', path: '/srv/store' }],
      ['[fd00::5]:/srv/store', { host: 'fd00::5', path: '/srv/store' }],
      ['./a:b', { path: './a:b' }],
      ['/mnt/nfs/store', { path: '/mnt/nfs/store' }],
    ] as const) {
      expect([spec, parseStore(spec)]).toEqual([spec, parsed]);
    }
    fs.writeFileSync(path.join(dir, 'inv.yaml'), `${BASE}${ca}build: { store: "node-1:/srv/k8s-ha-store" }\n`);
    expect((await loadInventory(path.join(dir, 'inv.yaml'))).inventory.build.store).toBe('node-1:/srv/k8s-ha-store');
    const relative = await loadError(dir, `${BASE}${ca}build: { store: "node-1:srv/store" }\n`);
    expect(relative.code).toBe(ExitCode.usage);
    expect(relative.message).toContain(`${dir}/inv.yaml:5:17: build.store: the folder on node-1 must be an absolute path, like /srv/k8s-ha-store: write HOST:/PATH, like node-1:/srv/k8s-ha-store`);
    expect((await loadError(dir, `${BASE}${ca}build: { store: "node-1:/srv/a;reboot" }\n`)).message).toMatch(/build\.store: the folder on node-1 holds ";"/);
    expect((await loadError(dir, `${BASE}${ca}build: { store: "-oProxyCommand=x@node-1:/srv/a" }\n`)).message).toMatch(/build\.store: its user "-oProxyCommand=x" is not a user name/);
    expect((await loadError(dir, `${BASE}${ca}build: { store: "fe80::1:/srv/a" }\n`)).message).toContain('build.store: an IPv6 address goes in brackets: [fe80::1]:/srv/a');
    expect((await loadError(dir, `${BASE}${ca}build: { store: "::1:/srv/a" }\n`)).message).toContain('build.store: an IPv6 address goes in brackets: [::1]:/srv/a');
    expect((await loadError(dir, `${BASE}${ca}build: { store: "no_de:/srv/a" }\n`)).message).toMatch(/build\.store: "no_de" is not a host name or IP address: write HOST:\/PATH, like no_de:\/srv\/k8s-ha-store \(a local folder whose name holds a colon: write it as \.\/no_de:\/srv\/a\)/);
  });

  it('a real CA loads', async () => {
    const dir = folder({});
    pemCert(dir);
    fs.writeFileSync(path.join(dir, 'inv.yaml'), `${BASE}tls: { caFile: ca.pem }\n`);
    const loaded = await loadInventory(path.join(dir, 'inv.yaml'));
    expect(loaded.inventory.tls.caFile).toBe(path.join(dir, 'ca.pem'));
  });

  it('cluster.kubeconfig: missing, or with credentials k8s-ha cannot use, is refused at load naming the field and the path in the file; a usable one loads, relative to the inventory', async () => {
    const kc = (user: string) =>
      `apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts: [{ name: c, context: { cluster: k, user: u } }]\nclusters: [{ name: k, cluster: { server: 'https://127.0.0.1:8443' } }]\nusers: [{ name: u, user: ${user} }]\n`;
    const dir = folder({ 'exec.conf': kc('{ exec: { command: aws } }'), 'none.conf': kc('{}'), 'token.conf': kc('{ token: abc }') });
    pemCert(dir);
    const base = `${BASE}tls: { caFile: ca.pem }\n`;
    const missing = await loadError(dir, `${base}cluster: { kubeconfig: nope.conf }\n`);
    expect(missing.code).toBe(ExitCode.usage);
    expect(missing.message).toContain(`inv.yaml:5:24: cluster.kubeconfig: ${path.join(dir, 'nope.conf')} does not exist: point it at a kubeconfig allowed to list endpointslices`);
    expect((await loadError(dir, `${base}cluster: { kubeconfig: exec.conf }\n`)).message).toContain(`cluster.kubeconfig: ${path.join(dir, 'exec.conf')}: users[u]: uses an exec plugin, which k8s-ha does not run: use a kubeconfig with a client certificate or a token`);
    expect((await loadError(dir, `${base}cluster: { kubeconfig: none.conf }\n`)).message).toContain('users[u]: has no client certificate and no token');
    fs.writeFileSync(path.join(dir, 'inv.yaml'), `${base}cluster: { kubeconfig: token.conf }\n`);
    expect((await loadInventory(path.join(dir, 'inv.yaml'))).inventory.cluster).toEqual({ kubeconfig: path.join(dir, 'token.conf') });
  });

  it('a client key that is not a key is refused; one readable by others is warned of', async () => {
    const dir = folder({ 'bad.key': 'nope\n' });
    pemCert(dir);
    const bad = await loadError(dir, `${BASE}tls: { caFile: ca.pem, clientCertFile: ca.pem, clientKeyFile: bad.key }\n`);
    expect(bad.message).toMatch(/tls\.clientKeyFile: .*bad\.key is not a private key k8s-ha can read/);
    fs.chmodSync(path.join(dir, 'ca.key'), 0o644);
    fs.writeFileSync(path.join(dir, 'inv.yaml'), `${BASE}tls: { caFile: ca.pem, clientCertFile: ca.pem, clientKeyFile: ca.key }\n`);
    const loaded = await loadInventory(path.join(dir, 'inv.yaml'));
    expect(loaded.warnings).toEqual([expect.stringMatching(/inv\.yaml:4:63: warning: tls\.clientKeyFile: .*ca\.key is readable by others \(mode 0644\): chmod 600 /)]);
  });

  it('a missing ssh.identityFile, at every level, once at load (exit 2) and not per node at connect', async () => {
    const dir = folder({ 'keys/ok': 'key\n' });
    const text = `ssh: { identityFile: keys/missing }
masters: [{ name: m1, address: 192.0.2.11, ssh: { identityFile: keys/gone } }]
nodes: [{ name: n1, address: 192.0.2.21 }, { name: n2, address: 192.0.2.22, ssh: { identityFile: keys/ok } }, { name: n3, address: 192.0.2.23, ssh: { identityFile: keys/none } }]
lb: { impl: kube-lb }
tls: { insecureSkipVerify: true }
`;
    const e = await loadError(dir, text);
    expect(e.code).toBe(ExitCode.usage);
    expect(e.message.split('\n').slice(1)).toEqual([
      `  ${dir}/inv.yaml:1:22: ssh.identityFile: ${path.join(dir, 'keys/missing')} does not exist: point it at the private key to log in with (relative to the inventory file, ~ for your home), or leave it out to use ssh-agent and ~/.ssh/id_*`,
      `  ${dir}/inv.yaml:3:165: nodes[2].ssh.identityFile: ${path.join(dir, 'keys/none')} does not exist: point it at the private key to log in with (relative to the inventory file, ~ for your home), or leave it out to use ssh-agent and ~/.ssh/id_*`,
      `  ${dir}/inv.yaml:2:65: masters[0].ssh.identityFile: ${path.join(dir, 'keys/gone')} does not exist: point it at the private key to log in with (relative to the inventory file, ~ for your home), or leave it out to use ssh-agent and ~/.ssh/id_*`,
    ]);
  });

  it('an identity file others may read is refused, as OpenSSH refuses it', async () => {
    const dir = folder({ 'id': { text: 'key\n', mode: 0o644 } });
    const e = await loadError(dir, `ssh: { identityFile: id }\n${BASE}tls: { insecureSkipVerify: true }\n`);
    expect(e.message).toContain(`ssh.identityFile: ${path.join(dir, 'id')} is readable by others (mode 0644): OpenSSH and k8s-ha refuse such a key; chmod 600 ${path.join(dir, 'id')}`);
  });

  it("masters[].ssh paths are relative to the inventory file, as nodes' are", () => {
    const inv = parseInventory(`masters: [{ name: m1, address: 192.0.2.11, ssh: { identityFile: keys/m1, knownHostsFile: kh } }]\nnodes: [{ name: n1, address: 192.0.2.21, ssh: { identityFile: keys/n1 } }]\nlb: { impl: kube-lb }\ntls: { insecureSkipVerify: true }\n`).inventory!;
    const r = resolvePaths(inv, '/etc/k8s-ha');
    expect(r.masters[0]!.ssh).toMatchObject({ identityFile: '/etc/k8s-ha/keys/m1', knownHostsFile: '/etc/k8s-ha/kh' });
    expect(r.nodes[0]!.ssh!.identityFile).toBe('/etc/k8s-ha/keys/n1');
  });
});
