/**
 * The stricter inventory: every rule with its exact message, from plain YAML text to diagnostics
 * as the CLI prints them (file:line:col: path: message).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ExitCode } from '../../src/errors.js';
import { InventoryError, formatDiagnostic } from '../../src/inventory/diagnostics.js';
import { loadInventory, parseInventory } from '../../src/inventory/load.js';

const NGINX = `nginx: { version: 1.22.1, sources: [http://x.invalid/n.tar.gz], sha256: ${'a'.repeat(64)} }`;

/** Diagnostics as printed: `inv.yaml:LINE:COL: [warning: ]PATH: MESSAGE`. */
function lines(text: string): string[] {
  return parseInventory(text).diagnostics.map((d) => formatDiagnostic('inv.yaml', d));
}

/** A valid inventory (its node may run either balancer) with `extra` sections appended. */
function inv(extra = '', nodes = '[{ name: n1, address: 10.0.0.21, lb: { impl: auto } }]', masters = '[{ name: m1, address: 10.0.0.11 }]'): string {
  return `masters: ${masters}\nnodes: ${nodes}\n${NGINX}\ntls: { caFile: ca.crt }\n${extra}\n`;
}

describe('1. digits and dots are an IPv4 address or an error, never a host name', () => {
  it('names what is wrong and how to write it, for masters and nodes', () => {
    const text = `masters:
  - { name: m1, address: 10.0.0.256 }
  - { name: m2, address: 10.0.0 }
  - { name: m3, address: 10.0.0.1.5 }
  - { name: m4, address: 010.0.0.1 }
  - { name: m5, address: "10..0.1" }
  - { name: m6, address: "167772161" }
nodes:
  - { name: n1, address: 10.0.0.300 }
  - { name: n2 }
${NGINX}
`;
    expect(lines(text)).toEqual([
      'inv.yaml:2:26: masters[0].address: "10.0.0.256" is not an IPv4 address (256 is above 255), and digits and dots are never a host name: write four numbers from 0 to 255, like 10.0.0.1',
      'inv.yaml:3:26: masters[1].address: "10.0.0" is not an IPv4 address (it has 3 numbers, not 4), and digits and dots are never a host name: write four numbers from 0 to 255, like 10.0.0.1',
      'inv.yaml:4:26: masters[2].address: "10.0.0.1.5" is not an IPv4 address (it has 5 numbers, not 4), and digits and dots are never a host name: write four numbers from 0 to 255, like 10.0.0.1',
      'inv.yaml:5:26: masters[3].address: "010.0.0.1" is not an IPv4 address: 010 has a leading zero, which some tools read as octal; write 10.0.0.1',
      'inv.yaml:6:26: masters[4].address: "10..0.1" is not an IPv4 address (it has an empty number), and digits and dots are never a host name: write four numbers from 0 to 255, like 10.0.0.1',
      'inv.yaml:7:26: masters[5].address: "167772161" is not an IPv4 address (it has 1 number, not 4), and digits and dots are never a host name: write four numbers from 0 to 255, like 10.0.0.1',
      'inv.yaml:9:26: nodes[0].address: "10.0.0.300" is not an IPv4 address (300 is above 255), and digits and dots are never a host name: write four numbers from 0 to 255, like 10.0.0.1',
    ]);
  });

  it('still takes host names with digits, and a node without an address', () => {
    expect(lines(inv('', '[{ name: n1, address: node1.dc-2.example }, { name: n2 }]', '[{ name: m1, address: 10-0-0-1.k8s.example }]'))).toEqual([]);
  });

  it('says where the port goes when an address has one, and refuses the wildcard addresses', () => {
    const text = inv(
      '',
      '[{ name: n1, address: "10.0.0.21:2222" }]',
      '[{ name: m1, address: "api.example:6443" }, { name: m2, address: 0.0.0.0 }, { name: m3, address: "::" }]',
    );
    expect(lines(text)).toEqual([
      'inv.yaml:1:32: masters[0].address: has a port: write the address alone (api.example) and the port as port: 6443',
      'inv.yaml:1:75: masters[1].address: 0.0.0.0 means every address, not one to connect to: write the master\'s own address',
      'inv.yaml:1:107: masters[2].address: :: means every address, not one to connect to: write the master\'s own address',
      'inv.yaml:2:30: nodes[0].address: has a port: write the address alone (10.0.0.21) and the SSH port as ssh: { port: 2222 }',
    ]);
  });
});

describe('2. IPv6', () => {
  it('masters and nodes take a plain IPv6 address (not in brackets, and no zone for a master)', () => {
    expect(lines(inv('', '[{ name: n1, address: "fd00::21" }, { name: n2, address: "fe80::2%eth0" }]', '[{ name: m1, address: "fd00::11" }]'))).toEqual([]);
    expect(lines(inv('', '[{ name: n1, address: "[fd00::21]" }]', '[{ name: m1, address: "fe80::1%eth0" }]'))).toEqual([
      "inv.yaml:1:32: masters[0].address: has an IPv6 zone (%eth0), which nginx's config and https:// URLs cannot carry: use the master's global or unique-local address",
      'inv.yaml:2:30: nodes[0].address: write an IPv6 address without brackets here: fd00::21 (brackets go only around the address in ADDRESS:PORT)',
    ]);
  });

  it('lb.listen and kubeLb.admin need brackets around IPv6, and say how to write it', () => {
    expect(lines(inv('lb: { listen: "[::1]:8443" }\nkubeLb: { admin: "[::1]:8444" }'))).toEqual([]);
    expect(lines(inv('lb: { listen: "::1:8443" }\nkubeLb: { admin: "fd00::1:8444" }'))).toEqual([
      'inv.yaml:5:15: lb.listen: an IPv6 address needs brackets before :PORT: write [::1]:8443',
      'inv.yaml:6:18: kubeLb.admin: an IPv6 address needs brackets before :PORT: write [fd00::1]:8444',
    ]);
  });

  it('lb.listen: every other way to get IP:PORT wrong, with its fix', () => {
    const listen = (v: string) => lines(inv(`lb: { listen: ${v} }`));
    expect(listen('"[127.0.0.1]:8443"')).toEqual(['inv.yaml:5:15: lb.listen: only an IPv6 address goes in brackets: write 127.0.0.1:8443']);
    expect(listen('"fd00::1"')).toEqual(['inv.yaml:5:15: lb.listen: has no port: write [fd00::1]:PORT, e.g. [fd00::1]:8443']);
    expect(listen('127.0.0.1')).toEqual(['inv.yaml:5:15: lb.listen: has no port: write 127.0.0.1:PORT, e.g. 127.0.0.1:8443']);
    expect(listen('localhost:8443')).toEqual(['inv.yaml:5:15: lb.listen: "localhost" is a host name: a balancer listens on an IP address, e.g. 127.0.0.1:8443']);
    expect(listen('10.0.0.256:8443')).toEqual([
      'inv.yaml:5:15: lb.listen: "10.0.0.256" is not an IPv4 address (256 is above 255), and digits and dots are never a host name: write four numbers from 0 to 255, like 10.0.0.1',
    ]);
    expect(listen('"[fe80::1%eth0]:8443"')).toEqual(['inv.yaml:5:15: lb.listen: has an IPv6 zone (%eth0), which nginx cannot listen on: use an address without one']);
    expect(listen('"here and there"')).toEqual(['inv.yaml:5:15: lb.listen: must be IP:PORT, e.g. 127.0.0.1:8443 or [::1]:8443']);
    expect(lines(inv('kubeLb: { admin: "nowhere" }'))).toEqual(['inv.yaml:5:18: kubeLb.admin: must be IP:PORT, e.g. 127.0.0.1:8444 or [::1]:8444']);
  });

  it('a duplicate IPv6 address is found however it is spelled', () => {
    expect(lines(inv('', '[{ name: n1, address: "fd00::21" }, { name: n2, address: "FD00:0:0::21" }]'))).toEqual([
      'inv.yaml:2:65: nodes[1].address: duplicate address "FD00:0:0::21" (also nodes[0].address)',
    ]);
  });
});

describe('3. ports and addresses that collide', () => {
  it('ports outside 1..65535 anywhere', () => {
    expect(lines(inv('ssh: { port: 0 }\nlb: { listen: "127.0.0.1:0" }\nkubeLb: { admin: "[::1]:65536" }', '[{ name: n1, address: 10.0.0.21, ssh: { port: 70000 } }]', '[{ name: m1, address: 10.0.0.11, port: 65536 }]'))).toEqual([
      'inv.yaml:5:14: ssh.port: must be a port from 1 to 65535',
      'inv.yaml:1:49: masters[0].port: must be a port from 1 to 65535',
      'inv.yaml:2:54: nodes[0].ssh.port: must be a port from 1 to 65535',
      'inv.yaml:6:15: lb.listen: port 0 is not from 1 to 65535',
      'inv.yaml:7:18: kubeLb.admin: port 65536 is not from 1 to 65535',
    ]);
  });

  it('kubeLb.admin on lb.listen: the same address and port, however written', () => {
    expect(lines(inv('kubeLb: { admin: 127.0.0.1:8443 }'))).toEqual([
      'inv.yaml:5:18: kubeLb.admin: 127.0.0.1:8443 is also lb.listen: kube-lb cannot listen twice on one address and port; use another port, e.g. 127.0.0.1:8444',
    ]);
    expect(lines(inv('lb: { listen: "[::1]:9000" }\nkubeLb: { admin: "[0:0::1]:9000" }'))).toEqual([
      'inv.yaml:6:18: kubeLb.admin: [0:0::1]:9000 is also lb.listen: kube-lb cannot listen twice on one address and port; use another port, e.g. [0:0::1]:9001',
    ]);
  });

  it('kubeLb.admin and lb.listen on one port where either is a wildcard', () => {
    expect(lines(inv('lb: { listen: "[::]:8443" }\nkubeLb: { admin: 127.0.0.1:8443 }'))).toEqual([
      'inv.yaml:6:18: kubeLb.admin: 127.0.0.1:8443 and lb.listen [::]:8443 both take port 8443 (:: is every address): kube-lb cannot listen on both; use another port, e.g. 127.0.0.1:8444',
      'inv.yaml:5:15: warning: lb.listen: [::]:8443 is not a loopback address: the node-local balancer will be reachable from the network',
    ]);
    // Different addresses on one port are two sockets; different ports never collide.
    expect(lines(inv('kubeLb: { admin: 127.0.0.2:8443 }'))).toEqual([]);
  });

  it('no kube-lb anywhere: kubeLb.admin is not used, so it cannot collide', () => {
    expect(lines(inv('kubeLb: { admin: 127.0.0.1:8443 }', '[{ name: n1, address: 10.0.0.21 }]'))).toEqual([]);
  });

  it("lb.listen on a master's port, on a node that is that master", () => {
    const masters = '[{ name: m1, address: 10.0.0.21 }, { name: m2, address: 10.0.0.12, port: 8443 }]';
    expect(lines(inv('lb: { listen: 10.0.0.21:6443 }', undefined, masters))).toEqual([
      'inv.yaml:5:15: lb.listen: 10.0.0.21:6443 takes port 6443 on node n1, which is also master m1 (10.0.0.21:6443): kube-apiserver listens on that port there (on every address unless --bind-address says otherwise); give the balancer another port, e.g. 10.0.0.21:8445',
      'inv.yaml:5:15: warning: lb.listen: 10.0.0.21:6443 is not a loopback address: the node-local balancer will be reachable from the network',
    ]);
    // On loopback too: kube-apiserver binds every address by default.
    expect(lines(inv('lb: { listen: 127.0.0.1:6443 }', undefined, masters))).toEqual([
      'inv.yaml:5:15: lb.listen: 127.0.0.1:6443 takes port 6443 on node n1, which is also master m1 (10.0.0.21:6443): kube-apiserver listens on that port there (on every address unless --bind-address says otherwise); give the balancer another port, e.g. 127.0.0.1:8445',
    ]);
    // m2 listens on 8443 on another host: no collision.
    expect(lines(inv('', undefined, masters))).toEqual([]);
  });

  it("kubeLb.admin on a master's port, on a node that is that master", () => {
    expect(lines(inv('kubeLb: { admin: 127.0.0.1:6443 }', undefined, '[{ name: m1, address: 10.0.0.21 }]'))).toEqual([
      "inv.yaml:5:18: kubeLb.admin: 127.0.0.1:6443 takes port 6443 on node n1, which is also master m1 (10.0.0.21:6443): kube-apiserver listens on that port there (on every address unless --bind-address says otherwise); give kube-lb's admin listener another port, e.g. 127.0.0.1:8444",
    ]);
  });

  it('a master on loopback is on every node', () => {
    expect(lines(inv('lb: { listen: 127.0.0.1:6443 }', undefined, '[{ name: m1, address: 127.0.0.1 }]'))).toEqual([
      "inv.yaml:5:15: lb.listen: 127.0.0.1:6443 takes port 6443 on every node, where master m1 (127.0.0.1:6443) is too (a loopback address): the balancer would take the apiserver's port or forward to itself; give the balancer another port, e.g. 127.0.0.1:8443",
    ]);
  });
});

describe('4. durations within bounds', () => {
  it('states the allowed range of each field', () => {
    const text = inv(
      'ssh: { connectTimeout: 50ms }\n' +
        'lb: { failTimeout: 500ms, connectTimeout: 76s, proxyTimeout: 25h }\n' +
        'kubeLb: { check: { interval: 50ms, fastInterval: 2h, timeout: 2m }, drainTimeout: 2h, shutdownTimeout: 99999999999999999999h }',
    );
    expect(lines(text)).toEqual([
      'inv.yaml:5:24: ssh.connectTimeout: must be from 100ms to 10m',
      'inv.yaml:6:20: lb.failTimeout: must be from 1s to 1h',
      'inv.yaml:6:43: lb.connectTimeout: must be from 100ms to 75s',
      'inv.yaml:6:62: lb.proxyTimeout: must be from 1s to 24h',
      'inv.yaml:7:30: kubeLb.check.interval: must be from 100ms to 1h',
      'inv.yaml:7:50: kubeLb.check.fastInterval: must be from 100ms to 1h',
      'inv.yaml:7:63: kubeLb.check.timeout: must be from 100ms to 1m',
      'inv.yaml:7:83: kubeLb.drainTimeout: must be from 0s to 1h',
      'inv.yaml:7:104: kubeLb.shutdownTimeout: must be from 0s to 1h',
    ]);
  });

  it('takes the bounds themselves, and 0s where 0 means at once', () => {
    const text = inv(
      'ssh: { connectTimeout: 100ms }\n' +
        'lb: { failTimeout: 1h, connectTimeout: 75s, proxyTimeout: 24h }\n' +
        'kubeLb: { check: { interval: 100ms, fastInterval: 1h, timeout: 1m }, drainTimeout: 0s, shutdownTimeout: 0ms }',
    );
    expect(lines(text)).toEqual([]);
  });

  it('a duration that is not one keeps its message', () => {
    expect(lines(inv('lb: { proxyTimeout: 10 minutes }'))).toEqual(['inv.yaml:5:21: lb.proxyTimeout: must be a duration like 500ms, 30s, 10m or 1h30m']);
  });
});

describe('5. prefixes are directories of their own', () => {
  const prefixes = (lb: string, kubeLb: string) => lines(inv(`lb: { prefix: ${lb} }\nkubeLb: { prefix: ${kubeLb} }`));

  it('absolute, plain characters, written plainly', () => {
    expect(prefixes('opt/kube-nginx', '"/opt//k8s/./kube-lb/"')).toEqual([
      'inv.yaml:5:15: lb.prefix: must be an absolute path, like /opt/k8s/kube-nginx',
      'inv.yaml:6:19: kubeLb.prefix: must be written plainly, without "//", "/./", "/../" or a trailing "/": write /opt/k8s/kube-lb',
    ]);
    expect(prefixes('"/opt/kube nginx"', '/opt/k8s/../kube-lb')).toEqual([
      'inv.yaml:5:15: lb.prefix: must be an absolute path of plain characters (letters, digits, ".", "_", "-" and "/"), like /opt/k8s/kube-nginx',
      'inv.yaml:6:19: kubeLb.prefix: must be written plainly, without "//", "/./", "/../" or a trailing "/": write /opt/kube-lb',
    ]);
  });

  it('not / nor a system directory', () => {
    expect(prefixes('/', '/usr/local')).toEqual([
      'inv.yaml:5:15: lb.prefix: is the root directory: k8s-ha puts sbin/ and conf/ in the prefix and owns them; use a directory of its own, like /opt/k8s/kube-nginx',
      'inv.yaml:6:19: kubeLb.prefix: /usr/local is a system directory: k8s-ha puts sbin/ and conf/ in the prefix and owns them; use a directory of its own, like /opt/k8s/kube-lb',
    ]);
    for (const dir of ['/usr', '/etc', '/bin', '/sbin', '/lib', '/lib64', '/boot', '/dev', '/proc', '/sys', '/run', '/var', '/opt', '/home', '/root', '/tmp', '/usr/bin', '/usr/sbin', '/usr/lib', '/var/lib']) {
      expect(prefixes(dir, '/opt/k8s/kube-lb'), dir).toEqual([
        `inv.yaml:5:15: lb.prefix: ${dir} is a system directory: k8s-ha puts sbin/ and conf/ in the prefix and owns them; use a directory of its own, like /opt/k8s/kube-nginx`,
      ]);
    }
  });

  it('not where the kernel or a reboot would take it away', () => {
    expect(prefixes('/proc/kube-nginx', '/run/kube-lb')).toEqual([
      "inv.yaml:5:15: lb.prefix: is under /proc, which is the kernel's, not a disk: use a directory of its own, like /opt/k8s/kube-nginx",
      'inv.yaml:6:19: kubeLb.prefix: is under /run, which is emptied at every boot: use a directory of its own, like /opt/k8s/kube-lb',
    ]);
  });

  it('not where the unit cannot see it (PrivateTmp, ProtectHome)', () => {
    expect(prefixes('/tmp/kube-nginx', '/home/ops/kube-lb')).toEqual([
      'inv.yaml:5:15: lb.prefix: is under /tmp, which kube-nginx.service cannot see (it runs with PrivateTmp=true): use a directory of its own, like /opt/k8s/kube-nginx',
      'inv.yaml:6:19: kubeLb.prefix: is under /home, which kube-lb.service cannot see (it runs with ProtectHome=true): use a directory of its own, like /opt/k8s/kube-lb',
    ]);
  });

  it('a subdirectory of a system directory is fine', () => {
    expect(prefixes('/opt/k8s/kube-nginx', '/usr/local/kube-lb')).toEqual([]);
    expect(prefixes('/srv/lb/nginx', '/var/lib/kube-lb')).toEqual([]);
  });
});

describe('6. YAML that would exhaust the reader', () => {
  it('an alias bomb ("billion laughs") is an error at its first alias, not a hang', () => {
    let bomb = 'a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n';
    let prev = 'a';
    for (const n of 'bcdefghi') {
      bomb += `${n}: &${n} [${Array(9).fill(`*${prev}`).join(', ')}]\n`;
      prev = n;
    }
    expect(lines(bomb)).toEqual([
      'inv.yaml:2:8: (top level): YAML: aliases expand to more than 100 copies, as in a "billion laughs" document: write the values out instead of *aliases',
    ]);
  });

  it('a few aliases are fine; an alias without its anchor is an error, not a crash', () => {
    expect(lines(inv('lb: &lb { listen: 127.0.0.1:8443 }').replace('masters: ', 'masters: &m '))).toEqual([]);
    expect(lines('masters: *nope\nnodes: []\n')).toEqual([
      'inv.yaml:1:10: (top level): YAML: alias *nope has no anchor &nope before it: define &nope first, or write the value out',
    ]);
  });

  it('a document over 1 MiB is refused before it is parsed', () => {
    expect(lines(`# ${'x'.repeat(1024 * 1024)}\n`)).toEqual(['inv.yaml: (top level): the inventory is over the 1 MiB limit: is this the right file?']);
  });

  it('nesting thousands deep is an error at the first level too deep, not a stack overflow', () => {
    expect(lines(`masters: ${'['.repeat(100_000)}${']'.repeat(100_000)}\n`)).toEqual([
      'inv.yaml:1:74: (top level): YAML: nested more than 64 levels deep: is this the right file?',
    ]);
    expect(lines(`masters:\n${'- '.repeat(100_000)}x\n`)).toEqual(['inv.yaml:2:127: (top level): YAML: nested more than 64 levels deep: is this the right file?']);
  });

  it('a duplicate key is named with both lines, also in a mapping of 50,000 keys (no quadratic check)', () => {
    expect(lines('ssh:\n  user: a\n  port: 22\n  user: b\nmasters: []\nnodes: []\n')).toEqual([
      'inv.yaml:4:3: ssh.user: duplicate key (also on line 2): keep one',
    ]);
    const big = Array.from({ length: 50_000 }, (_, i) => `k${i}: v`).join('\n') + '\nk7: again\n';
    const started = Date.now();
    expect(lines(big)).toEqual(['inv.yaml:50001:1: k7: duplicate key (also on line 8): keep one']);
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it('a value of the wrong type says what it must be; a missing one is required', () => {
    expect(lines('masters: 5\nnodes:\n')).toEqual(['inv.yaml:1:10: masters: must be a list of apiservers', 'inv.yaml:2:7: nodes: is required']);
  });

  it('loadInventory reads no more than the limit: exit 2 with the file named, even for /dev/zero', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'inventory-strict-'));
    const big = path.join(dir, 'big.yaml');
    fs.writeFileSync(big, `# ${'x'.repeat(2 * 1024 * 1024)}\n`);
    for (const file of [big, '/dev/zero']) {
      const e = await loadInventory(file).catch((err: unknown) => err);
      expect(e).toBeInstanceOf(InventoryError);
      expect((e as InventoryError).exitCode).toBe(ExitCode.usage);
      expect((e as InventoryError).message).toBe(
        `${file}: 1 error in the inventory\n  ${file}: (top level): the inventory is over the 1 MiB limit: is this the right file?`,
      );
    }
  });
});

describe('7. kubeLb.admin off loopback', () => {
  it('is a warning (its /metrics and /healthz have no authentication), not an error', () => {
    const { inventory, diagnostics } = parseInventory(inv('kubeLb: { admin: 10.0.0.21:8444 }'));
    expect(inventory).toBeDefined();
    expect(diagnostics.map((d) => formatDiagnostic('inv.yaml', d))).toEqual([
      "inv.yaml:5:18: warning: kubeLb.admin: 10.0.0.21:8444 is not a loopback address: kube-lb's /metrics and /healthz have no authentication, so anyone who can reach port 8444 can read them; keep it on 127.0.0.1 (or [::1]), or firewall the port",
    ]);
  });

  it('not for loopback in any spelling, nor where no node runs kube-lb', () => {
    expect(lines(inv('kubeLb: { admin: 127.1.2.3:8444 }'))).toEqual([]);
    expect(lines(inv('kubeLb: { admin: "[::1]:8444" }'))).toEqual([]);
    expect(lines(inv('kubeLb: { admin: "[::ffff:127.0.0.1]:8444" }'))).toEqual([]);
    expect(lines(inv('kubeLb: { admin: 0.0.0.0:8444 }', '[{ name: n1, address: 10.0.0.21, lb: { impl: nginx } }]'))).toEqual([]);
  });
});

describe('8. ssh.proxyJump', () => {
  it('is read by the parser that dials it: its message, at the value or at the bad list item', () => {
    expect(lines(inv('ssh: { proxyJump: "fd00::1" }'))).toEqual([
      'inv.yaml:5:19: ssh.proxyJump: "fd00::1" is not [user@]host[:port]: an IPv6 address goes in brackets, [fd00::1]',
    ]);
    expect(lines(inv('ssh: { proxyJump: [ops@gw1, "gw2:99999"] }'))).toEqual([
      'inv.yaml:5:29: ssh.proxyJump[1]: "gw2:99999" is not [user@]host[:port]: port 99999 is not from 1 to 65535',
    ]);
    expect(lines(inv('ssh: { proxyJump: [ops@gw1, none] }'))).toEqual(['inv.yaml:5:19: ssh.proxyJump: "none" cannot be combined with bastions']);
    expect(lines(inv('ssh: { proxyJump: "" }'))).toEqual(['inv.yaml:5:19: ssh.proxyJump: is empty: write [user@]host[:port], or none to go direct']);
    expect(lines(inv('ssh: { proxyJump: 42 }'))).toEqual(['inv.yaml:5:19: ssh.proxyJump: must be [user@]host[:port], a list of them, or none']);
  });

  it("a node's own ssh.proxyJump too", () => {
    expect(lines(inv('', '[{ name: n1, address: 10.0.0.21, ssh: { proxyJump: "-oProxyCommand=sh" } }]'))).toEqual([
      'inv.yaml:2:59: nodes[0].ssh.proxyJump: "-oProxyCommand=sh" is not [user@]host[:port]: "-oProxyCommand=sh" is not a host name or address',
    ]);
  });

  it('takes bastions, lists of them, and none', () => {
    expect(lines(inv('ssh: { proxyJump: "ops@gw1:2222,[fd00::9]" }', '[{ name: n1, address: 10.0.0.21, ssh: { proxyJump: none } }, { name: n2, address: 10.0.0.22, ssh: { proxyJump: [gw1, "ssh://gw2/"] } }]'))).toEqual([]);
  });
});

describe('nginx.statusListen', () => {
  const withStatus = (listen: string, extra = '') =>
    `masters: [{ name: m1, address: 10.0.0.11 }]\nnodes: [{ name: n1, address: 10.0.0.21 }]\nnginx:\n  version: 1.22.1\n  sources: [http://x.invalid/n.tar.gz]\n  sha256: ${'a'.repeat(64)}\n  statusListen: "${listen}"\n${extra}\n`;

  it('on loopback, apart from the other listeners: no diagnostic', () => {
    expect(lines(withStatus('127.0.0.1:8081'))).toEqual([]);
    expect(lines(withStatus('[::1]:8081'))).toEqual([]);
  });

  it('checked as lb.listen is: IP:PORT', () => {
    expect(lines(withStatus('localhost:8081'))).toEqual(['inv.yaml:7:17: nginx.statusListen: "localhost" is a host name: a balancer listens on an IP address, e.g. 127.0.0.1:8081']);
  });

  it('on lb.listen, kubeLb.admin or (on a node that is a VIP host) vip.statsListen: an error naming both and a free port', () => {
    expect(lines(withStatus('127.0.0.1:8443'))).toEqual([
      'inv.yaml:7:17: nginx.statusListen: 127.0.0.1:8443 is also lb.listen: nginx\'s status port needs a socket of its own on the node; use another port, e.g. 127.0.0.1:8081',
    ]);
    expect(lines(withStatus('127.0.0.1:8444'))).toEqual([
      'inv.yaml:7:17: nginx.statusListen: 127.0.0.1:8444 is also kubeLb.admin: nginx\'s status port needs a socket of its own on the node; use another port, e.g. 127.0.0.1:8081',
    ]);
    const vip = 'tls: { caFile: ca.crt }\nvip: { address: 10.0.0.100, hosts: [n1, m1] }';
    expect(lines(withStatus('127.0.0.1:8404', vip))).toEqual([
      'inv.yaml:7:17: nginx.statusListen: 127.0.0.1:8404 is also vip.statsListen: nginx\'s status port needs a socket of its own on the node; use another port, e.g. 127.0.0.1:8081',
    ]);
  });

  it('off loopback: a warning, stub_status has no authentication', () => {
    expect(lines(withStatus('0.0.0.0:8081'))).toEqual([
      'inv.yaml:7:17: warning: nginx.statusListen: 0.0.0.0:8081 is not a loopback address: nginx\'s /stub_status and /healthz have no authentication, so anyone who can reach port 8081 can read them; keep it on 127.0.0.1 (or [::1]), or firewall the port',
    ]);
    expect(lines(withStatus('0.0.0.0:8443'))[0]).toBe(
      "inv.yaml:7:17: nginx.statusListen: 0.0.0.0:8443 and lb.listen 127.0.0.1:8443 both take port 8443 (0.0.0.0 is every address): nginx's status port needs a socket of its own on the node; use another port, e.g. 0.0.0.0:8081",
    );
  });
});
