/**
 * Host ranges and groups: forty workers in one line, shared settings said once, and every host
 * still checked as if written out, with a problem reported at the line that made it. Plain text in.
 */
import { describe, expect, it } from 'vitest';
import { formatDiagnostic } from '../../src/inventory/diagnostics.js';
import { expandRange } from '../../src/inventory/expand.js';
import { parseInventory } from '../../src/inventory/load.js';

const HEAD = `lb: { impl: kube-lb }
tls: { insecureSkipVerify: true }
masters:
  - { name: "master-[1:3]", address: "192.0.2.[11:13]" }
nodes:
`;
const lines = (text: string) => parseInventory(text).diagnostics.map((d) => formatDiagnostic('inv.yaml', d));

describe('host ranges', () => {
  it('a 43-host cluster in 5 lines: names and addresses expanded in step, zero-padded as written', () => {
    const { inventory, diagnostics } = parseInventory(`${HEAD}  - { name: "node-[01:40]", address: "10.0.1.[11:50]" }\n`);
    expect(diagnostics).toEqual([]);
    expect(inventory!.masters.map((m) => `${m.name} ${m.address}`)).toEqual(['master-1 192.0.2.11', 'master-2 192.0.2.12', 'master-3 192.0.2.13']);
    expect(inventory!.nodes).toHaveLength(40);
    expect(inventory!.nodes.slice(0, 2).concat(inventory!.nodes.slice(-1)).map((n) => `${n.name} ${n.address}`)).toEqual(['node-01 10.0.1.11', 'node-02 10.0.1.12', 'node-40 10.0.1.50']);
  });

  it('steps, no padding without a leading zero, a name range with no address (each dials its name), and plain text', () => {
    expect(expandRange('n-[1:9:4]')).toEqual({ values: ['n-1', 'n-5', 'n-9'] });
    expect(expandRange('n[8:10]')).toEqual({ values: ['n8', 'n9', 'n10'] });
    expect(expandRange('n[08:10]')).toEqual({ values: ['n08', 'n09', 'n10'] });
    expect(expandRange('plain')).toEqual({ values: ['plain'] });
    const { inventory } = parseInventory(`${HEAD}  - { name: "worker-[1:2].example.internal" }\n`);
    expect(inventory!.nodes.map((n) => [n.name, n.address])).toEqual([['worker-1.example.internal', undefined], ['worker-2.example.internal', undefined]]);
  });

  it('a range that cannot be right is refused at its line, with the fix', () => {
    expect(lines(`${HEAD}  - { name: "node-[5:1]", address: "10.0.1.[1:5]" }\n`)).toEqual(['inv.yaml:6:13: nodes[0].name: "node-[5:1]": the range starts after it ends: write [1:5]']);
    expect(lines(`${HEAD}  - { name: "node-[1:40]", address: "10.0.1.[1:30]" }\n`)).toEqual(['inv.yaml:6:37: nodes[0].address: makes 30 addresses for 40 names: the two ranges must be as long']);
    expect(lines(`${HEAD}  - { name: "node-[1:3]", address: 10.0.1.5 }\n`)).toEqual([
      'inv.yaml:6:36: nodes[0].address: is one address for the 3 hosts of "node-[1:3]": give it a range of 3 too (10.0.1.[5:7]), or leave it out to dial each name',
    ]);
    expect(lines(`${HEAD}  - { name: node, address: "10.0.1.[1:3]" }\n`)).toEqual(['inv.yaml:6:28: nodes[0].address: has a range but the name has none: give the name one of the same length (node-[1:3])']);
    expect(lines(`${HEAD}  - { name: "n-[1:2]-[1:2]" }\n`)[0]).toContain('nodes[0].name: "n-[1:2]-[1:2]" has 2 ranges: give it one');
    expect(lines(`${HEAD}  - { name: "n-[1:20000]" }\n`)[0]).toContain('makes 20000 hosts, more than 5000: is the range right?');
    expect(lines(`${HEAD}  - { name: "n-[a:c]" }\n`)[0]).toContain('has a range that is not one: write [START:END]');
  });

  it('a problem in one expanded host is reported at the line that made it, naming the host; so are duplicates across lines', () => {
    // 10.0.1.[250:260] runs past 255: the hosts from 10.0.1.256 on are not addresses.
    const out = lines(`${HEAD}  - { name: "node-[1:11]", address: "10.0.1.[250:260]" }\n`);
    expect(out[0]).toMatch(/^inv\.yaml:6:\d+: nodes\[0\]\.address: node-7: /);
    const dupes = lines(`${HEAD}  - { name: "node-[1:3]", address: "10.0.1.[1:3]" }\n  - { name: node-2, address: 10.0.1.9 }\n`);
    expect(dupes.join('\n')).toMatch(/inv\.yaml:7:\d+: nodes\[1\]\.name: .*node-2/);
  });
});

describe('groups', () => {
  const GROUPED = `${HEAD}  - { name: "node-[1:2]", address: "10.0.1.[1:2]" }
  - group: rocky
    ssh: { user: ops, port: 2200 }
    lb: { impl: kube-lb }
    hosts:
      - { name: "rocky-[1:3]", address: "10.0.2.[1:3]" }
      - { name: rocky-9, address: 10.0.2.9, ssh: { port: 2222 } }
`;

  it("give their settings to each of their hosts; a host's own keys win, inside ssh: key by key", () => {
    const { inventory, diagnostics } = parseInventory(GROUPED);
    expect(diagnostics).toEqual([]);
    expect(inventory!.nodes.map((n) => [n.name, n.address, n.ssh, n.lb?.impl])).toEqual([
      ['node-1', '10.0.1.1', undefined, undefined],
      ['node-2', '10.0.1.2', undefined, undefined],
      ['rocky-1', '10.0.2.1', { user: 'ops', port: 2200 }, 'kube-lb'],
      ['rocky-2', '10.0.2.2', { user: 'ops', port: 2200 }, 'kube-lb'],
      ['rocky-3', '10.0.2.3', { user: 'ops', port: 2200 }, 'kube-lb'],
      ['rocky-9', '10.0.2.9', { user: 'ops', port: 2222 }, 'kube-lb'],
    ]);
  });

  it("a problem in a group's own setting is reported at the group's line; one in a host's, at the host's", () => {
    const badGroup = GROUPED.replace('ssh: { user: ops, port: 2200 }', 'ssh: { user: "o ps", port: 2200 }');
    const out = lines(badGroup);
    expect(out[0]).toMatch(/^inv\.yaml:8:\d+: nodes\[1\]\.ssh\.user: rocky-1: "o ps" is not a user name/);
    const badHost = GROUPED.replace('ssh: { port: 2222 }', 'ssh: { port: 70000 }');
    expect(lines(badHost)[0]).toMatch(/^inv\.yaml:12:\d+: nodes\[1\]\.hosts\[1\]\.ssh\.port: rocky-9: /);
    expect(lines(GROUPED.replace('    lb: { impl: kube-lb }', '    lb: { impl: kube-lb }\n    name: x'))[0]).toContain("nodes[1].name: is a host's own: put it on each of the group's hosts");
    expect(lines(GROUPED.replace('    hosts:\n', '    hosts: 3\n').replace(/      - .*\n/g, ''))[0]).toContain("nodes[1].hosts: must be a list of this group's hosts");
  });
});

describe('a master that is also a node', () => {
  it('node: true makes it a node too, its kubelet going to its own apiserver; ranges included; listing it again is a duplicate', () => {
    const text = `lb: { impl: kube-lb }
tls: { insecureSkipVerify: true }
masters:
  - { name: "cp-[1:3]", address: "192.0.2.[11:13]", node: true }
nodes:
  - { name: worker-1, address: 10.0.1.1 }
`;
    const { inventory, diagnostics } = parseInventory(text);
    expect(diagnostics).toEqual([]);
    expect(inventory!.nodes.map((n) => [n.name, n.address, n.repointTo])).toEqual([
      ['worker-1', '10.0.1.1', undefined],
      ['cp-1', '192.0.2.11', 'cp-1'],
      ['cp-2', '192.0.2.12', 'cp-2'],
      ['cp-3', '192.0.2.13', 'cp-3'],
    ]);
    // Only masters, each also a node: no nodes list needed.
    expect(parseInventory(text.replace(/nodes:\n.*\n/, '')).inventory!.nodes.map((n) => n.name)).toEqual(['cp-1', 'cp-2', 'cp-3']);
    const twice = lines(`${text}  - { name: cp-2, address: 192.0.2.12 }\n`);
    expect(twice.join('\n')).toMatch(/duplicate name "cp-2"/);
  });
});
