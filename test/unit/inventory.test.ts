import { describe, expect, it } from 'vitest';
import { parseInventory, resolvePaths } from '../../src/inventory/load.js';
import { formatDiagnostic, formatPath } from '../../src/inventory/diagnostics.js';

const GOOD = `
ssh: { user: root, identityFile: keys/id_ed25519, knownHostsFile: ~/.ssh/known_hosts }
masters:
  - { name: master-1, address: 192.0.2.11 }
  - { name: master-2, address: 192.0.2.12, port: 6444 }
nodes:
  - { name: node-1, address: 192.0.2.21 }
  - { name: node-2, address: node-2.example.internal, ssh: { user: deploy, port: 2222 } }
nginx:
  version: 1.22.1
  sources: [https://nginx.org/download/nginx-1.22.1.tar.gz]
  sha256: 9ebb333a9e82b952acd3e2b4aeb1d4ff6406f72491bab6cd9fe69f0dea737f31
`;

function lines(text: string): string[] {
  return parseInventory(text).diagnostics.map((d) => formatDiagnostic('inv.yaml', d));
}

describe('inventory', () => {
  it('accepts a plain inventory and fills the balancer defaults', () => {
    const { inventory, diagnostics } = parseInventory(GOOD);
    expect(diagnostics).toEqual([]);
    expect(inventory!.masters[0]!.port).toBe(6443);
    expect(inventory!.masters[1]!.port).toBe(6444);
    expect(inventory!.lb).toEqual({
      impl: 'nginx',
      listen: '127.0.0.1:8443',
      balance: 'least_conn',
      maxFails: 3,
      failTimeout: '30s',
      connectTimeout: '1s',
      proxyTimeout: '10m',
      prefix: '/opt/k8s/kube-nginx',
      runtime: 'auto',
    });
    expect(inventory!.nodes[1]!.ssh).toEqual({ user: 'deploy', port: 2222 });
  });

  it('build.host: one host, or a list of them (one per CPU architecture), each the controller or a node, none twice', () => {
    expect(parseInventory(`${GOOD}build: { host: [controller, node-1] }\n`).inventory!.build.host).toEqual(['controller', 'node-1']);
    expect(lines(`${GOOD}build: { host: [controller, node-9, node-1, controller] }\n`)).toEqual([
      'inv.yaml:13:29: build.host[1]: "node-9" is neither "controller" nor the name of a node',
      'inv.yaml:13:45: build.host[3]: "controller" is listed twice: list one build host per CPU architecture',
    ]);
    expect(lines(`${GOOD}build: { host: [] }\n`)[0]).toMatch(/^inv\.yaml:13:16: build\.host: /);
  });

  it('resolves relative paths against the inventory folder and ~ against home', () => {
    const inv = resolvePaths(parseInventory(GOOD).inventory!, '/etc/k8s-ha');
    expect(inv.ssh.identityFile).toBe('/etc/k8s-ha/keys/id_ed25519');
    expect(inv.ssh.knownHostsFile).toMatch(/^\/.+\/\.ssh\/known_hosts$/);
    expect(inv.ssh.knownHostsFile).not.toContain('~');
  });

  it('reports every error at once with file:line:col and path', () => {
    const text = `ssh:
  user: root
  identityFle: ~/.ssh/id
masters:
  - { name: master-1, address: 192.0.2.11, port: 6443 }
  - { name: master-2, address: "not an address!", port: 99999 }
nodes:
  - { name: node-1, address: 192.0.2.21 }
nginx:
  version: 1.22.1
  sources: [ftp://example.invalid/x.tar.gz]
  sha256: abc
`;
    expect(lines(text)).toEqual([
      'inv.yaml:3:3: ssh.identityFle: unknown key; did you mean identityFile?',
      'inv.yaml:6:32: masters[1].address: not an IP address or host name',
      'inv.yaml:6:57: masters[1].port: must be a port from 1 to 65535',
      'inv.yaml:11:13: nginx.sources[0]: must be an http:// or https:// URL',
      'inv.yaml:12:11: nginx.sha256: must be 64 lowercase hex digits',
    ]);
  });

  it('reports missing sections and empty lists', () => {
    expect(lines('masters: []\nnodes: []\n')).toEqual([
      'inv.yaml:1:10: masters: must name at least one apiserver',
      'inv.yaml:2:8: nodes: must name at least one node',
    ]);
  });

  it('asks for nginx where a node may run it, and for the cluster CA where kube-lb may run', () => {
    const base = 'masters: [{ name: m, address: 192.0.2.1 }]\nnodes: [{ name: a, address: 192.0.2.2 }, { name: b, address: 192.0.2.3, lb: { impl: kube-lb } }]\n';
    expect(lines(base)).toEqual([
      'inv.yaml:1:1: nginx: is required: a may run nginx (lb.impl nginx); add nginx: { version, sources, sha256 }, or set lb.impl: kube-lb',
      'inv.yaml:1:1: tls.caFile: is required where kube-lb may run: its health checks verify every apiserver with the cluster CA (e.g. /etc/kubernetes/pki/ca.crt); set tls.insecureSkipVerify: true only to check without verifying',
    ]);
    // All on kube-lb with a CA: no nginx section needed.
    expect(lines(base + 'lb: { impl: kube-lb }\ntls: { caFile: ca.crt }\n')).toEqual([]);
    // auto may run either: both are needed.
    expect(lines(base + 'lb: { impl: auto }\n').map((l) => l.split(':')[3])).toEqual([' nginx', ' tls.caFile']);
    expect(lines(base + 'lb: { impl: fastest }\n')).toEqual(['inv.yaml:3:13: lb.impl: must be one of nginx, kube-lb, haproxy, container, static-pod, auto']);
  });

  it('rejects duplicate names and addresses, naming both places', () => {
    const text = GOOD.replace('{ name: node-2, address: node-2.example.internal', '{ name: node-1, address: 192.0.2.21');
    expect(lines(text)).toEqual([
      'inv.yaml:8:13: nodes[1].name: duplicate name "node-1" (also nodes[0].name)',
      'inv.yaml:8:30: nodes[1].address: duplicate address "192.0.2.21" (also nodes[0].address)',
    ]);
  });

  it('warns (does not fail) on a non-loopback listen address and on hash balancing', () => {
    const { inventory, diagnostics } = parseInventory(GOOD + 'lb: { listen: 0.0.0.0:8443, balance: hash }\n');
    expect(inventory).toBeDefined();
    expect(diagnostics.map((d) => [d.severity, formatPath(d.path)])).toEqual([
      ['warning', 'lb.listen'],
      ['warning', 'lb.balance'],
    ]);
    expect(diagnostics[1]!.message).toMatch(/every node sends all its traffic to one apiserver/);
  });

  it('reports YAML syntax errors with their position', () => {
    const out = lines('masters:\n  - { name: a\nnodes: [\n');
    expect(out.length).toBeGreaterThan(0);
    expect(out[0]).toMatch(/^inv\.yaml:\d+:\d+: \(top level\): YAML: /);
  });
});

describe('inventory/inventory.example.yaml', () => {
  it('is a valid inventory with no warnings', async () => {
    const fs = await import('node:fs');
    const { diagnostics, inventory } = parseInventory(fs.readFileSync('inventory/inventory.example.yaml', 'utf8'));
    expect(diagnostics).toEqual([]);
    expect(inventory!.nodes.map((n) => n.name)).toEqual(['node-1', 'node-2', 'node-3']);
    expect(inventory!.build.host).toBe('controller');
  });
});
