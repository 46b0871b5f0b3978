/**
 * Following the control plane from the cluster, on the shared lab's four masters with an inventory
 * naming three: `status` reports how the cluster's apiservers (the kubernetes Service's
 * EndpointSlices, as the stand-ins keep them) differ from the inventory's; a master retired and
 * another added are rolled by `deploy --masters-from-cluster` with zero failed requests; an empty
 * or disjoint answer, a list below the floor and credentials without permission change nothing and
 * say why. kube-lb with discovery (kube-proxy's kubeconfig on the nodes) follows a master retired
 * and one added back on its own, with no deploy, zero failed requests and its own watch resumed.
 */
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { k8sha } from '../helpers/cli.js';
import { deployJson, inventoryVariant } from '../helpers/deploy.js';
import { lab, restoreMasters, scratchDir, withNode } from '../helpers/lab.js';
import { httpGetOnHost } from '../../src/engine/verify.js';
import { withLoad } from '../helpers/load.js';
import { expectNothingLost, kubectlOn, underFault } from '../helpers/kubectl.js';
import { movedOn } from '../../src/lab/reflector.js';
import { STANDIN_CONTROL_PORT } from '../../src/lab/topology.js';

interface ControlPlaneJson {
  inventory: string[];
  cluster: string[];
  notInCluster: string[];
  notInInventory: string[];
  via?: string;
  error?: string;
}

const l = lab();
const kubeconfig = path.join(l.dir, 'kubeconfig');
const [m1, m2, m3, m4] = l.masters.map((m) => ({ ...m, at: `${m.address}:${m.port}` }));
/** The name a run gives master-4, which the inventory does not list: from its address (the lab's subnet depends on its folder). */
const learned4 = `apiserver-${m4!.address.replace(/\./g, '-')}`;
/** The inventory an operator kept: three masters, and the kubeconfig to ask the cluster with. */
let three: string;

async function status(inventory: string, ...args: string[]) {
  const r = await k8sha(['status', '-i', inventory, '--json', ...args]);
  return { code: r.code, stderr: r.stderr, cp: (JSON.parse(r.stdout) as { controlPlane: ControlPlaneJson }).controlPlane };
}

/** What master-1's stand-in answers for the kubernetes Service: a list (a cluster gone odd), or its own view again (undefined). */
function answerAs(list: string[] | undefined): Promise<void> {
  const q = list === undefined ? '' : `?set=${list.join(',')}`;
  return new Promise((resolve, reject) => {
    const req = http.request({ host: m1!.address, port: STANDIN_CONTROL_PORT, method: 'POST', path: `/control/endpoints${q}` }, (res) => {
      res.resume();
      res.statusCode === 200 ? resolve() : reject(new Error(`control answered ${res.statusCode}`));
    });
    req.on('error', reject);
    req.end();
  });
}

beforeAll(async () => {
  three = inventoryVariant('three-masters', (inv) => {
    inv.masters = inv.masters.slice(0, 3);
    inv.cluster = { kubeconfig };
  });
  const d = await deployJson(['-i', three, '--serial', '100%']);
  expect(d.code, d.stderr).toBe(0);
});

afterAll(async () => {
  await answerAs(undefined).catch(() => undefined);
  await restoreMasters();
});

describe('the control plane from the cluster', () => {
  it('status: a master the cluster names and the inventory does not is drift, in text and JSON, exit 7', async () => {
    const s = await status(three);
    expect(s.code, s.stderr).toBe(7);
    expect(s.cp).toMatchObject({ via: 'master-1', inventory: [m1!.at, m2!.at, m3!.at], cluster: [m1!.at, m2!.at, m3!.at, m4!.at], notInCluster: [], notInInventory: [m4!.at] });
    const text = await k8sha(['status', '-i', three]);
    expect(text.code).toBe(7);
    expect(text.stdout).toContain(`the cluster's control plane is ${[m1, m2, m3, m4].map((m) => m!.at).join(', ')}; the inventory names ${[m1, m2, m3].map((m) => m!.at).join(', ')} (${m4!.at} is not in the inventory)`);
  });

  it('a master retired and another added: status names both; deploy --masters-from-cluster rolls every node to the cluster\'s list with zero failed requests', async () => {
    // Retired: its kube-apiserver stopped (it gives up its lease as its shutdown starts).
    const stop = await k8sha(['lab', 'master', '--dir', l.dir, 'master-3', 'stop']);
    expect(stop.code, stop.stderr).toBe(0);
    const s = await status(three);
    expect(s.code, s.stderr).toBe(7);
    expect(s.cp).toMatchObject({ cluster: [m1!.at, m2!.at, m4!.at], notInCluster: [m3!.at], notInInventory: [m4!.at] });

    const { result: d, reports } = await withLoad(l.nodes, () => deployJson(['-i', three, '--masters-from-cluster', '--serial', '1']));
    expect(d.code, d.stderr).toBe(0);
    expect(d.report).toMatchObject({ masters: { added: [m4!.at], removed: [m3!.at], floor: 2, names: { [m4!.at]: learned4 } } });
    expect(d.stderr).toContain(`+ ${m4!.at} (not in the inventory; named ${learned4} in this run)`);
    for (const r of reports) expect(r.failures, `${r.node}: ${r.failures.slice(0, 3).join('; ')}`).toEqual([]);
    for (const r of reports) expect(r.requests, r.node).toBeGreaterThan(0);

    // What it rolled is what an inventory naming the cluster's masters deploys: --check finds nothing to change,
    // and status, with that inventory, finds no drift.
    const updated = inventoryVariant('cluster-masters', (inv) => {
      inv.masters = [inv.masters[0], inv.masters[1], { name: learned4, address: m4!.address, port: m4!.port }];
      inv.cluster = { kubeconfig };
    });
    const check = await deployJson(['-i', updated, '--check']);
    expect(check.code, check.stderr).toBe(0);
    const after = await k8sha(['status', '-i', updated, '--json']);
    expect(after.code, after.stderr).toBe(0);
    const s2 = JSON.parse(after.stdout) as { controlPlane: ControlPlaneJson; masters: Record<string, { direct: number }> };
    expect(s2.controlPlane).toMatchObject({ notInCluster: [], notInInventory: [] });
    // Every node reaches the new master (verify's few requests through the local port need not land on it).
    expect(s2.masters[learned4]?.direct).toBe(l.nodes.length);
  });

  it('an empty or disjoint answer, or one below the floor, changes nothing and says why (exit 2, no node touched)', async () => {
    const refused = async (args: string[], why: RegExp) => {
      const d = await k8sha(['deploy', '-i', three, '--masters-from-cluster', ...args]);
      expect(d.code, d.stderr).toBe(2);
      expect(d.stderr).toMatch(why);
      expect(d.stderr).not.toMatch(/node-\d/);
    };
    try {
      await answerAs([]);
      await refused([], /the cluster names no ready apiserver: there would be nothing to balance to/);
      // Addresses of no lab (TEST-NET-2).
      await answerAs(['198.51.100.1:6443', '198.51.100.2:6443']);
      await refused([], /the cluster names 198\.51\.100\.1:6443, 198\.51\.100\.2:6443, none of the inventory's masters/);
    } finally {
      await answerAs(undefined);
    }
    await refused(['--min-masters', '4'], /3 apiservers, fewer than the floor of 4 \(--min-masters\)/);
    // Nodes still run what the last roll gave them.
    const updated = inventoryVariant('cluster-masters-again', (inv) => {
      inv.masters = [inv.masters[0], inv.masters[1], { name: learned4, address: m4!.address, port: m4!.port }];
    });
    const check = await deployJson(['-i', updated, '--check']);
    expect(check.code, check.stderr).toBe(0);
  });

  it('credentials not allowed to list endpointslices: status says so (exit 6 with every node healthy), deploy refuses (exit 2); a bad kubeconfig is refused before any connection', async () => {
    // The health checks' identity: allowed only /readyz and /livez, as such a user is in a cluster.
    const doc = YAML.parse(fs.readFileSync(kubeconfig, 'utf8'));
    doc.users[0].user = { 'client-certificate': path.join(l.dir, 'pki', 'lab-readyz.crt'), 'client-key': path.join(l.dir, 'pki', 'lab-readyz.key') };
    const forbidden = path.join(scratchDir(), 'kubeconfig.health-only');
    fs.writeFileSync(forbidden, YAML.stringify(doc), { mode: 0o600 });
    const s = await status(three, '--kubeconfig', forbidden);
    expect(s.code, s.stderr).toBe(6);
    expect(s.cp.error).toContain(`master-1 (${m1!.at}) refused the list (403 Forbidden: endpointslices.discovery.k8s.io is forbidden: User "k8s-ha-health" cannot list`);
    const d = await k8sha(['deploy', '-i', three, '--masters-from-cluster', '--kubeconfig', forbidden]);
    expect(d.code).toBe(2);
    expect(d.stderr).toMatch(/403 Forbidden.*\n.*allowed to list endpointslices/);

    // An exec plugin k8s-ha does not run: exit 2 at once, naming the file and the path in it.
    doc.users[0].user = { exec: { command: 'aws', apiVersion: 'client.authentication.k8s.io/v1beta1' } };
    const exec = path.join(scratchDir(), 'kubeconfig.exec');
    fs.writeFileSync(exec, YAML.stringify(doc));
    const bad = await k8sha(['status', '-i', three, '--kubeconfig', exec]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain(`${exec}: users[lab-admin]: uses an exec plugin, which k8s-ha does not run`);
    expect(bad.stdout).toBe('');
  });
});

interface DiscoveryJson {
  enabled: boolean;
  configured: string[];
  learned?: string[];
  backends: { name: string; address: string; up: boolean }[];
  watching: boolean;
  problem?: string;
  lists: number;
  watches: number;
}

/** kube-lb's /discovery on every node, asked over SSH. */
async function discoveryOn(): Promise<Record<string, DiscoveryJson>> {
  const out: Record<string, DiscoveryJson> = {};
  await Promise.all(
    l.nodes.map((n) =>
      withNode(n, async (c) => {
        const r = await httpGetOnHost(c, '127.0.0.1:8444', '/discovery', 3000);
        out[n.name] = JSON.parse(r.body);
      }),
    ),
  );
  return out;
}

/** Polls every node's kube-lb until each balances to exactly `want` (ADDRESS:PORT): how long that took, from `t0`. */
async function followed(want: string[], t0: number, limitMs = 20_000): Promise<{ ms: number; last: Record<string, DiscoveryJson> }> {
  let last: Record<string, DiscoveryJson> = {};
  for (;;) {
    last = await discoveryOn();
    const done = Object.values(last).every((d) => [...d.backends.map((b) => b.address)].sort().join() === [...want].sort().join());
    if (done || Date.now() - t0 > limitMs) return { ms: Date.now() - t0, last };
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('kube-lb follows the cluster on its own (kubeLb.discovery)', () => {
  let withDiscovery: string;

  beforeAll(async () => {
    await restoreMasters();
    withDiscovery = inventoryVariant('discovery', (inv) => {
      inv.masters = inv.masters.slice(0, 3);
      inv.lb = { ...inv.lb, impl: 'kube-lb' };
      inv.kubeLb = { discovery: { kubeconfig: '/var/lib/kube-proxy/kubeconfig' } };
      inv.cluster = { kubeconfig };
    });
    const d = await deployJson(['-i', withDiscovery, '--serial', '100%']);
    expect(d.code, d.stderr).toBe(0);
  });

  it('learns the master the inventory does not name, then follows one retired and one added back within 10 s, with zero failed requests; its own watch resumed, one list per node', async () => {
    const all = [m1, m2, m3, m4].map((m) => m!.at);
    const first = await followed(all, Date.now());
    for (const [node, d] of Object.entries(first.last)) {
      expect(d.backends.map((b) => b.address).sort(), `${node}: ${d.problem ?? ''}`).toEqual([...all].sort());
      expect(d).toMatchObject({ enabled: true, watching: true, configured: [m1!.at, m2!.at, m3!.at] });
    }
    // status shows the learned set beside the configured one.
    const st = await k8sha(['status', '-i', withDiscovery]);
    expect(st.stdout).toContain(`node-1: kube-lb discovery: the cluster names ${[...all].sort().join(', ')}; balancing to`);
    expect(st.stdout).toContain(`configured: ${m1!.at}, ${m2!.at}, ${m3!.at}`);

    const { result, reports } = await withLoad(l.nodes, async () => {
      const t0 = Date.now();
      const stop = k8sha(['lab', 'master', '--dir', l.dir, 'master-2', 'stop']);
      // Retired: master-2 (a seed) out once the cluster names master-4 in its place.
      const retired = await followed([m1!.at, m3!.at, m4!.at], t0);
      expect((await stop).code).toBe(0);
      const t1 = Date.now();
      const start = await k8sha(['lab', 'master', '--dir', l.dir, 'master-2', 'start']);
      expect(start.code).toBe(0);
      const added = await followed(all, t1);
      return { retired, added };
    });
    expect(result.retired.ms, JSON.stringify(result.retired.last)).toBeLessThanOrEqual(10_000);
    expect(result.added.ms, JSON.stringify(result.added.last)).toBeLessThanOrEqual(10_000);
    for (const r of reports) {
      expect(r.failures, `${r.node}: ${r.failures.slice(0, 3).join('; ')}`).toEqual([]);
      expect(r.requests, r.node).toBeGreaterThan(0);
    }
    // One watch held all along (made again only when its apiserver went), and a single list.
    for (const [node, d] of Object.entries(result.added.last)) {
      expect(d.lists, node).toBe(1);
      expect(d.watches, node).toBeLessThanOrEqual(2);
    }
  });

  it("a real client's watch on the apiserver that leaves the cluster resumes on another, no event lost, whether kube-lb learned it or was configured with it", async () => {
    // kubectl's reflector on node-1 through its kube-lb; the stand-in its watch is on is retired (its kube-apiserver stopped).
    const run = await underFault(await kubectlOn('node-1'), {
      key: (v) => `stop ${v}`,
      apply: (v) => k8sha(['lab', 'master', '--dir', l.dir, v, 'stop']),
      undo: (v) => k8sha(['lab', 'master', '--dir', l.dir, v, 'start']),
      recovered: movedOn,
      timeoutMs: 30_000,
      what: 'events from another stand-in',
    });
    expectNothingLost(run, 'kube-lb with discovery');
    // And kube-lb balances to all four again once it is back, with no deploy.
    const back = await followed([m1, m2, m3, m4].map((m) => m!.at), Date.now());
    expect(back.ms, JSON.stringify(back.last)).toBeLessThanOrEqual(10_000);
  });

  it('without permission to list endpointslices: kube-lb says so and keeps the configured backends; status shows it', async () => {
    // A kubeconfig of the health-only identity on every node, as a node whose kube-proxy lacks the role.
    const doc = YAML.parse(fs.readFileSync(kubeconfig, 'utf8'));
    const b64 = (f: string) => fs.readFileSync(path.join(l.dir, 'pki', f)).toString('base64');
    doc.users[0].user = { 'client-certificate-data': b64('lab-readyz.crt'), 'client-key-data': b64('lab-readyz.key') };
    const text = YAML.stringify(doc);
    await Promise.all(l.nodes.map((n) => withNode(n, (c) => c.execAsRoot(`install -d -m 0755 /etc/k8s-ha-test && umask 077 && cat > /etc/k8s-ha-test/health-only.kubeconfig <<'EOF'\n${text}EOF`))));
    const forbidden = inventoryVariant('discovery-forbidden', (inv) => {
      inv.masters = inv.masters.slice(0, 3);
      inv.lb = { ...inv.lb, impl: 'kube-lb' };
      inv.kubeLb = { discovery: { kubeconfig: '/etc/k8s-ha-test/health-only.kubeconfig' } };
    });
    const d = await deployJson(['-i', forbidden, '--serial', '100%']);
    expect(d.code, d.stderr).toBe(0);
    const seen = await followed([m1!.at, m2!.at, m3!.at], Date.now(), 5000);
    for (const [node, x] of Object.entries(seen.last)) {
      expect(x.backends.map((b) => b.address), node).toEqual([m1!.at, m2!.at, m3!.at]);
      expect(x.watching, node).toBe(false);
      expect(x.problem, node).toMatch(/403 Forbidden from master-\d: endpointslices\.discovery\.k8s\.io is forbidden: User "k8s-ha-health" cannot list/);
    }
    const st = await k8sha(['status', '-i', forbidden]);
    expect(st.code, st.stderr).toBe(0);
    expect(st.stdout).toMatch(/node-1: kube-lb discovery: nothing learned yet; balancing to .* \(the configured ones\), not watching: 403 Forbidden/);
    await Promise.all(l.nodes.map((n) => withNode(n, (c) => c.execAsRoot('rm -rf /etc/k8s-ha-test'))));
  });
});
