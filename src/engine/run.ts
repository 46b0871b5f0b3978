/**
 * A deploy, owned from start to end: `runDeploy(options, emit, control) → DeployReport`.
 *
 * Phases, in order: build (or, with --check, look in the cache), connect + lock + plan every node,
 * apply at once where no serving balancer is disturbed, roll the rest in batches, repoint
 * kubeconfigs in batches, report. Only this module changes the run's state; the caller sees
 * typed events and the final report, and picks how to render them.
 *
 * Bounded: at most --concurrency SSH sessions at any moment. While every node fits, a node's
 * session (and its lock) is kept from planning to the end; beyond that, nodes are closed after
 * planning and reconnected, relocked and replanned when their turn comes.
 *
 * Interruptible: once `control.signal` aborts, nothing new starts; nodes already committing are
 * verified and, if that fails, restored exactly as in a roll; the report says `interrupted`.
 */
import { setMaxListeners } from 'node:events';
import { describeMastersChange, type MastersChange } from '../cluster/read.js';
import { randomBytes } from 'node:crypto';
import { SshConnection } from '../connect/ssh.js';
import type { InventoryNode } from '../inventory/schema.js';
import { IMPL_UNITS, implOfUnit, TEMPLATES } from '../lb/templates.js';
import { resolveRuntime } from '../lb/container.js';
import { emptyRequest } from '../facts/host.js';
import { units as kubeconfigUnits } from '../ops/kubeconfig.js';
import { checkNode, type NodeCheck } from './check.js';
import {
  buildArtifacts,
  cachedArtifacts,
  chooseImpl,
  initialImpl,
  isImaged,
  loadSetup,
  stepsFor,
  type Builds,
  type DeployOptions,
  type NodeImpl,
  type RunImpl,
  type Setup,
} from './deploy.js';
import { applyPlanned, closeSession, failedResult, hostResult, notReached, openSession, ownerFacts, planOn, type HostJob, type HostPhase, type PlannedHost, type Session } from './host.js';
import { controllerIdentity } from './lock.js';
import { artifactOf, disturbsRunningService, factRequest, hasChanges, mergeRequest, switchingFrom, textFiles } from './plan.js';
import { planRepointFor, repointHost, REPOINT_STEP, type RepointPlan } from './repoint.js';
import { probeBounds, ProbePool } from './probe-pool.js';
import type { ProbeSession } from '../connect/https-probe.js';
import { batchSize, chunk, configState, DEFAULT_SERIAL, failed, parseSerial, planRoll } from './roll.js';
import { finishHost, totals, type HostResult, type Totals } from './results.js';
import { DEFAULT_VERIFY_TIMEOUT_MS } from './verify.js';
import type { Journal } from './scripts.js';
import { runVip, type VipReport } from './vip.js';
import { countsNow, countsSince, cpuMsSince, totalSince, type SshCounts } from '../connect/counts.js';

export type Phase = 'build' | 'plan' | 'apply' | 'roll' | 'repoint' | 'vip';

export type DeployEvent =
  | { type: 'start'; runId: string; inventoryFile: string; nodes: string[]; check: boolean; warnings: string[]; concurrency: number }
  | { type: 'phase'; phase: Phase; title: string }
  | { type: 'phase-done'; phase: Phase; summary: string }
  | { type: 'build-output'; line: string }
  | { type: 'host-phase'; name: string; phase: HostPhase; detail?: string }
  | { type: 'verify-wait'; name: string; waitingFor: string; elapsedMs: number; deadlineMs: number }
  | { type: 'host-done'; result: HostResult }
  | { type: 'batch'; phase: 'roll' | 'repoint' | 'vip'; index: number; total: number; nodes: string[] }
  | { type: 'batch-done'; phase: 'roll' | 'repoint' | 'vip'; index: number; total: number; results: HostResult[]; stopped?: string }
  | { type: 'interrupted'; signal: string; inFlight: { name: string; phase: HostPhase }[] }
  /** Said once per run: how a key was used (a locked key signed by ssh-agent...). */
  | { type: 'note'; line: string };

export type Emit = (e: DeployEvent) => void;

export interface RunControl {
  /** Aborting stops the run gracefully; its reason (a signal name) is reported. */
  signal?: AbortSignal;
}

export interface RollReport {
  serial: number;
  batches: string[][];
  failLimit: number;
  /** 1-based batch after which the roll stopped, and why. */
  stoppedAfter?: number;
  reason?: string;
}

export interface HostReport
  extends Pick<HostResult, 'address' | 'via' | 'status' | 'ok' | 'changed' | 'failed' | 'steps' | 'error' | 'hint' | 'journal' | 'verified' | 'timings' | 'batch' | 'rollback' | 'recovered' | 'lockedBy'> {
  config: ReturnType<typeof configState>;
  /** The balancer the node runs after this deploy, and why auto chose it. */
  impl?: NodeImpl;
  /** The playbook's hint for the step that failed. */
  stepHint?: string;
  /** --check: what would change. */
  check?: Pick<NodeCheck, 'service' | 'changes'>;
  /** --check: an unfinished run found on the node, which the next deploy deals with first. */
  unfinished?: Pick<Journal, 'run' | 'by' | 'started' | 'state'>;
  /** What this node cost the run over SSH: logins, commands, channels, TLS handshakes, bytes. */
  ssh: SshCounts;
}

export interface DeployReport {
  ok: boolean;
  runId: string;
  inventoryFile: string;
  /** The node-local address every node's balancer listens on. */
  listen: string;
  check: boolean;
  /** Set when a signal stopped the run before its end. */
  interrupted?: { signal: string };
  durationMs: number;
  build: string;
  totals: Totals;
  roll?: RollReport;
  /** Most SSH connections to nodes open at once during the run. */
  peakSessions: number;
  /** Logins to bastions during the run: one per bastion, whatever the number of nodes behind it. */
  bastionLogins: number;
  /** What the run cost over SSH, all nodes added up (each node's is hosts.NAME.ssh), and the controller's CPU time. */
  ssh: SshCounts & { controllerCpuMs: number };
  hosts: Record<string, HostReport>;
  /** The VIP layer (with vip: in the inventory): its hosts, who holds the VIP, and /readyz through it. */
  vip?: VipReport;
  /** --masters-from-cluster: the list the run used, taken from the cluster, against the inventory's. */
  masters?: MastersChange;
}

export function newRunId(now = new Date()): string {
  return `${now.toISOString().replace(/[-:]/g, '').replace(/\..*$/, '')}-${randomBytes(3).toString('hex')}`;
}

/** Everything the run knows about one node. Only runDeploy changes it. */
interface NodeRun {
  node: InventoryNode;
  impl: NodeImpl;
  job: HostJob;
  phase?: HostPhase;
  session?: Session;
  planned?: PlannedHost;
  result?: HostResult;
  recovered?: string;
  pendingJournal?: Journal;
  repoint?: RepointPlan;
  /** When its facts were read for the plan it has. */
  plannedAt?: number;
}

/** A plan made under a lock held since is applied as it is for this long; a later batch reads fresh facts first. */
const FRESH_PLAN_MS = 5_000;

/** Run fn over items, at most `limit` at once; items not started before `stop()` get `skip`. */
async function pool<T>(items: T[], limit: number, stop: () => boolean, fn: (item: T) => Promise<void>, skip: (item: T) => void): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const item = items[next++]!;
      if (stop()) skip(item);
      else await fn(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(Math.max(1, limit), items.length) }, worker));
}

export async function runDeploy(options: DeployOptions, emit: Emit, control: RunControl = {}): Promise<DeployReport> {
  const setup = await loadSetup(options);
  const inv = setup.loaded.inventory;
  const runId = newRunId();
  const identity = controllerIdentity();
  const holder = `${identity} since ${new Date().toISOString()}, run ${runId}`;
  const concurrency = Math.max(1, options.concurrency);
  const deadlineMs = options.verifyTimeoutMs ?? DEFAULT_VERIFY_TIMEOUT_MS;
  const check = !!options.check;
  const peakBefore = SshConnection.openNow;
  const bastionsBefore = SshConnection.bastionLogins;
  const countsBefore = countsNow();
  const cpuBefore = process.cpuUsage();
  SshConnection.peak = SshConnection.openNow;
  const stopped = () => !!control.signal?.aborted;
  const stopReason = () => String(control.signal?.reason ?? 'interrupted');
  emit({ type: 'start', runId, inventoryFile: options.inventoryFile, nodes: setup.nodes.map((n) => n.name), check, warnings: setup.warnings, concurrency });
  // --masters-from-cluster: the difference, before anything is touched.
  if (setup.masters) for (const line of describeMastersChange(setup.masters)) emit({ type: 'note', line });

  const nodes: NodeRun[] = [];
  const onAbort = () => emit({ type: 'interrupted', signal: stopReason(), inFlight: nodes.filter((n) => n.phase && !n.result).map((n) => ({ name: n.node.name, phase: n.phase! })) });
  // Every node waiting for its lock listens to the run's signal (lock.ts): up to `concurrency` at once, by design,
  // not a leak (Node warns past 10).
  if (control.signal) setMaxListeners(concurrency + 10, control.signal);
  control.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    // 1. Build, or with --check only look in the cache.
    emit({ type: 'phase', phase: 'build', title: check ? 'Look for builds in the cache (--check builds nothing)' : 'Build' });
    const builds = check ? await cachedArtifacts(setup) : await buildArtifacts(setup, (line) => emit({ type: 'build-output', line }));
    emit({ type: 'phase-done', phase: 'build', summary: builds.summary });

    for (const node of setup.nodes) nodes.push(nodeRun(setup, node, builds, { holder, emit }));
    const keepSessions = setup.nodes.length <= concurrency && !check;
    const sessionOpts = { waitLockSeconds: (options.waitLockMs ?? 0) / 1000, check, verifyDeadlineMs: deadlineMs };
    // A rolled verify probes every master directly and through the local port: within one bound for
    // the run, each master's TLS session made once and resumed by the other nodes' probes.
    const probing = { pool: new ProbePool(probeBounds()), sessions: new Map<string, ProbeSession>(), firstContact: new Map<string, Promise<void>>() };
    const done = (n: NodeRun, r: HostResult) => {
      n.result = r;
      n.phase = undefined;
      emit({ type: 'host-done', result: r });
    };
    const interruptedSkip = (n: NodeRun) => done(n, notReached(n, `the run was interrupted (${stopReason()})`));
    /** Open a node's session; a failure is recorded as its result unless `keep` (a later phase keeps the result it has). */
    const open = async (n: NodeRun, keep?: (r: HostResult) => void): Promise<Session | undefined> => {
      const s = await openSession(n.job, { ...sessionOpts, progress: progressOf(n, emit), signal: control.signal });
      if ('status' in s) {
        if (keep) keep(s);
        // A wait for the lock cut short by Ctrl-C: the node was simply not reached.
        else if (stopped()) interruptedSkip(n);
        else done(n, { ...s, recovered: s.recovered ?? n.recovered });
        return undefined;
      }
      if (s.recovered) n.recovered = s.recovered;
      if (s.pendingJournal) n.pendingJournal = s.pendingJournal;
      for (const line of s.conn.notes) emit({ type: 'note', line });
      return s;
    };
    const plan = async (n: NodeRun, s: Session) => {
      n.planned = await planOn(s, n.job, n.planned?.timings ?? {});
      n.plannedAt = Date.now();
      const from = switchingFrom(n.planned.plan);
      n.impl = { ...n.impl, from: from ? implOfUnit(from) : undefined };
      if (options.repointKubeconfigs) n.repoint = planRepointFor(inv, n.planned.plan.facts, n.node);
    };
    const fail = (n: NodeRun, e: unknown) => done(n, { ...failedResult(n, e), recovered: n.recovered });

    // 2. Connect, lock, plan: every node, at most `concurrency` at once.
    emit({ type: 'phase', phase: 'plan', title: `Connect to ${nodes.length} node${nodes.length === 1 ? '' : 's'}, lock and plan (${Math.min(concurrency, nodes.length)} at a time)` });
    await pool(nodes, concurrency, stopped, async (n) => {
      const s = await open(n);
      if (!s) return;
      try {
        await plan(n, s);
        // Nothing to change (verifying reads only), or a change that disturbs no serving balancer (a
        // first install: it would go at once anyway): done now, in this slot and under this lock,
        // rather than on a second connection later, which is what a node beyond --concurrency would
        // otherwise need (a second login, lock and facts). Never a change once the run is interrupted.
        const changes = hasChanges(n.planned!.plan);
        const atOnce = !changes || !disturbsRunningService(n.planned!.plan, n.planned!.unit);
        if (!check && !keepSessions && atOnce && !n.repoint?.changes.length && !(changes && stopped())) {
          const out = await applyPlanned(s, n.planned!, { backup: false, checkNewList: false, verifyDeadlineMs: deadlineMs, progress: progressOf(n, emit) }, { runId, by: identity });
          done(n, hostResult(n.planned!, out, { recovered: n.recovered }));
        }
      } catch (e) {
        closeSession(s);
        return fail(n, e);
      }
      if (keepSessions) n.session = s;
      else closeSession(s);
      n.phase = undefined;
    }, interruptedSkip);
    const planned = nodes.filter((n) => n.planned && !n.result);
    const plannedAll = nodes.filter((n) => n.planned);
    const pending = plannedAll.filter((n) => hasChanges(n.planned!.plan) || n.repoint?.changes.length).length;
    // Beyond --concurrency, nodes with nothing to change were verified, and those a change could go to
    // at once were applied and verified, in their planning slot: they are done, not out.
    const appliedInSlot = plannedAll.filter((n) => n.result?.status === 'changed').length;
    const cannot = nodes.filter((n) => n.result && n.result.status !== 'ok' && n.result.status !== 'changed');
    emit({
      type: 'phase-done',
      phase: 'plan',
      summary:
        `planned ${plannedAll.length} of ${nodes.length} nodes: ${pending} with changes` +
        `${appliedInSlot ? ` (${appliedInSlot} applied and verified as planned: no serving balancer disturbed)` : ''}` +
        `${cannot.length ? `; cannot work on ${cannot.map((n) => `${n.node.name} (${n.result!.status})`).join(', ')}` : ''}`,
    });

    if (check) {
      for (const n of planned) {
        const r = hostResult(n.planned!, undefined);
        // A binary not in the cache cannot be compared: say so rather than leave the step out.
        const unknown = stepsFor(setup, n.node, { impl: n.impl.impl }, builds).filter((s) => artifactOf(s) !== undefined && !n.planned!.job.steps.some((x) => x.name === s.name) && builds.unknown.length > 0);
        n.result = { ...r, steps: [...r.steps, ...unknown.map((s) => ({ name: s.name, status: 'skipped' as const, summary: `unknown: ${builds.unknown.join(', ')} not built yet (--check builds nothing)` }))] };
      }
      const vip = await runVip(setup, { runId, identity, holder, emit, signal: control.signal, concurrency, verifyDeadlineMs: deadlineMs });
      return report(setup, nodes, { runId, check, builds, vip, stopped: stopped() ? stopReason() : undefined, peakBefore, bastionsBefore, countsBefore, cpuBefore });
    }

    // 3. Apply at once where no serving balancer is disturbed; 4. roll the rest in batches.
    const serial = options.serial ?? parseSerial(DEFAULT_SERIAL);
    const roll = planRoll(planned.map((n) => ({ n, plan: n.planned!.plan, unit: n.planned!.unit })), serial, options.maxFailPercent ?? 0);
    const apply = async (n: NodeRun, rolling: boolean, batch?: number) => {
      let s = n.session;
      if (!s) {
        s = await open(n);
        if (!s) return;
      }
      try {
        // Fresh facts right before the commit when the plan may be stale: the lock was let go since
        // planning, or a late batch (time has passed). A plan made moments ago under the lock still held stands.
        if (!n.session || (rolling && Date.now() - n.plannedAt! > FRESH_PLAN_MS)) await plan(n, s);
        // Interrupted while this node was connecting or planning: it does not start committing.
        if (stopped()) return interruptedSkip(n);
        // Replanned from fresh facts, a node meant to go at once may now disturb a serving balancer: it gets backups and a restore too.
        const guarded = rolling || disturbsRunningService(n.planned!.plan, n.planned!.unit);
        const out = await applyPlanned(s, n.planned!, { backup: guarded, checkNewList: guarded, verifyDeadlineMs: deadlineMs, progress: progressOf(n, emit), probing }, { runId, by: identity });
        done(n, hostResult(n.planned!, out, { batch, recovered: n.recovered }));
      } catch (e) {
        fail(n, e);
      } finally {
        if (!keepSessions || !n.repoint?.changes.length) {
          closeSession(s);
          n.session = undefined;
        } else n.session = s;
      }
    };
    const immediate = roll.immediate.map((x) => x.n);
    emit({ type: 'phase', phase: 'apply', title: immediate.length ? `Apply to ${immediate.length} node${immediate.length === 1 ? '' : 's'} at once (no serving balancer is restarted, reloaded or replaced)` : 'Apply: nothing to apply at once' });
    await pool(immediate, concurrency, stopped, (n) => apply(n, false), interruptedSkip);
    emit({ type: 'phase-done', phase: 'apply', summary: `${immediate.filter((n) => n.result && !failed(n.result)).length} of ${immediate.length} done` });

    let rollReport: RollReport | undefined;
    const batches = roll.batches.map((b) => b.map((x) => x.n));
    if (batches.length) {
      const size = batches[0]!.length;
      rollReport = { serial: size, batches: batches.map((b) => b.map((n) => n.node.name)), failLimit: roll.failLimit };
      emit({ type: 'phase', phase: 'roll', title: `Roll ${batches.flat().length} node${batches.flat().length === 1 ? '' : 's'} with a serving balancer, ${size} at a time (${batches.length} batch${batches.length === 1 ? '' : 'es'}; stop after ${roll.failLimit + 1} failure${roll.failLimit ? 's' : ''})` });
      let failedSoFar = 0;
      for (let i = 0; i < batches.length; i++) {
        const batch = batches[i]!;
        if (stopped() || rollReport.stoppedAfter) {
          const why = rollReport.stoppedAfter ? `the roll stopped after batch ${rollReport.stoppedAfter}` : `the run was interrupted (${stopReason()})`;
          for (const n of batch) done(n, notReached(n, why));
          continue;
        }
        emit({ type: 'batch', phase: 'roll', index: i + 1, total: batches.length, nodes: batch.map((n) => n.node.name) });
        await pool(batch, concurrency, stopped, (n) => apply(n, true, i + 1), interruptedSkip);
        const results = batch.map((n) => n.result!);
        failedSoFar += results.filter(failed).length;
        let stop: string | undefined;
        if (failedSoFar > roll.failLimit) {
          rollReport.stoppedAfter = i + 1;
          rollReport.reason = `${failedSoFar} node${failedSoFar === 1 ? '' : 's'} failed (${results.filter(failed).map((r) => r.name).join(', ')}), more than --max-fail-percent allows (${roll.failLimit})`;
          stop = rollReport.reason;
        }
        emit({ type: 'batch-done', phase: 'roll', index: i + 1, total: batches.length, results, stopped: stop });
      }
      emit({
        type: 'phase-done',
        phase: 'roll',
        summary: rollReport.stoppedAfter ? `stopped after batch ${rollReport.stoppedAfter}: ${rollReport.reason}` : stopped() ? `interrupted (${stopReason()})` : 'done',
      });
    }

    // 5. Repoint kubeconfigs, only on nodes whose balancer is verified, in batches of --serial.
    // Only where this run verified the balancer: never onto one it did not check (a locked or skipped node).
    const toRepoint = nodes.filter((n) => n.repoint?.changes.length && n.result && (n.result.status === 'ok' || n.result.status === 'changed') && n.result.lbVerified);
    if (toRepoint.length) {
      const rb = chunk(toRepoint, batchSize(serial, toRepoint.length));
      emit({ type: 'phase', phase: 'repoint', title: `Repoint kubeconfigs on ${toRepoint.length} node${toRepoint.length === 1 ? '' : 's'}, ${rb[0]!.length} at a time` });
      for (let i = 0; i < rb.length; i++) {
        const batch = rb[i]!;
        if (stopped()) {
          for (const n of batch) n.result = withRepoint(n.result!, { status: 'skipped', summary: `not applied: the run was interrupted (${stopReason()})` });
          continue;
        }
        emit({ type: 'batch', phase: 'repoint', index: i + 1, total: rb.length, nodes: batch.map((n) => n.node.name) });
        await pool(batch, concurrency, stopped, async (n) => {
          const s = n.session ?? (await open(n, (r) => (n.result = withRepoint(n.result!, { status: 'failed', summary: `cannot reconnect: ${r.error ?? r.status}`, error: r.error ?? r.status }))));
          if (!s) return;
          try {
            n.phase = 'repointing';
            emit({ type: 'host-phase', name: n.node.name, phase: 'repointing' });
            const r = await repointHost(s.conn, n.repoint!, inv, runId, options.repointTimeoutMs === undefined ? undefined : Math.max(1, Math.round(options.repointTimeoutMs / 1000)));
            n.result = withRepoint(n.result!, r.ok ? { status: 'changed', summary: r.detail } : { status: 'failed', summary: r.detail, error: r.detail });
          } catch (e) {
            n.result = withRepoint(n.result!, { status: 'failed', summary: (e as Error).message, error: (e as Error).message });
          } finally {
            n.phase = undefined;
            closeSession(s);
            n.session = undefined;
          }
          emit({ type: 'host-done', result: n.result! });
        }, (n) => (n.result = withRepoint(n.result!, { status: 'skipped', summary: `not applied: the run was interrupted (${stopReason()})` })));
        const results = batch.map((n) => n.result!);
        const bad = results.filter(failed);
        emit({ type: 'batch-done', phase: 'repoint', index: i + 1, total: rb.length, results, stopped: bad.length ? `repoint failed on ${bad.map((r) => r.name).join(', ')}` : undefined });
        if (bad.length) {
          for (const n of rb.slice(i + 1).flat()) n.result = withRepoint(n.result!, { status: 'skipped', summary: `not applied: repoint failed on ${bad.map((r) => r.name).join(', ')}` });
          break;
        }
      }
      emit({ type: 'phase-done', phase: 'repoint', summary: 'done' });
    }
    for (const n of nodes) if (n.repoint && !n.repoint.changes.length && n.result && n.result.status !== 'skipped') n.result = withRepoint(n.result, { status: 'ok', summary: n.repoint.summary });

    // 6. The VIP layer, once every node is done: a VIP host that is also a node is locked by one job at a time.
    for (const n of nodes) {
      if (!n.session) continue;
      closeSession(n.session);
      n.session = undefined;
    }
    const vip = await runVip(setup, { runId, identity, holder, emit, signal: control.signal, concurrency, verifyDeadlineMs: deadlineMs });
    return report(setup, nodes, { runId, check, builds, roll: rollReport, vip, stopped: stopped() ? stopReason() : undefined, peakBefore, bastionsBefore, countsBefore, cpuBefore });
  } finally {
    control.signal?.removeEventListener('abort', onAbort);
    for (const n of nodes) if (n.session) closeSession(n.session);
    SshConnection.closeIdleBastions();
  }
}

/** A node's host job: its steps, and for lb.impl auto the facts and choice that may replace them. */
function nodeRun(setup: Setup, node: InventoryNode, builds: Builds, ctx: { holder: string; emit: Emit }): NodeRun {
  const inv = setup.loaded.inventory;
  const impl = initialImpl(setup, node);
  const unknownArtifact = (s: ReturnType<typeof stepsFor>[number]) => builds.unknown.includes(artifactOf(s) ?? '');
  const known = (steps: ReturnType<typeof stepsFor>) => steps.filter((s) => !unknownArtifact(s));
  const steps = known(stepsFor(setup, node, { impl: impl.impl }, builds));
  const n: NodeRun = { node, impl, job: undefined as never };
  const say = (phase: HostPhase, detail?: string) => {
    n.phase = phase;
    ctx.emit({ type: 'host-phase', name: node.name, phase, detail });
  };
  const extra = emptyRequest();
  let alternatives: RunImpl[] = [];
  if (impl.wanted === 'auto') {
    alternatives = ['nginx', 'kube-lb'];
    for (const i of alternatives) {
      const steps = known(stepsFor(setup, node, { impl: i }, builds));
      mergeRequest(extra, { ...factRequest(steps), scripts: ownerFacts(steps) });
    }
  }
  const texts = setup.options.diff ? [...new Set(alternatives.flatMap((i) => textFiles(known(stepsFor(setup, node, { impl: i }, builds)))))] : undefined;
  n.job = {
    inventory: inv,
    node,
    target: setup.targets.get(node.name)!,
    holder: ctx.holder,
    steps,
    base: { artifacts: builds.artifacts, render: (t, facts) => TEMPLATES[t]!(inv, { facts, artifacts: builds.artifacts }) },
    wantText: setup.options.diff,
    extraFacts: {
      ...extra,
      texts,
      kubeconfigs: setup.options.repointKubeconfigs ? inv.kubeconfigs.map((k) => k.path) : undefined,
      units: [...extra.units, ...(setup.options.repointKubeconfigs ? kubeconfigUnits(inv.kubeconfigs) : [])],
    },
    choose:
      impl.wanted === 'auto'
        ? (facts) => {
            const c = chooseImpl('auto', facts, { nginx: builds.nginx, nginxUnbuildable: builds.nginxUnbuildable, kubeLb: !!builds.artifacts['kube-lb'] });
            n.impl = { ...n.impl, impl: c.impl, why: c.why };
            return known(stepsFor(setup, node, c, builds));
          }
        : isImaged(impl.impl)
          ? // The runtime is the node's own (lb.runtime auto): known from its facts.
            (facts) => {
              const kubelet = impl.impl === 'static-pod' ? (facts.kubelet ?? { endpoint: '' }) : undefined;
              return known(stepsFor(setup, node, { impl: impl.impl, runtime: resolveRuntime(inv.lb.runtime, facts.tools, kubelet), snapshotter: facts.kubelet?.snapshotter }, builds));
            }
          : undefined,
    say,
  };
  return n;
}

function progressOf(n: NodeRun, emit: Emit) {
  return (waitingFor: string, elapsedMs: number, deadlineMs: number) => emit({ type: 'verify-wait', name: n.node.name, waitingFor, elapsedMs, deadlineMs });
}

/** The host's result with its repoint step set. */
function withRepoint(r: HostResult, step: { status: 'ok' | 'changed' | 'failed' | 'skipped'; summary: string; error?: string }): HostResult {
  const steps = [...r.steps.filter((s) => s.name !== REPOINT_STEP), { name: REPOINT_STEP, ...step }];
  const f = finishHost({ ...r, steps, status: r.status === 'unreachable' ? 'unreachable' : undefined });
  // The balancer itself was applied and verified: a failed repoint does not make its config unknown.
  return step.status === 'failed' ? { ...f, error: `${REPOINT_STEP}: ${step.error}`, lbVerified: true } : f;
}

function report(
  setup: Setup,
  nodes: NodeRun[],
  o: {
    runId: string;
    check: boolean;
    builds: Builds;
    roll?: RollReport;
    vip?: VipReport;
    stopped?: string;
    peakBefore: number;
    bastionsBefore: number;
    countsBefore: ReadonlyMap<string, SshCounts>;
    cpuBefore: NodeJS.CpuUsage;
  },
): DeployReport {
  const inv = setup.loaded.inventory;
  const results = nodes.map((n) => n.result ?? notReached(n, 'not reached'));
  const t = totals(results);
  const hosts: Record<string, HostReport> = {};
  nodes.forEach((n, i) => {
    const r = results[i]!;
    // --check applied nothing: every node runs what it ran.
    const config = o.check ? 'previous' : configState(r);
    const failedStep = r.steps.find((s) => s.status === 'failed');
    const playbook = setup.playbooks[n.impl.impl];
    hosts[n.node.name] = {
      address: r.address,
      via: r.via,
      status: r.status,
      ok: r.ok,
      changed: r.changed,
      failed: r.failed,
      config,
      // A node never reached: what it runs is not known, and not claimed.
      impl: { ...n.impl, running: config === 'new' ? n.impl.impl : config === 'previous' && n.planned ? (n.impl.from ?? runningNow(n) ?? n.impl.impl) : undefined },
      steps: r.steps,
      error: r.error,
      hint: r.hint,
      stepHint: failedStep ? playbook.raw.find((s) => s.name === failedStep.name)?.hint : undefined,
      journal: r.journal,
      verified: r.verified,
      timings: r.timings,
      batch: r.batch,
      rollback: r.rollback,
      recovered: r.recovered ?? n.recovered,
      lockedBy: r.lockedBy,
      check: (o.check || setup.options.diff) && n.planned ? checkNode(n.planned, n.repoint, !!setup.options.diff) : undefined,
      unfinished: n.pendingJournal ? { run: n.pendingJournal.run, by: n.pendingJournal.by, started: n.pendingJournal.started, state: n.pendingJournal.state } : undefined,
      ssh: countsSince(o.countsBefore, n.node.name),
    };
  });
  return {
    ok: !o.stopped && t.failed === 0 && t.unreachable === 0 && t.skipped === 0 && t.locked === 0 && (!o.vip || o.vip.ok),
    runId: o.runId,
    inventoryFile: setup.options.inventoryFile,
    listen: inv.lb.listen,
    check: o.check,
    interrupted: o.stopped ? { signal: o.stopped } : undefined,
    durationMs: Date.now() - setup.startedAt,
    build: o.builds.summary,
    totals: t,
    roll: o.roll,
    peakSessions: SshConnection.peak - o.peakBefore,
    bastionLogins: SshConnection.bastionLogins - o.bastionsBefore,
    ssh: { ...totalSince(o.countsBefore, nodes.map((n) => n.node.name)), controllerCpuMs: cpuMsSince(o.cpuBefore) },
    hosts,
    vip: o.vip,
    ...(setup.masters ? { masters: setup.masters } : {}),
  };
}

/** The implementation serving on the node when it was planned. */
function runningNow(n: NodeRun): RunImpl | undefined {
  const units = n.planned?.plan.facts.units ?? {};
  return (Object.keys(IMPL_UNITS) as RunImpl[]).find((i) => units[IMPL_UNITS[i]]?.activeState === 'active');
}
