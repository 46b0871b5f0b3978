/**
 * `k8s-ha status`: every node's load balancer as it is. The same facts and
 * planner as deploy (so "drift" means exactly "what deploy would change"), the
 * binary's version, the listener, and which apiservers the node reaches,
 * directly and through its own local port. One connection per node, in parallel.
 */
import { isNoAnswer } from '../errors.js';
import { clusterKubeconfig, controlPlaneStatus, type ControlPlaneStatus } from '../cluster/read.js';
import { dialed } from './results.js';
import { SshConnection } from '../connect/ssh.js';
import { vipHosts, type Impl, type InventoryNode } from '../inventory/schema.js';
import { containerImage, isServing, serviceState, type HostFacts } from '../facts/host.js';
import { kubeLbPaths } from '../lb/kube-lb.js';
import { CONTAINER_NAME } from '../lb/container.js';
import { KUBELET_UNIT, parsePodMaster, podMasterScript, podProblem, STATIC_POD_MANIFEST } from '../lb/static-pod.js';
import { manifestImage } from '../ops/image.js';
import { nginxPaths, parseStubStatus, type StubStatus } from '../lb/nginx.js';
import { httpGetOnHost } from './verify.js';
import { kubeHaproxyPaths } from '../lb/haproxy.js';
import { IMPL_UNITS, TEMPLATES } from '../lb/templates.js';
import { mapLimit } from '../util/pool.js';
import type { ProbeSession } from '../connect/https-probe.js';
import { cachedArtifacts, initialImpl, isImaged, loadSetup, type Builds, type RunImpl, type Setup } from './deploy.js';
import { planOn, type HostJob } from './host.js';
import { LOCK_PROBE, parseLockProbe } from './lock.js';
import { artifactOf, factRequest, planHost } from './plan.js';
import { probeReach, type LocalReach, type MasterReach } from './probe.js';
import { probeBounds, ProbePool } from './probe-pool.js';
import type { Journal } from './scripts.js';
import { vipStatus, type VipStatus } from './vip-status.js';
import { countsNow, countsSince, cpuMsSince, totalSince, type SshCounts } from '../connect/counts.js';

export type FileDrift = 'ok' | 'changed' | 'missing' | 'unknown';

export interface NodeStatus {
  name: string;
  address: string;
  /** The bastion(s) it was reached through. */
  via?: string;
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
  /** Another k8s-ha run holds the node's lock: who, since when. */
  lockedBy?: string;
  /** An unfinished run's journal on the node: the next deploy verifies it first. */
  unfinished?: Pick<Journal, 'run' | 'by' | 'started' | 'state'>;
  /** Serving: active (running), and an apiserver answered through the local port. */
  healthy: boolean;
  /**
   * healthy; down on definite evidence (unreachable, service not running, every probe through the
   * local port refused or answered with an error); unknown when the probes that could tell ran out
   * of time (twice) and none answered: no evidence either way.
   */
  health: NodeHealth;
  /**
   * With nginx.statusListen, on a node running nginx (on the host or in its container): nginx's
   * stub_status now (active counts status's own request too), or `unknown` when it did not answer
   * with one; why in connectionsError.
   */
  connections?: StubStatus | 'unknown';
  connectionsError?: string;
  /** With kubeLb.discovery, on a kube-lb node: the backends it learned from the cluster beside the configured ones. */
  discovery?: KubeLbDiscovery;
  /** Where the time went on this node. */
  timings?: { connectMs: number; factsMs: number; probesMs: number };
  /** What asking this node cost over SSH: logins, commands, channels, TLS handshakes, bytes. */
  ssh?: SshCounts;
}

export type NodeHealth = 'healthy' | 'down' | 'unknown';

/** A node's verdict from what was seen: only definite evidence makes it down. */
export function nodeHealth(n: Pick<NodeStatus, 'reachable' | 'service' | 'local'>): NodeHealth {
  if (!n.reachable || n.service !== 'active (running)' || !n.local) return 'down';
  if (n.local.ok > 0) return 'healthy';
  return n.local.timedOut > 0 ? 'unknown' : 'down';
}

export interface ClusterStatus {
  nodes: NodeStatus[];
  healthy: number;
  drifted: number;
  /** Nodes down on definite evidence, and nodes whose probes could not tell. */
  down: number;
  unknown: number;
  /** For each master: how many nodes reach it directly, and through their local port. */
  masters: Record<string, { direct: number; local: number }>;
  /** How the probes ran: most at once (in all, and against one target), started, retried after a timeout. */
  probes: { limit: number; perTarget: number; peak: number; peakPerTarget: number; started: number; retried: number };
  /** Slowest node per phase (connect, facts, probes), in ms. */
  phases: { connectMs: number; factsMs: number; probesMs: number };
  /** The inventory's warnings and what resolving SSH settings found. */
  warnings: string[];
  /** With vip: in the inventory: who holds the VIP, each VIP host's VRRP state and haproxy's view of the masters. */
  vip?: VipStatus;
  /** With a kubeconfig (cluster.kubeconfig, --kubeconfig): the cluster's apiservers against the inventory's masters, or why they could not be read. */
  controlPlane?: ControlPlaneStatus;
  /** What asking the nodes cost over SSH, added up (each node's is nodes[].ssh), and the controller's CPU time. */
  ssh: SshCounts & { controllerCpuMs: number };
  durationMs: number;
}

/** Steps of an implementation's playbook, less the build outputs whose drift cannot be known (no cached build). */
function knowableSteps(setup: Setup, impl: RunImpl, node: InventoryNode, known: Set<string>) {
  const all = setup.playbooks[impl].steps(node);
  const unknowable = all.filter((s) => { const a = artifactOf(s); return a !== undefined && !known.has(a); });
  return { steps: all.filter((s) => !unknowable.includes(s)), unknowable };
}

interface Probing {
  pool: ProbePool;
  sessions: Map<string, ProbeSession>;
  firstContact: Map<string, Promise<void>>;
}

async function statusOfNode(setup: Setup, builds: Builds, node: InventoryNode, known: Set<string>, probing: Probing): Promise<NodeStatus> {
  const inv = setup.loaded.inventory;
  const wanted = initialImpl(setup, node).wanted;
  const first: RunImpl = wanted === 'auto' ? 'nginx' : wanted;
  const others = (Object.keys(IMPL_UNITS) as RunImpl[]).filter((i) => i !== first);
  let { steps, unknowable } = knowableSteps(setup, first, node, known);
  const base = { artifacts: builds.artifacts, render: (t: string, facts: HostFacts) => TEMPLATES[t]!(inv, { facts, artifacts: builds.artifacts }) };
  // A container's nginx is in its image, not on the host: its version is the image's tag.
  const binaries: Record<Exclude<RunImpl, 'container' | 'static-pod'>, string> = { nginx: nginxPaths(inv.lb.prefix).binary, 'kube-lb': kubeLbPaths(inv.kubeLb.prefix).binary, haproxy: kubeHaproxyPaths.binary };
  /** Not reached, or no facts: silence (a timeout) is no evidence of down, an answer (refused, reset, no route) is. */
  const unreached = (e: unknown): NodeStatus => {
    const silent = isNoAnswer(e);
    const error = `${silent ? 'no answer' : 'unreachable'}: ${(e as Error).message.replace(new RegExp(`^${node.name}: `), '')}`;
    return { name: node.name, ...dialed(setup.targets.get(node.name)!), wanted, reachable: false, error, drift: {}, masters: [], healthy: false, health: silent ? 'unknown' : 'down' };
  };
  let conn: SshConnection;
  const t0 = Date.now();
  try {
    conn = await SshConnection.open(setup.targets.get(node.name)!);
  } catch (e) {
    return unreached(e);
  }
  const connectMs = Date.now() - t0;
  // Hosts accepted unchecked, a missing capability: said with the run's warnings.
  setup.warnings.push(...conn.notes.splice(0));
  try {
    // The facts (with the lock probe in the same command) and the reach probe need the same connection
    // but not each other: run them at once.
    const t1 = Date.now();
    let probesMs = 0;
    const reachProbe = probeReach(conn, inv, probing).finally(() => (probesMs = Date.now() - t1));
    reachProbe.catch(() => undefined);
    const job: HostJob = {
      inventory: inv,
      node,
      target: setup.targets.get(node.name)!,
      holder: 'status',
      steps,
      base,
      // Every implementation's files and versions: which one runs is only known from the facts.
      extraFacts: {
        ...factRequest(others.flatMap((o) => knowableSteps(setup, o, node, known).steps)),
        versions: Object.values(binaries),
        containers: [CONTAINER_NAME],
        texts: [STATIC_POD_MANIFEST],
        scripts: [{ key: 'lock', script: LOCK_PROBE }],
      },
      say: () => undefined,
    };
    // Status reads and never takes the lock: planning here changes nothing.
    const p = await planOn({ conn, release: () => undefined }, job);
    const factsMs = Date.now() - t1;
    const facts = p.plan.facts;
    // A static pod runs while its manifest is in kubelet's folder (and kubelet runs).
    const serving = (i: RunImpl) => (i === 'static-pod' ? !!facts.texts[STATIC_POD_MANIFEST] && isServing(facts.units[KUBELET_UNIT]) : isServing(facts.units[IMPL_UNITS[i]]));
    const installed = (i: RunImpl) => facts.units[IMPL_UNITS[i]]?.loadState === 'loaded';
    // What runs: an active unit; else, for auto, whichever is installed; else what the inventory asks.
    const impl: RunImpl =
      (['nginx', 'kube-lb', 'haproxy', 'container', 'static-pod'] as RunImpl[]).find(serving) ?? (wanted === 'auto' && installed('kube-lb') && !installed('nginx') ? 'kube-lb' : first);
    // Drift is against what the node should run: the inventory's choice, or (auto) what it runs.
    const target: RunImpl = wanted === 'auto' ? impl : wanted;
    let plan = p.plan;
    if (target !== first) {
      ({ steps, unknowable } = knowableSteps(setup, target, node, known));
      plan = planHost(node, steps, facts, base);
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
    let service = serviceState(u);
    if (impl === 'static-pod') {
      // kubelet running says nothing of the pod: its nginx must hold the port, the pod of the manifest in place.
      const pod = podProblem(parsePodMaster((await conn.execAsRoot(podMasterScript(inv.lb.listen), { kind: 'facts' })).stdout), inv.lb.listen);
      service = service !== 'active (running)' ? `kubelet ${service}` : pod ? `pod not serving: ${pod}` : service;
    }
    const reach = await reachProbe;
    const lock = parseLockProbe(facts.scripts?.lock ?? '');
    // After the reach probe, so its connections through the local port are not among those counted.
    const nginxStatus = inv.nginx?.statusListen && (impl === 'nginx' || isImaged(impl)) ? await nginxConnections(conn, inv.nginx.statusListen) : {};
    const discovery = impl === 'kube-lb' && inv.kubeLb.discovery ? await kubeLbDiscovery(conn, inv.kubeLb.admin) : undefined;
    const binary = isImaged(impl) ? undefined : binaries[impl];
    const health = nodeHealth({ reachable: true, service, local: reach.local });
    return {
      name: node.name,
      ...dialed(setup.targets.get(node.name)!),
      reachable: true,
      impl,
      wanted,
      service,
      since: u?.activeEnterTimestamp || undefined,
      version: binary ? facts.versions[binary] : impl === 'static-pod' ? manifestImage(facts.texts[STATIC_POD_MANIFEST]) : containerImage(facts, CONTAINER_NAME),
      drift,
      listening: reach.local.listening,
      masters: reach.masters,
      local: reach.local,
      lockedBy: lock.holder,
      unfinished: lock.journal ? { run: lock.journal.run, by: lock.journal.by, started: lock.journal.started, state: lock.journal.state } : undefined,
      healthy: health === 'healthy',
      health,
      ...nginxStatus,
      ...(discovery ? { discovery } : {}),
      timings: { connectMs, factsMs, probesMs },
    };
  } catch (e) {
    return unreached(e);
  } finally {
    conn.close();
  }
}

/** With kubeLb.discovery: what kube-lb learned from the cluster, beside what it was configured with (its admin /discovery). */
export type KubeLbDiscovery =
  | { configured: string[]; learned?: string[]; backends: { name: string; address: string; up: boolean }[]; watching: boolean; problem?: string; changes: number; applied: number; lists: number; watches: number }
  | { error: string };

async function kubeLbDiscovery(conn: SshConnection, admin: string): Promise<KubeLbDiscovery> {
  const r = await httpGetOnHost(conn, admin, '/discovery', 3000);
  if (r.status !== 200) return { error: `GET http://${admin}/discovery: ${r.status === 0 ? r.body : `answered HTTP ${r.status}`}` };
  try {
    const d = JSON.parse(r.body) as Record<string, unknown>;
    if (!d.enabled) return { error: 'kube-lb runs without discovery (the next deploy turns it on)' };
    return {
      configured: d.configured as string[],
      ...(Array.isArray(d.learned) ? { learned: d.learned as string[] } : {}),
      backends: d.backends as { name: string; address: string; up: boolean }[],
      watching: !!d.watching,
      ...(typeof d.problem === 'string' ? { problem: d.problem } : {}),
      changes: Number(d.changes ?? 0),
      applied: Number(d.applied ?? 0),
      lists: Number(d.lists ?? 0),
      watches: Number(d.watches ?? 0),
    };
  } catch {
    return { error: `GET http://${admin}/discovery: not JSON` };
  }
}

/** nginx's stub_status on its status port, asked over the node's SSH connection: the numbers, or unknown and why. */
async function nginxConnections(conn: SshConnection, statusListen: string): Promise<Pick<NodeStatus, 'connections' | 'connectionsError'>> {
  const r = await httpGetOnHost(conn, statusListen, '/stub_status', 3000);
  const parsed = r.status === 200 ? parseStubStatus(r.body) : undefined;
  if (parsed) return { connections: parsed };
  const why = r.status === 0 ? r.body : r.status === 200 ? 'answered 200 with something that is not stub_status' : `answered HTTP ${r.status}`;
  return { connections: 'unknown', connectionsError: `GET http://${statusListen}/stub_status: ${why}` };
}

export async function clusterStatus(options: { inventoryFile: string; limit?: string[]; concurrency: number; probes?: number; playbookFile?: string; kubeconfig?: string; acceptNewHostKeys?: boolean; sshUser?: string; identityFile?: string }): Promise<ClusterStatus> {
  const { kubeconfig: _kubeconfig, ...setupOptions } = options;
  const countsBefore = countsNow();
  const cpuBefore = process.cpuUsage();
  const setup = await loadSetup({ ...setupOptions, acceptNewHostKeys: options.acceptNewHostKeys ?? false });
  const inv = setup.loaded.inventory;
  const creds = await clusterKubeconfig(inv, options.kubeconfig);
  // Asked while the nodes are: one request from here to the first master that answers.
  const controlPlane = creds ? controlPlaneStatus(inv, creds) : undefined;
  // Compare binaries with builds already in the cache; status never builds.
  const builds = await cachedArtifacts(setup);
  const known = new Set(Object.keys(builds.artifacts));
  const pool = new ProbePool(probeBounds(options.probes));
  // One TLS session per master for the whole run: the first node's probe makes it, the others resume it.
  const probing = { pool, sessions: new Map<string, ProbeSession>(), firstContact: new Map<string, Promise<void>>() };
  const [nodes, vip] = await Promise.all([
    mapLimit(setup.nodes, options.concurrency, (n) => statusOfNode(setup, builds, n, known, probing)),
    // Every VIP host once any is asked for: a verdict on who holds the VIP needs all of them.
    vipStatus(inv, setup.vipHosts.length ? vipHosts(inv) : [], setup.vipTargets, options.concurrency),
  ]);
  SshConnection.closeIdleBastions();
  for (const n of nodes) n.ssh = countsSince(countsBefore, n.name);
  const masters: ClusterStatus['masters'] = Object.fromEntries(inv.masters.map((m) => [m.name, { direct: 0, local: 0 }]));
  for (const n of nodes) {
    for (const m of n.masters) {
      if (m.direct.status === 200) masters[m.name]!.direct++;
      if (m.viaLocal > 0) masters[m.name]!.local++;
    }
  }
  const slowest = (k: 'connectMs' | 'factsMs' | 'probesMs') => Math.max(0, ...nodes.map((n) => n.timings?.[k] ?? 0));
  return {
    nodes,
    healthy: nodes.filter((n) => n.health === 'healthy').length,
    down: nodes.filter((n) => n.health === 'down').length,
    unknown: nodes.filter((n) => n.health === 'unknown').length,
    probes: { limit: pool.o.limit, perTarget: pool.o.perTarget, peak: pool.peak, peakPerTarget: pool.peakPerTarget, started: pool.started, retried: pool.retried },
    phases: { connectMs: slowest('connectMs'), factsMs: slowest('factsMs'), probesMs: slowest('probesMs') },
    drifted: nodes.filter((n) => Object.values(n.drift).some((d) => d !== 'ok')).length,
    masters,
    warnings: setup.warnings,
    vip,
    ...(controlPlane ? { controlPlane: await controlPlane } : {}),
    ssh: { ...totalSince(countsBefore, nodes.map((n) => n.name)), controllerCpuMs: cpuMsSince(cpuBefore) },
    durationMs: Date.now() - setup.startedAt,
  };
}
