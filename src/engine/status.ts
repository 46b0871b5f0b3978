/**
 * `k8s-ha status`: every node's load balancer as it is. The same facts and
 * planner as deploy (so "drift" means exactly "what deploy would change"), the
 * binary's version, the listener, and which apiservers the node reaches,
 * directly and through its own local port. One connection per node, in parallel.
 */
import fsp from 'node:fs/promises';
import { cachedNginxBinary, controllerOs } from '../build/nginx.js';
import { SshConnection } from '../connect/ssh.js';
import type { InventoryNode } from '../inventory/schema.js';
import { TEMPLATES } from '../lb/templates.js';
import { mapLimit } from '../util/pool.js';
import { buildStepOf, prepareDeploy, type DeployRun } from './deploy.js';
import { prepareHost, type PreparedHost } from './host.js';
import { probeReach, type LocalReach, type MasterReach, type Reach } from './probe.js';

export type FileDrift = 'ok' | 'changed' | 'missing' | 'unknown';

export interface NodeStatus {
  name: string;
  address: string;
  reachable: boolean;
  error?: string;
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

async function statusOfNode(run: DeployRun, node: InventoryNode, binaryKnown: boolean): Promise<NodeStatus> {
  const inv = run.loaded.inventory;
  // Facts and the reach probe need the same connection but not each other: run them at once.
  let reachProbe: Promise<Reach> | undefined;
  const all = run.playbook.steps(node);
  // Without a build to compare with, a build output's drift is unknown: leave those steps out of the plan.
  const unknowable = binaryKnown ? [] : all.filter((s) => s.type === 'op' && s.op.type === 'file');
  const steps = all.filter((s) => !unknowable.includes(s));
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
    versionOf: `${inv.lb.prefix}/sbin/kube-nginx`,
  });
  if (!('conn' in prepared)) {
    return { name: node.name, address: node.address, reachable: false, error: prepared.error, drift: {}, masters: [], healthy: false };
  }
  const p = prepared as PreparedHost;
  try {
    const drift: Record<string, FileDrift> = {};
    for (const st of p.plan.steps) {
      for (const c of st.plan?.changes ?? []) {
        if (c.kind !== 'put') continue;
        drift[st.step.name] = p.plan.facts.files[c.path] ? 'changed' : 'missing';
      }
      if (st.step.type === 'op' && ['file', 'template', 'systemdUnit'].includes(st.step.op.type) && !drift[st.step.name]) drift[st.step.name] = 'ok';
    }
    for (const st of unknowable) drift[st.name] = 'unknown';
    const u = p.unit ? p.plan.facts.units[p.unit] : undefined;
    const service = u ? serviceState(u.loadState, u.activeState, u.subState) : 'not installed';
    const reach = await reachProbe!;
    return {
      name: node.name,
      address: node.address,
      reachable: true,
      service,
      since: u?.activeEnterTimestamp || undefined,
      version: p.plan.facts.version,
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
  // Compare binaries with a build already in the cache; status never builds.
  const build = buildStepOf(run);
  let binaryKnown = false;
  if (build) {
    const cached = await cachedNginxBinary(inv.nginx, build.args.configure, inv.build.host === 'controller' ? await controllerOs() : undefined);
    if (cached) {
      run.artifacts.nginx = { content: await fsp.readFile(cached.path), sha256: cached.sha256, describe: `nginx ${inv.nginx.version}` };
      binaryKnown = true;
    }
  }
  const nodes = await mapLimit(run.nodes, options.concurrency, (n) => statusOfNode(run, n, binaryKnown));
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
