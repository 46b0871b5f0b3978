/** Lab masters are SSH hosts like the nodes: their host keys, what an older lab.json says, the actions on them. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { afterAll, describe, expect, it } from 'vitest';
import { X509Certificate } from 'node:crypto';
import { ed25519KeyLength, ensureLabFiles } from '../../src/lab/files.js';
import { loadInventory } from '../../src/inventory/load.js';
import { partitionScript } from '../../src/lab/partition.js';
import { planOfState, readState, setMasterFault, STATE_KIND, writeState, type LabState } from '../../src/lab/state.js';
import { MASTER_APISERVER_UNIT, STANDIN_DRAIN_MS, STANDIN_SHUTDOWN_DELAY_MS } from '../../src/lab/images.js';
import { MASTER_ACTIONS, masterActionValue, planLab } from '../../src/lab/topology.js';

const images = { node: 'n:1', master: 'm:1', apiserver: 'a:1' };
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-lab-masters-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('lab files for masters', () => {
  it('every master gets its own host key in known_hosts, beside its serving certificate; the inventory lists it as before', async () => {
    const dir = path.join(tmp, 'lab');
    const tarball = path.join(tmp, 'nginx.tar.gz');
    fs.writeFileSync(tarball, 'not really a tarball');
    const plan = planLab({ id: 'k8s-ha-lab-abc', nodes: 1, masters: 2, subnet: '10.220.0.0/16', dir, images });
    const p = await ensureLabFiles(plan, dir, tarball);
    const known = fs.readFileSync(p.knownHosts, 'utf8').trim().split('\n');
    // Each host under both its addresses: a login by either is checked strictly.
    expect(known.map((l) => l.split(' ')[0])).toEqual([
      '10.220.1.11', 'fd00:6b38:a:dc::1:11',
      '10.220.1.12', 'fd00:6b38:a:dc::1:12',
      '10.220.2.11', 'fd00:6b38:a:dc::2:11',
    ]);
    for (const m of ['master-1', 'master-2']) {
      const pub = fs.readFileSync(path.join(dir, 'hosts', m, 'ssh_host_ed25519_key.pub'), 'utf8').trim().split(' ');
      const c = plan.containers.find((c) => c.service === m)!;
      expect(known).toContain(`${c.address} ${pub[0]} ${pub[1]}`);
      expect(known).toContain(`${c.address6} ${pub[0]} ${pub[1]}`);
      // The serving certificate is valid for the IPv6 address a client may dial, as for the IPv4 one.
      const cert = new X509Certificate(fs.readFileSync(path.join(dir, 'pki', m, 'tls.crt')));
      expect(cert.checkIP(c.address6)).toBe(c.address6);
      expect(cert.checkIP(c.address)).toBe(c.address);
      expect(cert.checkIP('::1')).toBe('::1');
    }
    expect(new Set(known.map((l) => l.split(' ')[2])).size).toBe(3);
    const inventory = YAML.parse(fs.readFileSync(p.inventory, 'utf8'));
    expect(inventory.masters).toEqual([
      { name: 'master-1', address: '10.220.1.11', port: 6443 },
      { name: 'master-2', address: '10.220.1.12', port: 6443 },
    ]);
    // inventory-ipv6.yaml: the same lab, every host by its IPv6 address, and an inventory k8s-ha loads.
    const loaded = await loadInventory(p.inventory6);
    expect(loaded.inventory.masters.map((m) => [m.name, m.address, m.port])).toEqual([
      ['master-1', 'fd00:6b38:a:dc::1:11', 6443],
      ['master-2', 'fd00:6b38:a:dc::1:12', 6443],
    ]);
    expect(loaded.inventory.nodes.map((n) => [n.name, n.address])).toEqual([['node-1', 'fd00:6b38:a:dc::2:11']]);
    expect(loaded.inventory.nginx?.sources[0]).toMatch(/^http:\/\/\[fd00:6b38:a:dc::10\]\/nginx-/);
    expect(loaded.inventory.lb.listen).toBe('127.0.0.1:8443');
  });
});

describe('lab.json', () => {
  const state = (imgs: LabState['images']): LabState => ({
    kind: STATE_KIND,
    version: 1,
    id: 'x',
    dir: '/x/.lab',
    nodes: 1,
    masters: 1,
    subnet: '10.220.0.0/16',
    images: imgs,
    createdAt: '2026-01-01T00:00:00.000Z',
  });

  it('of a current lab plans its masters from the master image', () => {
    expect(planOfState(state(images), '.lab').containers.find((c) => c.role === 'master')!.image).toBe('m:1');
  });

  it('of a lab made while masters were bare stand-ins is refused with what to run', () => {
    expect(() => planOfState(state({ node: 'n:0', apiserver: 'a:0' }), '.lab')).toThrow(/made by an older k8s-ha, whose masters were not hosts/);
  });
});

describe('lab master actions', () => {
  it('are the stand-in’s own, the kube-apiserver service’s, and the whole host’s', () => {
    expect([...MASTER_ACTIONS].sort()).toEqual([
      'anonymous-off', 'anonymous-on', 'crash', 'down', 'freeze', 'heal', 'lag', 'partition', 'power-off', 'power-on', 'ready', 'readyz-flood', 'recover', 'start', 'stop', 'thaw', 'unready', 'up',
    ]);
  });
});

describe('lab master partition', () => {
  const on = partitionScript(true);
  const off = partitionScript(false);

  it('drops what leaves eth0 in a blackhole qdisc and sends everything that arrives there, ARP included, into it', () => {
    const blackhole = on.indexOf('tc qdisc replace dev eth0 root blackhole');
    const redirect = on.indexOf('tc filter add dev eth0 parent ffff: protocol all prio 1 u32 match u32 0 0 action mirred egress redirect dev eth0');
    expect(blackhole).toBeGreaterThan(-1);
    expect(redirect).toBeGreaterThan(-1);
    // While the redirect stands without the blackhole, arriving packets would go back out onto the lab network.
    expect(blackhole).toBeLessThan(redirect);
  });

  it('heals by taking the redirect away before the blackhole', () => {
    const ingress = off.lastIndexOf('tc qdisc del dev eth0 ingress');
    const root = off.lastIndexOf('tc qdisc del dev eth0 root');
    expect(ingress).toBeGreaterThan(-1);
    expect(ingress).toBeLessThan(root);
  });

  it('changes nothing on a second run: it says kept when the host already is as asked', () => {
    expect(on).toMatch(/^if tc qdisc show dev eth0 root \| grep -q '\^qdisc blackhole' && tc filter show dev eth0 ingress \| grep -q mirred; then echo kept; else /);
    expect(off).toMatch(/then .* echo changed; else echo kept; fi$/);
  });

  it('quotes the interface name', () => {
    expect(partitionScript(true, "e'th")).toContain(`dev 'e'\\''th' root blackhole`);
  });
});

describe('lab.json faults', () => {
  it('records a partitioned or powered-off master and clears it, keeping the rest of the file', async () => {
    const dir = path.join(tmp, 'faults');
    fs.mkdirSync(dir);
    const s: LabState = { kind: STATE_KIND, version: 1, id: 'x', dir, nodes: 1, masters: 2, subnet: '10.220.0.0/16', images, createdAt: '2026-01-01T00:00:00.000Z' };
    await writeState(dir, s);
    await setMasterFault(dir, 'master-1', 'partitioned');
    await setMasterFault(dir, 'master-2', 'powered-off');
    expect((await readState(dir))!.faults).toEqual({ 'master-1': 'partitioned', 'master-2': 'powered-off' });
    await setMasterFault(dir, 'master-1', undefined);
    await setMasterFault(dir, 'master-2', undefined);
    expect(await readState(dir)).toEqual(s);
  });
});

describe('lab master lag and stop', () => {

  it('lag takes the watch cache\'s lag in whole milliseconds (0 turns it off); no other action takes a value', () => {
    expect(masterActionValue('lag', '2000')).toBe(2000);
    expect(masterActionValue('lag', '0')).toBe(0);
    for (const bad of [undefined, '2s', '-1', '600001', '1e3']) expect(() => masterActionValue('lag', bad)).toThrow(/whole milliseconds, 0 \(in step\) to 600000/);
    expect(masterActionValue('stop', undefined)).toBeUndefined();
    expect(() => masterActionValue('stop', '5')).toThrow(/stop takes no value/);
  });

  it('stop: systemd waits out the stand-in\'s whole shutdown sequence (delay + drain) before it would kill it', () => {
    expect(MASTER_APISERVER_UNIT).toMatch(new RegExp(`standin\\.js apiserver --shutdown-delay ${STANDIN_SHUTDOWN_DELAY_MS} --drain ${STANDIN_DRAIN_MS}\n`));
    const stopS = Number(/^TimeoutStopSec=(\d+)$/m.exec(MASTER_APISERVER_UNIT)?.[1]);
    expect(stopS * 1000).toBeGreaterThan(STANDIN_SHUTDOWN_DELAY_MS + STANDIN_DRAIN_MS + 5000);
  });
});

describe('lab SSH keys', () => {
  it('reads the key length of an ssh-ed25519 line: 32 for a sound key, 31 for one ssh2 1.17 stripped of a leading zero', () => {
    expect(ed25519KeyLength('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDAMlczMeA0eI1fSYFGGwFh/l129gAjg4zYnMdrBqMdR root@node-1')).toBe(32);
    // The key that kept a lab master's sshd from starting (seen in CI).
    expect(ed25519KeyLength('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAH2oqzWUH/8WhtngtZv42tdbtI52OxNLvbNdWQjUlxVM= root@master-1')).toBe(31);
  });
});
