/**
 * `k8s-ha deploy`: load and check the inventory and playbook, build once,
 * then every node in parallel (one SSH connection each), then a recap.
 * This module does the work; the CLI renders it.
 */
import fsp from 'node:fs/promises';
import { BuildError, ConnectError, NoToolchainError, UsageError } from '../errors.js';
import { ensureKubeLb, type KubeLbBinary } from '../build/kube-lb.js';
import { builtFor, cannotRun, controllerBuildHost, ensureNginxBinary, type BuildHost, type BuiltBinary } from '../build/nginx.js';
import { emptyRequest, factScript, isServing, parseFacts } from '../facts/host.js';
import { SshConnection, type SshTarget } from '../connect/ssh.js';
import { resolveTarget } from '../connect/targets.js';
import { loadInventory, type LoadedInventory } from '../inventory/load.js';
import { wantedImpl, type Impl, type Inventory, type InventoryNode } from '../inventory/schema.js';
import { IMPL_UNITS, implOfUnit, TEMPLATES } from '../lb/templates.js';
import type { PlanContext } from '../ops/types.js';
import { applyHost, factRequest, prepareHost, switchingFrom, textFiles, type HostRunOptions, type PreparedHost, type Say } from './host.js';
import { configState, DEFAULT_SERIAL, failed, notReached, parseSerial, planRoll, runBatch, type RollPlan, type Serial } from './roll.js';
import { defaultPlaybookPath, IMPL_PLAYBOOKS, loadPlaybook, type Playbook, type PlaybookStep } from './playbook.js';
import { totals, type HostResult, type Totals } from './results.js';

export interface DeployOptions {
  inventoryFile: string;
  playbookFile?: string;
  limit?: string[];
  concurrency: number;
  acceptNewHostKeys: boolean;
  /** --check: plan only, touch nothing. */
  check?: boolean;
  /** --diff: read the current text of rendered files, to show unified diffs. */
  diff?: boolean;
  /** --serial: nodes per batch when a running service would be restarted or reloaded. */
  serial?: Serial;
  /** --max-fail-percent: failed nodes a roll tolerates before it stops. */
  maxFailPercent?: number;
  /** --repoint-kubeconfigs: point kubelet and kube-proxy at the local balancer once it is verified. */
  repointKubeconfigs?: boolean;
}

/** A balancer implementation a node runs. */
export type RunImpl = Exclude<Impl, 'auto'>;

export interface NodeImpl {
  /** What the inventory asks for. */
  wanted: Impl;
  /** What the node gets: auto is nginx until nginx turns out impossible. */
  impl: RunImpl;
  /** Why auto chose kube-lb. */
  why?: string;
  /** The implementation serving before, when this deploy switches the node. */
  from?: RunImpl;
  /** What the node runs after the deploy: `impl`, or `from` when the switch was not applied or was undone; unknown when lost. */
  running?: RunImpl;
}

export interface DeployRun {
  options: DeployOptions;
  loaded: LoadedInventory;
  /** The playbook of each implementation. */
  playbooks: Record<RunImpl, Playbook>;
  impls: Map<string, NodeImpl>;
  nodes: InventoryNode[];
  targets: Map<string, SshTarget>;
  startedAt: number;
  build?: BuiltBinary;
  /** Why nginx could not be built this time (auto nodes then run kube-lb, unless they serve with nginx already). */
  nginxUnbuildable?: string;
  artifacts: PlanContext['artifacts'];
  /** The build host's connection, reused for its own deploy. */
  openConnections: Map<string, SshConnection>;
  results: HostResult[];
  /** Hosts connected and planned, waiting to be applied. */
  prepared: PreparedHost[];
  roll?: RollReport;
}

export interface RollReport {
  serial: number;
  batches: string[][];
  failLimit: number;
  /** 1-based batch after which the roll stopped, and why. */
  stoppedAfter?: number;
  reason?: string;
}

/** Both implementations' playbooks; --playbook replaces the one of the same name (kube-lb), else nginx's. */
async function loadPlaybooks(inv: Inventory, file: string | undefined): Promise<Record<RunImpl, Playbook>> {
  const templates = Object.keys(TEMPLATES);
  const own = file ? await loadPlaybook(file, inv, templates) : undefined;
  const slot: RunImpl | undefined = own ? (own.name === 'kube-lb' ? 'kube-lb' : 'nginx') : undefined;
  const load = async (impl: RunImpl) => (slot === impl ? own! : loadPlaybook(defaultPlaybookPath(IMPL_PLAYBOOKS[impl]), inv, templates));
  return { nginx: await load('nginx'), 'kube-lb': await load('kube-lb') };
}

export async function prepareDeploy(options: DeployOptions): Promise<DeployRun> {
  const startedAt = Date.now();
  const loaded = await loadInventory(options.inventoryFile);
  const inv = loaded.inventory;
  const playbooks = await loadPlaybooks(inv, options.playbookFile);
  let nodes = inv.nodes;
  if (options.limit?.length) {
    const unknown = options.limit.filter((n) => !inv.nodes.some((x) => x.name === n));
    if (unknown.length) {
      throw new UsageError(`--limit names ${unknown.join(', ')}, not in ${options.inventoryFile}`, {
        hint: `use node names from the inventory: ${inv.nodes.map((n) => n.name).join(', ')}`,
      });
    }
    nodes = inv.nodes.filter((n) => options.limit!.includes(n.name));
  }
  const impls = new Map(
    nodes.map((n): [string, NodeImpl] => {
      const wanted = wantedImpl(inv, n);
      return [n.name, { wanted, impl: wanted === 'auto' ? 'nginx' : wanted }];
    }),
  );
  const targets = new Map(nodes.concat(inv.nodes.filter((n) => n.name === inv.build.host)).map((n) => [n.name, resolveTarget(inv, n, { acceptNewHostKeys: options.acceptNewHostKeys })]));
  return { options, loaded, playbooks, impls, nodes, targets, startedAt, artifacts: {}, openConnections: new Map(), results: [], prepared: [] };
}

export function implOf(run: DeployRun, node: InventoryNode): NodeImpl {
  return run.impls.get(node.name) ?? { wanted: wantedImpl(run.loaded.inventory, node), impl: 'nginx' };
}

export function playbookOf(run: DeployRun, node: InventoryNode): Playbook {
  return run.playbooks[implOf(run, node).impl];
}

type BuildStep<T extends PlaybookStep['type']> = Extract<PlaybookStep, { type: T }>;

/** The nginx build step, as the nginx playbook declares it. */
export function buildStepOf(run: DeployRun): BuildStep<'nginxBuild'> | undefined {
  const first = run.nodes[0] ?? run.loaded.inventory.nodes[0]!;
  return run.playbooks.nginx.steps(first).find((s): s is BuildStep<'nginxBuild'> => s.type === 'nginxBuild');
}

async function buildHost(run: DeployRun): Promise<BuildHost> {
  const inv = run.loaded.inventory;
  if (inv.build.host === 'controller') return controllerBuildHost(inv.build.installToolchain ?? false);
  const target = run.targets.get(inv.build.host)!;
  let conn: SshConnection;
  try {
    conn = await SshConnection.open(target);
  } catch (e) {
    throw new BuildError(`cannot reach the build host: ${(e as Error).message}`, { hint: (e as ConnectError).hint });
  }
  run.openConnections.set(target.name, conn);
  const req = emptyRequest();
  const facts = parseFacts(req, (await conn.execAsRoot(factScript(req))).stdout);
  return { name: target.name, os: facts.os, tools: facts.tools, packageManager: facts.packageManager, connection: conn, installToolchain: inv.build.installToolchain ?? true };
}

/** What the nodes need built: nginx where any may run it, kube-lb where any runs it or may (auto). */
export function buildsNeeded(run: DeployRun): { nginx: boolean; kubeLb: boolean } {
  const all = [...run.impls.values()];
  return { nginx: all.some((i) => i.impl === 'nginx'), kubeLb: all.some((i) => i.impl === 'kube-lb' || i.wanted === 'auto') };
}

/**
 * Build (or find in the cache) what the nodes install. A failure here touches no node, except
 * that nodes on lb.impl auto turn to kube-lb when nginx cannot be built for want of a compiler.
 */
export async function buildArtifacts(run: DeployRun, say: Say): Promise<string> {
  const inv = run.loaded.inventory;
  const done: string[] = [];
  const step = buildStepOf(run);
  if (buildsNeeded(run).nginx && step) {
    try {
      const built = await ensureNginxBinary(inv.nginx!, step.args.configure, await buildHost(run), say);
      run.build = built;
      run.artifacts.nginx = {
        content: await fsp.readFile(built.path),
        sha256: built.sha256,
        describe: `nginx ${inv.nginx!.version} (sha256 ${built.sha256.slice(0, 12)}, built on ${built.builtOn})`,
      };
      done.push(`nginx ${inv.nginx!.version} ${built.cached ? 'from the cache' : 'built'} on ${built.builtOn}, ${(built.size / 1e6).toFixed(1)} MB, sha256 ${built.sha256.slice(0, 12)}`);
    } catch (e) {
      const insist = [...run.impls.entries()].filter(([, i]) => i.wanted === 'nginx').map(([n]) => n);
      if (!(e instanceof NoToolchainError) || insist.length) throw e;
      // Every node that would run nginx said auto: they run kube-lb, and each says why.
      const why = `nginx cannot be built: ${e.message.split('\n')[0]}`;
      run.nginxUnbuildable = why;
      for (const i of run.impls.values()) if (i.wanted === 'auto') Object.assign(i, { impl: 'kube-lb', why });
      done.push(`nginx not built (${e.message.split('\n')[0]}): the nodes on lb.impl auto get kube-lb`);
    }
  }
  if (buildsNeeded(run).kubeLb) {
    let built: KubeLbBinary;
    try {
      built = await ensureKubeLb(say);
    } catch (e) {
      // Only a fallback for auto nodes so far: nginx carries on; those nodes just cannot fall back.
      if ([...run.impls.values()].some((i) => i.impl === 'kube-lb')) throw e;
      done.push(`kube-lb not built (${(e as Error).message.split('\n')[0]}): nodes on lb.impl auto cannot fall back to it`);
      return done.join('; ');
    }
    run.artifacts['kube-lb'] = {
      content: await fsp.readFile(built.path),
      sha256: built.sha256,
      describe: `${built.version} (sha256 ${built.sha256.slice(0, 12)}, Node.js ${built.node})`,
    };
    done.push(`${built.version} ${built.cached ? 'from the cache' : 'built'} (one executable, Node.js ${built.node}), ${(built.size / 1e6).toFixed(1)} MB, sha256 ${built.sha256.slice(0, 12)}`);
  }
  return done.join('; ') || 'nothing to build';
}

/** The nginx playbook without its build: for a node that keeps the nginx binary it has. */
function nginxKeepingBinary(run: DeployRun, node: InventoryNode): PlaybookStep[] {
  return run.playbooks.nginx.steps(node).filter((s) => s.type !== 'nginxBuild' && !(s.type === 'op' && s.op.type === 'file'));
}

/**
 * lb.impl auto, decided per node once its facts are in:
 * - heading for nginx, but the built binary cannot run here: kube-lb instead;
 * - heading for kube-lb because nginx cannot be built right now, but the node serves with nginx
 *   already: it stays on nginx (config and unit still managed, its binary left as it is), so a
 *   passing build problem does not switch a fleet back and forth.
 */
function autoChoice(run: DeployRun, node: InventoryNode): Pick<HostRunOptions, 'extraFacts' | 'choose'> {
  const impl = implOf(run, node);
  if (impl.wanted !== 'auto') return {};
  const texts = (steps: PlaybookStep[]) => (run.options.diff ? textFiles(steps) : undefined);
  if (impl.impl === 'nginx' && run.artifacts['kube-lb']) {
    const fallback = run.playbooks['kube-lb'].steps(node);
    return {
      extraFacts: { ...factRequest(fallback), texts: texts(fallback) },
      choose: (facts) => {
        const why = cannotRun(run.build ? builtFor(run.build) : undefined, facts.os);
        if (!why) return undefined;
        Object.assign(impl, { impl: 'kube-lb', why });
        return fallback;
      },
    };
  }
  if (impl.impl === 'kube-lb' && run.nginxUnbuildable) {
    const keep = nginxKeepingBinary(run, node);
    return {
      extraFacts: { ...factRequest(keep), texts: texts(keep) },
      choose: (facts) => {
        if (!isServing(facts.units[IMPL_UNITS.nginx])) return undefined;
        Object.assign(impl, { impl: 'nginx', why: `kept on nginx, its binary left as it is (${run.nginxUnbuildable})` });
        return keep;
      },
    };
  }
  return {};
}

function hostOptions(run: DeployRun, node: InventoryNode, say: Say): HostRunOptions {
  const inv = run.loaded.inventory;
  return {
    ...autoChoice(run, node),
    inventory: inv,
    node,
    steps: playbookOf(run, node).steps(node),
    base: { artifacts: run.artifacts, render: (t) => TEMPLATES[t]!(inv) },
    connect: async () => {
      const open = run.openConnections.get(node.name);
      if (open) {
        run.openConnections.delete(node.name);
        return open;
      }
      return SshConnection.open(run.targets.get(node.name)!);
    },
    say,
    wantText: run.options.diff,
    repoint: run.options.repointKubeconfigs ? inv.kubeconfigs : undefined,
  };
}

/** Connect to a node, read its facts and plan every step; a node that cannot be worked on gets its result now. */
export async function planNode(run: DeployRun, node: InventoryNode, say: Say): Promise<PreparedHost | HostResult> {
  const p = await prepareHost(hostOptions(run, node, say));
  const from = 'conn' in p ? switchingFrom(p.plan) : undefined;
  if (from) implOf(run, node).from = implOfUnit(from);
  if ('conn' in p) run.prepared.push(p);
  else run.results.push(p);
  return p;
}

/** How the planned nodes will be applied: at once, or rolled in batches. */
export function rollPlan(run: DeployRun): RollPlan {
  const ordered = run.nodes.map((n) => run.prepared.find((p) => p.o.node.name === n.name)).filter((p): p is PreparedHost => !!p);
  const plan = planRoll(ordered, run.options.serial ?? parseSerial(DEFAULT_SERIAL), run.options.maxFailPercent ?? 0);
  const rolling = plan.batches.flat().length;
  run.roll = rolling
    ? { serial: plan.batches[0]!.length, batches: plan.batches.map((b) => b.map((p) => p.o.node.name)), failLimit: plan.failLimit }
    : undefined;
  return plan;
}

/** Apply a node that disturbs no running service (or has nothing to do), then close it. */
export async function applyNow(run: DeployRun, p: PreparedHost, say: Say): Promise<HostResult> {
  p.o.say = say;
  try {
    const r = await applyHost(p, { backup: false, checkNewList: false });
    run.results.push(r);
    return r;
  } finally {
    p.conn.close();
  }
}

/** Roll one batch; returns its results and whether the roll must stop after it. */
export async function rollBatch(run: DeployRun, plan: RollPlan, index: number, sayFor: (name: string) => Say): Promise<{ results: HostResult[]; stop: boolean }> {
  const batch = plan.batches[index]!;
  for (const p of batch) p.o.say = sayFor(p.o.node.name);
  const results = await runBatch(batch, index + 1);
  run.results.push(...results);
  const failedSoFar = run.results.filter((r) => r.batch !== undefined && failed(r)).length;
  const stop = failedSoFar > plan.failLimit;
  if (stop && run.roll) {
    run.roll.stoppedAfter = index + 1;
    const names = results.filter(failed).map((r) => r.name);
    run.roll.reason = `${failedSoFar} node${failedSoFar === 1 ? '' : 's'} failed (${names.join(', ')}), more than --max-fail-percent allows (${plan.failLimit})`;
  }
  return { results, stop };
}

/** The nodes a stopped roll never reached: they keep what they run. */
export function skipRest(run: DeployRun, plan: RollPlan, from: number): HostResult[] {
  const rest = plan.batches.slice(from).flat().map((p) => notReached(p, `the roll stopped after batch ${from}`));
  run.results.push(...rest);
  return rest;
}

/** --check: close every connection; the plans stay in run.prepared. */
export function endCheck(run: DeployRun): void {
  for (const p of run.prepared) p.conn.close();
}

export function closeAll(run: DeployRun): void {
  for (const c of run.openConnections.values()) c.close();
  run.openConnections.clear();
}

export interface DeployReport {
  ok: boolean;
  durationMs: number;
  totals: Totals;
  roll?: RollReport;
  hosts: Record<string, Pick<HostResult, 'status' | 'changed' | 'failed' | 'steps' | 'error' | 'verified' | 'timings' | 'batch' | 'rollback'> & {
      config: ReturnType<typeof configState>;
      /** The balancer the node runs after this deploy: nginx or kube-lb, and why auto chose kube-lb. */
      impl?: NodeImpl;
    }
  >;
}

function withRunning(i: NodeImpl | undefined, config: ReturnType<typeof configState>): NodeImpl | undefined {
  if (!i) return undefined;
  const running = config === 'new' ? i.impl : config === 'previous' ? (i.from ?? i.impl) : undefined;
  return { ...i, running };
}

export function report(run: DeployRun): DeployReport {
  const ordered = run.nodes.map((n) => run.results.find((r) => r.name === n.name)).filter((r): r is HostResult => !!r);
  const t = totals(ordered);
  return {
    ok: t.failed === 0 && t.unreachable === 0 && t.skipped === 0 && ordered.length === run.nodes.length,
    durationMs: Date.now() - run.startedAt,
    totals: t,
    roll: run.roll,
    hosts: Object.fromEntries(
      ordered.map((h) => [
        h.name,
        {
          status: h.status,
          config: configState(h),
          impl: withRunning(run.impls.get(h.name), configState(h)),
          changed: h.changed,
          failed: h.failed,
          steps: h.steps,
          error: h.error,
          verified: h.verified,
          timings: h.timings,
          batch: h.batch,
          rollback: h.rollback,
        },
      ]),
    ),
  };
}
