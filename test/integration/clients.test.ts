/**
 * A real Kubernetes client through the node-local balancers: Debian's kubectl (client-go) on the
 * lab's nodes, talking to 127.0.0.1:8443 as kubelet does. node-1 runs kube-nginx and node-2
 * kube-lb. A reflector around kubectl (list, watch, resume from the last resourceVersion, list
 * again on 410) keeps its store right while the stand-in serving its watch is made unready,
 * frozen, stopped, or retired by a rolling reconfigure; the stand-ins' history is known, so every
 * event is checked; both clients are hit at once, each where its own watch is. The last test puts
 * every node back on kube-nginx, as the other files expect.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { eventAt, podsAt, PODS, rvAt, type Pod } from '../../src/lab/standin.js';
import type { MasterAction } from '../../src/lab/topology.js';
import { k8sha } from '../helpers/cli.js';
import { deployJson, inventoryVariant } from '../helpers/deploy.js';
import { expectNothingLost, kubectlOn, standinFaults, underFault, underFaults } from '../helpers/kubectl.js';
import { lab, labContainer, restoreMasters, withNode } from '../helpers/lab.js';

const BALANCERS = [
  { impl: 'nginx', node: 'node-1' },
  { impl: 'kube-lb', node: 'node-2' },
] as const;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** A fault run: reaching a streaming watch, the fault (a deploy, for a retirement), up to 90 s to recover, its undo. */
const FAULT_TEST_MS = 300_000;

/** The lab's inventory with node-2 on kube-lb, changed by `change`. */
function clientsInventory(name: string, change: (inv: Record<string, any>) => void = () => {}): string {
  return inventoryVariant(`clients-${name}`, (inv) => {
    inv.nodes.find((n: { name: string }) => n.name === 'node-2').lb = { impl: 'kube-lb' };
    change(inv);
  });
}

/** The same, without one master: a roll that retires it. */
const without = (victim: string) => clientsInventory(`without-${victim}`, (inv) => (inv.masters = inv.masters.filter((m: { name: string }) => m.name !== victim)));

async function master(name: string, action: MasterAction): Promise<void> {
  const r = await k8sha(['lab', 'master', '--dir', lab().dir, name, action]);
  if (r.code !== 0) throw new Error(`lab master ${name} ${action}: ${r.stderr}`);
}

async function deploy(inventory: string, ...args: string[]): Promise<void> {
  const r = await deployJson(['-i', inventory, ...args]);
  expect(r.code, r.stderr + JSON.stringify(r.report.hosts, null, 1).slice(0, 3000)).toBe(0);
}

const node = (name: string) => lab().nodes.find((n) => n.name === name)!;

beforeAll(async () => {
  await deploy(clientsInventory('base'), '--serial', '100%');
}, 300_000);

afterAll(async () => {
  await restoreMasters();
  await deployJson(['-i', lab().inventory, '--serial', '100%']);
});

describe.each(BALANCERS)('kubectl through $impl on $node', ({ node: name }) => {
  it('kubectl get pods prints the pods the history has', async () => {
    const before = rvAt(Date.now());
    const out = await withNode(node(name), (c) => c.execOk('kubectl get pods'));
    const after = rvAt(Date.now());
    const [head, ...rows] = out.trim().split('\n');
    expect(head!.split(/\s+/)).toEqual(['NAME', 'READY', 'STATUS', 'RESTARTS', 'AGE']);
    for (const row of rows) expect(row).toMatch(/^lab-pod-\d\s+[01]\/1\s+(Running|Terminating)\s+\d+\s+\d+[smhd]/);
    // The names the history has at some resourceVersion while kubectl ran.
    const names = rows.map((r) => r.split(/\s+/)[0]).join(' ');
    const possible = Array.from({ length: after - before + 1 }, (_, i) => podsAt(before + i).map((p) => p.metadata.name).join(' '));
    expect(possible).toContain(names);
  });

  it('kubectl get pods -o json: every object as the history has it; a raw list is the history at its resourceVersion', async () => {
    const json = JSON.parse(await withNode(node(name), (c) => c.execOk('kubectl get pods -o json'))) as { items: Pod[] };
    expect(json.items.length).toBeGreaterThanOrEqual(PODS - 2);
    for (const p of json.items) expect(p).toEqual(eventAt(Number(p.metadata.resourceVersion)).object);
    const raw = JSON.parse(await withNode(node(name), (c) => c.execOk("kubectl get --raw '/api/v1/namespaces/default/pods'"))) as { metadata: { resourceVersion: string }; items: Pod[] };
    expect(raw.items).toEqual(podsAt(Number(raw.metadata.resourceVersion)));
  });
});

/**
 * A reflector on each balancer's node at once (kube-nginx on node-1, kube-lb on node-2), each watch
 * hit where it is: the same faults as one client at a time, in one run per fault.
 */
describe.sequential('a reflector on kubectl through kube-nginx on node-1 and through kube-lb on node-2, at once', () => {
  const faults = BALANCERS.map(({ impl, node: name }) =>
    standinFaults(impl, {
      master,
      retire: (v) => deploy(without(v), '--limit', name),
      restore: () => deploy(clientsInventory('base'), '--limit', name),
    }),
  );
  const both = async (fault: keyof (typeof faults)[number]) => {
    const runs = await underFaults(await Promise.all(BALANCERS.map(async ({ node: name }, i) => ({ kubectl: await kubectlOn(name), fault: faults[i]![fault] }))));
    console.log(`${fault}: ${runs.map((r, i) => `through ${BALANCERS[i]!.impl} the watch was on ${r.victim}, cut after ${r.cutAfterMs ?? '-'} ms, longest gap ${r.verdict.longestGapMs} ms`).join('; ')}`);
    runs.forEach((run, i) => expectNothingLost(run, BALANCERS[i]!.impl));
  };

  it('the stand-in each watch is on made unready: the watches go on, no event lost', () => both('unready'), FAULT_TEST_MS);

  // Through kube-lb only: behind kube-nginx a hung apiserver's watch waits for client-go's own
  // health check, about 45 s of the suite's time; bench:clients measures that (docs/benchmarks.md).
  it('through kube-lb, its stand-in frozen (no FIN, no reset): the watch resumes on another within 6 s, no event lost', async () => {
    const run = await underFault(await kubectlOn('node-2'), faults[1]!.frozen);
    expectNothingLost(run);
    // docs/kube-lb.md's figure: kube-lb's checks cut what a hung apiserver carries within 3 s and the watch resumes within 6 s.
    expect(run.verdict.longestGapMs).toBeLessThanOrEqual(6_000);
  }, FAULT_TEST_MS);

  it('the stand-in each watch is on stopped (systemctl stop kube-apiserver): the watches resume on others, no event lost', () => both('stopped'), FAULT_TEST_MS);

  it('the stand-in each watch is on retired by a rolling reconfigure of its node: the watches move to ones still listed, no event lost', () => both('retired'), FAULT_TEST_MS);
});

describe('kubectl get --raw /readyz from every node during a roll', () => {
  it('never fails, on kube-nginx and kube-lb nodes alike', async () => {
    const stop = '/tmp/k8s-ha-test-stop-readyz';
    const loops = await Promise.all(
      lab().nodes.map(async (n) => {
        const id = await labContainer(n.name);
        const child = spawn('docker', [
          'exec', id, 'sh', '-c',
          `rm -f ${stop}; ok=0; failed=0; while [ ! -e ${stop} ]; do if kubectl get --raw /readyz >/dev/null 2>/tmp/readyz.err; then ok=$((ok+1)); else failed=$((failed+1)); cat /tmp/readyz.err >&2; fi; done; echo "$ok $failed"`,
        ], { stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        let err = '';
        child.stdout.on('data', (d: Buffer) => (out += d));
        child.stderr.on('data', (d: Buffer) => (err += d));
        const done = new Promise<{ node: string; ok: number; failed: number; errors: string }>((resolve) =>
          child.on('close', () => {
            const [ok, failed] = out.trim().split(' ').map(Number);
            resolve({ node: n.name, ok: ok ?? 0, failed: failed ?? -1, errors: err.slice(0, 500) });
          }),
        );
        return { id, done };
      }),
    );
    try {
      await sleep(1500);
      // A roll that retires master-4 on every node, and one that brings it back (every node at once:
      // each node's reconfigure is what its loop watches).
      await deploy(without('master-4'), '--serial', '100%');
      await deploy(clientsInventory('base'), '--serial', '100%');
      await sleep(1000);
    } finally {
      // Whatever failed: the loops end, or they would take the CPUs from every later test.
      await Promise.all(loops.map(({ id }) => new Promise((r) => spawn('docker', ['exec', id, 'touch', stop]).on('close', r))));
    }
    const results = await Promise.all(loops.map((l) => l.done));
    for (const r of results) {
      expect(r.failed, JSON.stringify(r)).toBe(0);
      expect(r.ok, JSON.stringify(r)).toBeGreaterThan(10);
    }
    const impls = await Promise.all(lab().nodes.map((n) => withNode(n, (c) => c.exec('systemctl is-active kube-lb kube-nginx'))));
    expect(impls.map((r) => r.stdout.trim().split('\n'))).toEqual([
      ['inactive', 'active'],
      ['active', 'inactive'],
      ['inactive', 'active'],
    ]);
  }, FAULT_TEST_MS);
});
