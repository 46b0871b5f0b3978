/**
 * IPv6 end to end on the shared lab, whose network is dual-stack: the lab's inventory-ipv6.yaml
 * names every master, node and the nginx mirror by its IPv6 address, so SSH logins, the nginx
 * source URL, the balancers' upstreams, kube-lb's checks and status's probes all go over
 * IPv6 (the rendered configs name no IPv4 master address: no byte to a master can take IPv4).
 * Then lb.listen on [::1], a partitioned master and isolated nodes over IPv6. afterAll deploys
 * the lab's own inventory again: every node on kube-nginx at 127.0.0.1:8443, as the other files expect.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { httpsGet, ProbeTimeout } from '../../src/connect/https-probe.js';
import { setNodeIsolation } from '../../src/lab/isolation.js';
import { k8sha } from '../helpers/cli.js';
import { deployJson } from '../helpers/deploy.js';
import { quote } from '../../src/util/quote.js';
import { kubeLbMetrics, lab, scratchDir, withNode } from '../helpers/lab.js';

const V6 = /^fd00:6b38:/;
/** node-1 runs kube-nginx, node-2 kube-lb; node-3 stays out of these inventories. */
const nodes6 = () => lab().nodes.slice(0, 2).map((n) => ({ name: n.name, address: n.address6 }));

const readYaml = (file: string) => YAML.parse(fs.readFileSync(file, 'utf8'));

/** The lab's inventory-ipv6.yaml as a user would take it, cut to two nodes (one per balancer), changed. */
function ipv6Inventory(name: string, change: (inv: Record<string, any>) => void = () => {}): string {
  const inv = readYaml(lab().inventory6);
  inv.nodes = inv.nodes.slice(0, 2);
  inv.nodes[1].lb = { impl: 'kube-lb' };
  change(inv);
  const file = path.join(scratchDir(), `inventory.${name}.yaml`);
  fs.writeFileSync(file, YAML.stringify(inv));
  return file;
}

/** /version through a node's local port, from inside the node (over SSH to its IPv6 address). */
async function versionThrough(node: { name: string; address: string }, host: string): Promise<string> {
  return withNode(node, async (c) => {
    const r = await httpsGet(() => c.connectFromHost(host, 8443), { path: '/version', ca: lab().caPem, servername: 'kubernetes', timeoutMs: 5000 });
    expect(r.status, `${node.name} ${host}:8443`).toBe(200);
    return JSON.parse(r.body).standin;
  });
}

/** kubectl on a node, run over SSH to its IPv6 address (its kubeconfig: https://127.0.0.1:8443, or `server`): the stand-in that answered /version. */
async function kubectlVersion(node: { name: string; address: string }, server?: string): Promise<string> {
  const flags = server ? `--server ${quote(server)} --tls-server-name kubernetes ` : '';
  return withNode(node, async (c) => JSON.parse(await c.execOk(`kubectl ${flags}get --raw /version`)).standin);
}

/** What this machine gets from ADDRESS:PORT within ms: 'answer' (a first byte, as sshd's banner), 'closed', 'refused' or 'silent'. */
function tcpAnswer(address: string, port: number, send: string, ms: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ host: address, port });
    const done = (v: string) => {
      clearTimeout(t);
      s.destroy();
      resolve(v);
    };
    const t = setTimeout(() => done('silent'), ms);
    s.on('connect', () => s.write(send));
    s.on('data', () => done('answer'));
    s.on('end', () => done('closed'));
    s.on('error', (e: NodeJS.ErrnoException) => done(e.code === 'ECONNREFUSED' ? 'refused' : `error ${e.code}`));
  });
}

async function labMaster(name: string, action: string): Promise<void> {
  const r = await k8sha(['lab', 'master', '--dir', lab().dir, name, action]);
  if (r.code !== 0) throw new Error(`lab master ${name} ${action}: ${r.stderr}`);
}

afterAll(async () => {
  await setNodeIsolation(lab().dir, false);
  const m = lab().masters.at(-1)!;
  await labMaster(m.name, 'heal');
  const d = await deployJson(['-i', lab().inventory, '--serial', '100%']);
  expect(d.code, d.stderr).toBe(0);
});

describe.sequential('IPv6 on the dual-stack lab', () => {
  it('the lab gives every host an IPv6 address, and inventory-ipv6.yaml names masters, nodes and the mirror by it', () => {
    const inv = readYaml(lab().inventory6);
    expect(inv.masters.map((m: { address: string }) => m.address)).toEqual(lab().masters.map((m) => m.address6));
    expect(inv.nodes.map((n: { address: string }) => n.address)).toEqual(lab().nodes.map((n) => n.address6));
    for (const a of [...lab().masters, ...lab().nodes].map((h) => h.address6)) expect(a).toMatch(V6);
    expect(inv.nginx.sources[0]).toMatch(/^http:\/\/\[fd00:6b38:[0-9a-f:]+\]\//);
  });

  it('the mirror serves the nginx tarball at its IPv6 URL, the sha256 the inventory names', async () => {
    const inv = readYaml(lab().inventory6);
    const r = await fetch(inv.nginx.sources[0]);
    expect(r.status).toBe(200);
    expect(createHash('sha256').update(Buffer.from(await r.arrayBuffer())).digest('hex')).toBe(inv.nginx.sha256);
  });

  it('deploys kube-nginx and kube-lb over SSH to IPv6 addresses, toward masters named by IPv6: verified, kubectl answered through 127.0.0.1:8443', async () => {
    const inv = ipv6Inventory('ipv6');
    const d = await deployJson(['-i', inv, '--serial', '100%']);
    expect(d.code, d.stderr).toBe(0);
    const [n1, n2] = nodes6();
    expect(d.report.hosts[n1!.name]).toMatchObject({ impl: { impl: 'nginx' }, verified: { state: 'active (running)', status: 200 } });
    expect(d.report.hosts[n2!.name]).toMatchObject({ impl: { impl: 'kube-lb' }, verified: { state: 'active (running)', status: 200 } });

    // The configs name each master by its IPv6 address, bracketed, and by no IPv4 one.
    const v4 = lab().masters.map((m) => m.address);
    await withNode(n1!, async (c) => {
      const conf = await c.execOk('cat /opt/k8s/kube-nginx/conf/kube-nginx.conf');
      for (const m of lab().masters) expect(conf).toContain(`server [${m.address6}]:6443`);
      for (const a of v4) expect(conf).not.toContain(a);
    });
    await withNode(n2!, async (c) => {
      const conf = await c.execOk('cat /opt/k8s/kube-lb/conf/kube-lb.yaml');
      for (const m of lab().masters) expect(conf).toContain(`- name: ${m.name}\n    address: ${m.address6}\n    port: 6443\n`);
      for (const a of v4) expect(conf).not.toContain(a);
      // kube-lb's own HTTPS checks reached every master over IPv6 and found it ready.
      const metrics = await kubeLbMetrics(c);
      for (const m of lab().masters) expect(metrics).toMatch(new RegExp(`kube_lb_backend_up\\{backend="${m.name}",[^}]*\\} 1`));
    });

    // Real clients on the nodes: kubectl (its kubeconfig says https://127.0.0.1:8443) gets /version from a stand-in.
    for (const n of [n1!, n2!]) expect(await kubectlVersion(n)).toMatch(/^master-\d+$/);

    // status, over the same IPv6 logins: every master answers every node directly and through its local port.
    const s = await k8sha(['status', '-i', inv, '--json']);
    expect(s.code, s.stderr).toBe(0);
    const st = JSON.parse(s.stdout);
    for (const n of st.nodes) {
      expect(n.address).toMatch(V6);
      expect(n).toMatchObject({ healthy: true, service: 'active (running)' });
    }
    for (const m of lab().masters) expect(st.masters[m.name]).toEqual({ direct: 2, local: 2 });
  });

  it('lb.listen [::1]:8443: both balancers serve on the IPv6 loopback, verify and status probe it there', async () => {
    const inv = ipv6Inventory('ipv6-listen', (i) => (i.lb.listen = '[::1]:8443'));
    const d = await deployJson(['-i', inv, '--serial', '100%']);
    expect(d.code, d.stderr).toBe(0);
    for (const n of nodes6()) {
      expect(d.report.hosts[n.name]!.verified).toMatchObject({ state: 'active (running)', status: 200 });
      expect(await versionThrough(n, '::1')).toMatch(/^master-\d+$/);
      // kubectl toward [::1]: a client's bytes through the IPv6 listener.
      expect(await kubectlVersion(n, 'https://[::1]:8443')).toMatch(/^master-\d+$/);
      // The port moved: nothing answers on 127.0.0.1:8443 now.
      await withNode(n, async (c) => {
        expect(await c.execOk(`ss -Htln 'sport = :8443' | awk '{print $4}'`)).toBe('[::1]:8443\n');
      });
    }
    const s = await k8sha(['status', '-i', inv, '--json']);
    expect(s.code, s.stderr).toBe(0);
    for (const n of JSON.parse(s.stdout).nodes) expect(n).toMatchObject({ healthy: true, listening: true });
  });

  it('a master partitioned is silent over IPv6 as over IPv4, and status says it is down from every node', async () => {
    const m = lab().masters.at(-1)!;
    // An application answer (TLS, then HTTP), not a port accepting: /version from this machine.
    const version = (address: string, timeoutMs: number) =>
      httpsGet({ address, port: 6443 }, { path: '/version', ca: lab().caPem, servername: 'kubernetes', timeoutMs }).then(
        (r) => `HTTP ${r.status}`,
        (e: Error) => (e instanceof ProbeTimeout ? 'silent' : e.message),
      );
    expect(await version(m.address6, 5000)).toBe('HTTP 200');
    await labMaster(m.name, 'partition');
    try {
      expect(await version(m.address6, 1500)).toBe('silent');
      expect(await version(m.address, 1500)).toBe('silent');
      const s = await k8sha(['status', '-i', ipv6Inventory('ipv6-listen', (i) => (i.lb.listen = '[::1]:8443')), '--json']);
      const st = JSON.parse(s.stdout);
      expect(st.masters[m.name].direct).toBe(0);
      for (const o of lab().masters.slice(0, -1)) expect(st.masters[o.name].direct).toBe(2);
      for (const n of st.nodes) expect(n.healthy).toBe(true);
    } finally {
      await labMaster(m.name, 'heal');
    }
    expect(await version(m.address6, 5000)).toBe('HTTP 200');
  });

  it('nodes isolated from this machine answer no SSH on IPv6 either; through the bastion a deploy --check reaches them by IPv6', async () => {
    const n = nodes6()[0]!;
    expect(await tcpAnswer(n.address, 22, '', 3000)).toBe('answer');
    await setNodeIsolation(lab().dir, true);
    try {
      expect(await tcpAnswer(n.address, 22, '', 1500)).toBe('silent');
      expect(await tcpAnswer(lab().nodes[0]!.address, 22, '', 1500)).toBe('silent');
      const inv = ipv6Inventory('ipv6-bastion', (i) => {
        i.lb.listen = '[::1]:8443';
        i.ssh.proxyJump = `root@${lab().bastion.address}`;
      });
      const chk = await k8sha(['deploy', '-i', inv, '--check', '--limit', n.name]);
      expect(chk.code, chk.stderr).toBe(0);
      expect(chk.stdout).toContain(n.name);
    } finally {
      await setNodeIsolation(lab().dir, false);
    }
    expect(await tcpAnswer(n.address, 22, '', 3000)).toBe('answer');
  });
});
