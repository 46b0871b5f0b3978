/**
 * Following the control plane from the cluster, on the shared lab's four masters with an inventory
 * naming three: `status` reports how the cluster's apiservers (the kubernetes Service's
 * EndpointSlices, as the stand-ins keep them) differ from the inventory's; a master retired and
 * another added are rolled by `deploy --masters-from-cluster` with zero failed requests; an empty
 * or disjoint answer, a list below the floor and credentials without permission change nothing and
 * say why.
 */
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { k8sha } from '../helpers/cli.js';
import { deployJson, inventoryVariant } from '../helpers/deploy.js';
import { lab, restoreMasters, scratchDir } from '../helpers/lab.js';
import { withLoad } from '../helpers/load.js';
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
    expect(d.report).toMatchObject({ masters: { added: [m4!.at], removed: [m3!.at], floor: 2, names: { [m4!.at]: 'apiserver-10-210-1-14' } } });
    expect(d.stderr).toContain(`+ ${m4!.at} (not in the inventory; named apiserver-10-210-1-14 in this run)`);
    for (const r of reports) expect(r.failures, `${r.node}: ${r.failures.slice(0, 3).join('; ')}`).toEqual([]);
    for (const r of reports) expect(r.requests, r.node).toBeGreaterThan(0);
    // Every node verified through the new master, none through the retired one.
    for (const n of l.nodes) expect(d.report.hosts[n.name]!.steps.map((x) => x.summary).join('\n'), n.name).toMatch(/apiserver-10-210-1-14/);

    // What it rolled is what an inventory naming the cluster's masters deploys: --check finds nothing to change,
    // and status, with that inventory, finds no drift.
    const updated = inventoryVariant('cluster-masters', (inv) => {
      inv.masters = [inv.masters[0], inv.masters[1], { name: 'apiserver-10-210-1-14', address: m4!.address, port: m4!.port }];
      inv.cluster = { kubeconfig };
    });
    const check = await deployJson(['-i', updated, '--check']);
    expect(check.code, check.stderr).toBe(0);
    const after = await status(updated);
    expect(after.code, after.stderr).toBe(0);
    expect(after.cp).toMatchObject({ notInCluster: [], notInInventory: [] });
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
      await answerAs(['10.210.9.1:6443', '10.210.9.2:6443']);
      await refused([], /the cluster names 10\.210\.9\.1:6443, 10\.210\.9\.2:6443, none of the inventory's masters/);
    } finally {
      await answerAs(undefined);
    }
    await refused(['--min-masters', '4'], /3 apiservers, fewer than the floor of 4 \(--min-masters\)/);
    // Nodes still run what the last roll gave them.
    const updated = inventoryVariant('cluster-masters-again', (inv) => {
      inv.masters = [inv.masters[0], inv.masters[1], { name: 'apiserver-10-210-1-14', address: m4!.address, port: m4!.port }];
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
    expect(s.cp.error).toMatch(/master-1 \(10\.210\.1\.11:6443\) refused the list \(403 Forbidden: endpointslices\.discovery\.k8s\.io is forbidden: User "k8s-ha-health" cannot list/);
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
