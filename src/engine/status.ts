/**
 * `k8s-ha status`: every node's load balancer as it is. The same facts and
 * planner as deploy (so "drift" means exactly "what deploy would change"), the
 * binary's version, the listener, and which apiservers the node reaches,
 * directly and through its own local port. One connection per node, in parallel.
 */
import { cachedKubeLb } from '../build/kube-lb.js';
import { cachedNginxBinary, controllerOs } from '../build/nginx.js';
import { SshConnection } from '../connect/ssh.js';
import type { Impl, InventoryNode } from '../inventory/schema.js';
import { isServing } from '../facts/host.js';
import { kubeLbPaths } from '../lb/kube-lb.js';
import { nginxPaths } from '../lb/nginx.js';
import { IMPL_UNITS, TEMPLATES } from '../lb/templates.js';
import { mapLimit } from '../util/pool.js';
import { buildStepOf, implOf, prepareDeploy, type DeployRun, type RunImpl } from './deploy.js';
import { factRequest, planHost, prepareHost, type PreparedHost } from './host.js';
import { probeReach, type LocalReach, type MasterReach, type Reach } from './probe.js';

export type FileDrift = 'ok' | 'changed' | 'missing' | 'unknown';

export interface NodeStatus {
  name: string;
  address: string;
  reachable: boolean;
  error?: string;
  /** The balancer this node runs (the one whose unit is active), else the one it should run. */
  impl?: RunImpl;
  /** What the inventory asks for: nginx, kube-lb or auto. */
  wanted: Impl;
  /** As systemctl says it: `active (running)`, `inactive (dead)`, `failed`, `activating`, `not installed`. */
  service?: string;
  since?: string;
  version?: string;
  /** Each file deploy manages, by its playbook step: up to date, changed, missing, or unknown (no build to compare with). */
  drift: Record<string, FileDrift>;
  listening?: boolean;
  masters: MasterReach[];
  local?: LocalReach;
  /** Serving: active (running), and an apiserver answered through the local port. */
  healthy: boolean;
}

export interface ClusterStatus {
  nodes: NodeStatus[];
  healthy: number;
  drifted: number;
  /** For each master: how many nodes reach it directly, and through their local port. */
  masters: Record<string, { direct: number; local: number }>;
  durationMs: number;
}

export function serviceState(loadState: string, active: string, sub: string): string {
  if (loadState === 'not-found') return 'not installed';
  if (active === 'failed') return 'failed';
  if (active === 'activating') return 'activating';
  return `${active} (${sub})`;
}

/** Steps of an implementation's playbook, less the build outputs whose drift cannot be known (no cached build). */
function knowableSteps(run: DeployRun, impl: RunImpl, node: InventoryNode, known: Set<string>) {
  const all = run.playbooks[impl].steps(node);
  const unknowable = all.filter((s) => s.type === 'op' && s.op.type === 'file' && !known.has(String((s.args as { source: string }).source).slice('artifact:'.length)));
  return { steps: all.filter((s) => !unknowable.includes(s)), unknowable };
}

async function statusOfNode(run: DeployRun, node: InventoryNode, known: Set<string>): Promise<NodeStatus> {
  const inv = run.loaded.inventory;
  const wanted = implOf(run, node).wanted;
  // Facts and the reach probe need the same connection but not each other: run them at once.
  let reachProbe: Promise<Reach> | undefined;
  const first: RunImpl = wanted === 'kube-lb' ? 'kube-lb' : 'nginx';
  const other: RunImpl = first === 'nginx' ? 'kube-lb' : 'nginx';
  let { steps, unknowable } = knowableSteps(run, first, node, known);
  const prepared = await prepareHost({
    inventory: inv,
    node,
    steps,
    base: { artifacts: run.artifacts, render: (t) => TEMPLATES[t]!(inv) },
    connect: async () => {
      const conn = await SshConnection.open(run.targets.get(node.name)!);
      reachProbe = probeReach(conn, inv);
      reachProbe.catch(() => undefined);
      return conn;
    },
    say: () => undefined,
    // Both implementations' files and versions: which one runs is only known from the facts.
    extraFacts: factRequest(knowableSteps(run, other, node, known).steps),
    versionsOf: [nginxPaths(inv.lb.prefix).binary, kubeLbPaths(inv.kubeLb.prefix).binary],
  });
  if (!('conn' in prepared)) {
    return { name: node.name, address: node.address, wanted, reachable: false, error: prepared.error, drift: {}, masters: [], healthy: false };
  }
  const p = prepared as PreparedHost;
  try {
    const facts = p.plan.facts;
    const serving = (i: RunImpl) => isServing(facts.units[IMPL_UNITS[i]]);
    const installed = (i: RunImpl) => facts.units[IMPL_UNITS[i]]?.loadState === 'loaded';
    // What runs: an active unit; else, for auto, whichever is installed; else what the inventory asks.
    const impl: RunImpl = serving('kube-lb') && !serving('nginx') ? 'kube-lb' : serving('nginx') ? 'nginx' : wanted === 'auto' && installed('kube-lb') && !installed('nginx') ? 'kube-lb' : first;
    // Drift is against what the node should run: the inventory's choice, or (auto) what it runs.
    const target: RunImpl = wanted === 'auto' ? impl : wanted;
    let plan = p.plan;
    if (target !== first) {
      ({ steps, unknowable } = knowableSteps(run, target, node, known));
      plan = planHost(node, steps, facts, { artifacts: run.artifacts, render: (t) => TEMPLATES[t]!(inv) });
    }
    const drift: Record<string, FileDrift> = {};
    for (const st of plan.steps) {
      for (const c of st.plan?.changes ?? []) {
        if (c.kind !== 'put') continue;
        drift[st.step.name] = facts.files[c.path] ? 'changed' : 'missing';
      }
      if (st.step.type === 'op' && ['file', 'template', 'systemdUnit'].includes(st.step.op.type) && !drift[st.step.name]) drift[st.step.name] = 'ok';
    }
    for (const st of unknowable) drift[st.name] = 'unknown';
    const u = facts.units[IMPL_UNITS[impl]];
    const service = u ? serviceState(u.loadState, u.activeState, u.subState) : 'not installed';
    const reach = await reachProbe!;
    const binary = impl === 'nginx' ? nginxPaths(inv.lb.prefix).binary : kubeLbPaths(inv.kubeLb.prefix).binary;
    return {
      name: node.name,
      address: node.address,
      reachable: true,
      impl,
      wanted,
      service,
      since: u?.activeEnterTimestamp || undefined,
      version: facts.versions[binary],
      drift,
      listening: reach.local.listening,
      masters: reach.masters,
      local: reach.local,
      healthy: service === 'active (running)' && reach.local.ok > 0,
    };
  } finally {
    p.conn.close();
  }
}

export async function clusterStatus(options: { inventoryFile: string; limit?: string[]; concurrency: number; playbookFile?: string }): Promise<ClusterStatus> {
  const run = await prepareDeploy({ ...options, acceptNewHostKeys: false });
  const inv = run.loaded.inventory;
  // Compare binaries with builds already in the cache; status never builds.
  const known = new Set<string>();
  const build = buildStepOf(run);
  if (build && inv.nginx) {
    const cached = await cachedNginxBinary(inv.nginx, build.args.configure, inv.build.host === 'controller' ? await controllerOs() : undefined);
    if (cached) {
      // Only the checksum is compared: status uploads nothing.
      run.artifacts.nginx = { content: Buffer.alloc(0), sha256: cached.sha256, describe: `nginx ${inv.nginx.version}` };
      known.add('nginx');
    }
  }
  const kubeLb = run.nodes.some((n) => implOf(run, n).wanted !== 'nginx') ? await cachedKubeLb().catch(() => undefined) : undefined;
  if (kubeLb) {
    run.artifacts['kube-lb'] = { content: Buffer.alloc(0), sha256: kubeLb.sha256, describe: kubeLb.version };
    known.add('kube-lb');
  }
  const nodes = await mapLimit(run.nodes, options.concurrency, (n) => statusOfNode(run, n, known));
  const masters: ClusterStatus['masters'] = Object.fromEntries(inv.masters.map((m) => [m.name, { direct: 0, local: 0 }]));
  for (const n of nodes) {
    for (const m of n.masters) {
      if (m.direct.status === 200) masters[m.name]!.direct++;
      if (m.viaLocal > 0) masters[m.name]!.local++;
    }
  }
  return {
    nodes,
    healthy: nodes.filter((n) => n.healthy).length,
    drifted: nodes.filter((n) => Object.values(n.drift).some((d) => d !== 'ok')).length,
    masters,
    durationMs: Date.now() - run.startedAt,
  };
}
