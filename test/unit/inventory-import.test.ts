/**
 * k8s-ha inventory import: a kubespray inventory (YAML, and the older INI) read into a k8s-ha
 * inventory of the same hosts, which loads as written. Plain files in test/fixtures.
 */
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { AnsibleImportError, importAnsible } from '../../src/inventory/ansible.js';
import { parseInventory } from '../../src/inventory/load.js';

const load = (text: string) => {
  const p = parseInventory(text);
  expect(p.diagnostics.filter((d) => d.severity === 'error')).toEqual([]);
  return p.inventory!;
};

describe('inventory import', () => {
  it("kubespray's hosts.yaml: kube_control_plane the masters, kube_node the nodes, shared SSH once, a host's own port kept", () => {
    const r = importAnsible(fs.readFileSync('test/fixtures/kubespray-hosts.yaml', 'utf8'), 'hosts.yaml');
    const inv = load(r.text);
    expect(inv.ssh).toMatchObject({ user: 'ops', identityFile: '~/.ssh/ops_ed25519' });
    expect(inv.masters.map((m) => [m.name, m.address, m.port])).toEqual([['cp1', '10.10.1.11', 6443], ['cp2', '10.10.1.12', 6443], ['cp3', '10.10.1.13', 6443]]);
    // cp1 is in both groups: one entry, a master that is also a node (its kubelet to its own apiserver).
    expect(inv.nodes.map((n) => [n.name, n.address, n.ssh?.port, n.repointTo])).toEqual([
      ['worker1', '10.10.1.21', undefined, undefined],
      ['worker2', '10.10.1.22', 2222, undefined],
      ['cp1', '10.10.1.11', undefined, 'cp1'],
    ]);
    expect(r.text).toContain('  - { name: cp1, address: 10.10.1.11, port: 6443, node: true }');
    expect(r.notes).toEqual([
      'masters: the hosts of [kube_control_plane]',
      'nodes: the hosts of [kube_node]',
      'not carried over (no k8s-ha equivalent, or set it in ssh_config): ansible_become',
      '3 masters, 3 nodes (cp1 both)',
    ]);
    // One line per host, as written by hand.
    expect(r.text).toContain('  - { name: worker2, address: 10.10.1.22, ssh: { port: 2222 } }');
  });

  it('the older INI: kube-master and kube-node, a range of workers kept as a range, the bastion from ansible_ssh_common_args', () => {
    const r = importAnsible(fs.readFileSync('test/fixtures/kubespray-hosts.ini', 'utf8'), 'inventory.ini');
    const inv = load(r.text);
    expect(inv.ssh.proxyJump).toBe('ops@203.0.113.5');
    expect(inv.masters.map((m) => [m.name, m.address])).toEqual([['master1', '192.168.10.11'], ['master2', '192.168.10.12']]);
    expect(inv.nodes.map((n) => [n.name, n.address, n.ssh?.user])).toEqual([['node01', undefined, 'ubuntu'], ['node02', undefined, 'ubuntu'], ['node03', undefined, 'ubuntu'], ['node04', undefined, 'ubuntu']]);
    expect(r.text).toContain('name: "node[01:04]"');
    expect(r.notes).toContain('not carried over (no k8s-ha equivalent, or set it in ssh_config): ansible_python_interpreter');
    expect(r.notes).toContain('2 masters, 4 nodes');
  });

  it('an inventory without a masters or nodes group says which groups it looked for', () => {
    expect(() => importAnsible('[web]\nw1\n', 'x.ini')).toThrow(new AnsibleImportError('x.ini: no masters group with hosts (looked for kube_control_plane, kube-master, kube_master, masters)'));
    expect(() => importAnsible('[kube_control_plane]\nm1 ansible_host=10.0.0.1\n', 'x.ini')).toThrow(/no nodes group with hosts \(looked for kube_node/);
    expect(() => importAnsible('[kube_control_plane]\nm1 ansible_host\n', 'x.ini')).toThrow('x.ini:2: "ansible_host" is not key=value');
  });
});
