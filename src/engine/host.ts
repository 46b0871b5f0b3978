/**
 * One host's deploy over one SSH connection, in three round trips:
 *   facts    one script reads everything the plan needs
 *   apply    one script fed one tar stream:
 *              stage   new files land beside the live ones as *.k8s-ha-new and are
 *                      validated there (`kube-nginx -v`, `kube-nginx -t`); a failure
 *                      removes them and stops, so nothing live has changed
 *              commit  renames into place, then systemd: daemon-reload, enable,
 *                      restart or reload
 *              state   waits for the unit to be active (running)
 *   verify   TLS through the node's own local port to an apiserver
 * A host with nothing to change skips `apply`: its facts already hold the unit's state.
 */
import { ConnectError, K8sHaError } from '../errors.js';
import { factScript, parseFacts, type FactRequest, type HostFacts } from '../facts/host.js';
import { httpsGet } from '../connect/https-probe.js';
import { SshConnection } from '../connect/ssh.js';
import type { Inventory, InventoryNode } from '../inventory/schema.js';
import type { Change, Handler, PlanContext, StepPlan } from '../ops/types.js';
import { BUILD_STEPS } from '../ops/catalogue.js';
import { quote } from '../util/quote.js';
import { planRepoint, repointScript, units as kubeconfigUnits, type Kubeconfig, type Repoint } from '../ops/kubeconfig.js';
import { probeReach, splitListen, tlsOptions } from './probe.js';
import type { PlaybookStep } from './playbook.js';
import { finishHost, type HostResult, type StepResult } from './results.js';
import { tarGzOf } from './tarstream.js';

export type Say = (line: string) => void;

export interface HostPlan {
  node: InventoryNode;
  facts: HostFacts;
  steps: { step: PlaybookStep; plan?: StepPlan }[];
}

export const STAGED_SUFFIX = '.k8s-ha-new';

export function factRequest(steps: PlaybookStep[]): FactRequest {
  const req: FactRequest = { files: [], dirs: [], units: [], guards: [] };
  for (const s of steps) {
    const part: Partial<FactRequest> = s.type === 'op' ? s.op.facts(s.args) : s.type === 'verify' ? { units: [s.args.unit] } : {};
    for (const k of ['files', 'dirs', 'units', 'guards'] as const) for (const v of part[k] ?? []) if (!req[k].includes(v)) req[k].push(v);
  }
  return req;
}

export const REPOINT_STEP = 'repoint kubeconfigs';

export function describeRepoint(r: Repoint): string {
  return `${r.path}: server ${r.from} -> ${r.to}${r.service ? ` (restart ${r.service})` : ''}`;
}

/** Rendered text files the playbook writes: what --diff shows. */
export function textFiles(steps: PlaybookStep[]): string[] {
  return steps.flatMap((s) => (s.type === 'op' && (s.op.type === 'template' || s.op.type === 'systemdUnit') ? (s.op.facts(s.args).files ?? []) : []));
}

/** Pure: every step's plan for one host, handlers flowing from earlier steps to the service step. */
export function planHost(node: InventoryNode, steps: PlaybookStep[], facts: HostFacts, base: Omit<PlanContext, 'notified'>): HostPlan {
  const notified = new Set<Handler>();
  return {
    node,
    facts,
    steps: steps.map((step) => {
      if (step.type !== 'op') return { step };
      const plan = step.op.plan(step.args, facts, { ...base, notified });
      plan.notify.forEach((h) => notified.add(h));
      return { step, plan };
    }),
  };
}

/** Validation commands read staged copies of files staged in the same run. */
export function withStagedPaths(command: string, staged: string[]): string {
  let out = command;
  for (const p of [...staged].sort((a, b) => b.length - a.length)) {
    out = out.replace(new RegExp(`${p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(?=$|[\\s'";|&)])`, 'g'), p + STAGED_SUFFIX);
  }
  return out;
}

interface Indexed<C extends Change['kind']> {
  step: number;
  change: Extract<Change, { kind: C }>;
}

function collect<C extends Change['kind']>(plan: HostPlan, kind: C): Indexed<C>[] {
  const out: Indexed<C>[] = [];
  plan.steps.forEach((s, step) => {
    for (const change of s.plan?.changes ?? []) if (change.kind === kind) out.push({ step, change: change as Extract<Change, { kind: C }> });
  });
  return out;
}

export function stageScript(plan: HostPlan): string {
  const mkdirs = collect(plan, 'mkdir');
  const puts = collect(plan, 'put');
  const stagedPaths = puts.map((p) => p.change.path);
  const removeStaged = puts.map((p) => quote(p.change.path + STAGED_SUFFIX)).join(' ');
  const lines = [
    'set -u',
    'stage=$(mktemp -d /tmp/k8s-ha-stage.XXXXXX) || exit 20',
    "trap 'rm -rf \"$stage\"' EXIT",
    ...mkdirs.map((m) => `install -d -m ${m.change.mode} ${quote(m.change.path)} || { echo "@@failed ${m.step}"; exit 21; }`),
  ];
  if (puts.length) {
    lines.push('tar -xz -C "$stage" -f - || { echo "@@failed tar"; exit 22; }');
    puts.forEach((p, i) => {
      lines.push(`install -m ${p.change.mode} "$stage/${i}" ${quote(p.change.path + STAGED_SUFFIX)} || { echo "@@failed ${p.step}"; exit 23; }`);
    });
    for (const p of puts) {
      if (!p.change.validate) continue;
      const cmd = withStagedPaths(p.change.validate, stagedPaths);
      lines.push(
        // The inner subshell makes 2>&1 cover every command of a compound one.
        `out=$( ( ${cmd} ) 2>&1 ); rc=$?`,
        `if [ $rc -ne 0 ]; then echo "@@invalid ${p.step} $rc"; printf '%s\\n' "$out"; rm -f ${removeStaged}; exit 30; fi`,
      );
    }
  }
  lines.push('echo "@@staged"');
  return lines.join('\n') + '\n';
}

export function commitScript(plan: HostPlan, backup = false): string {
  const lines = ['set -u'];
  const puts = collect(plan, 'put');
  if (backup) {
    // Every backup is made, and checked, before any live file moves: a rollback then restores exactly
    // this run's previous files, never a stale or half-written *.k8s-ha-prev from an earlier run.
    // rm fails on anything it cannot clear (a directory, say), where cp would copy *into* it instead.
    for (const p of puts) lines.push(`rm -f ${quote(p.change.path + PREVIOUS_SUFFIX)} || { echo "@@failed ${p.step}"; exit 39; }`);
    for (const p of puts) {
      const live = quote(p.change.path);
      lines.push(`if [ -e ${live} ]; then cp -p ${live} ${quote(p.change.path + PREVIOUS_SUFFIX)} || { echo "@@failed ${p.step}"; exit 39; }; fi`);
    }
  }
  for (const p of puts) {
    lines.push(`mv -f ${quote(p.change.path + STAGED_SUFFIX)} ${quote(p.change.path)} || { echo "@@failed ${p.step}"; exit 40; }`);
  }
  for (const r of collect(plan, 'run')) {
    if (r.change.when === 'verified') continue;
    lines.push(
      `out=$( ( ${r.change.command} ) 2>&1 ); rc=$?`,
      `if [ $rc -ne 0 ]; then echo "@@failed ${r.step} $rc"; printf '%s\\n' "$out"; exit 41; fi`,
    );
  }
  lines.push('echo "@@committed"');
  return lines.join('\n') + '\n';
}

/** Poll until the unit is active (running), up to 5 s, and print what it is. */
export function stateScript(unit: string): string {
  const u = quote(unit);
  return (
    `for i in $(seq 1 25); do s=$(systemctl show -p ActiveState -p SubState --value ${u} | tr '\\n' ' '); ` +
    `[ "$s" = "active running " ] && break; sleep 0.2; done; echo "@@state $s"\n`
  );
}

/** Stage, validate, commit and wait for the unit: everything that changes a host, in one script. */
export function applyScript(plan: HostPlan, unit: string | undefined, backup = false): string {
  return stageScript(plan) + commitScript(plan, backup) + (unit ? stateScript(unit) : '');
}

export interface HostRunOptions {
  inventory: Inventory;
  node: InventoryNode;
  steps: PlaybookStep[];
  base: Omit<PlanContext, 'notified'>;
  /** An open connection to reuse (the build host's), else one is opened. */
  connect: () => Promise<SshConnection>;
  say: Say;
  /** Read the current text of rendered files too, for --diff. */
  wantText?: boolean;
  /** --repoint-kubeconfigs: these kubeconfigs go to the local balancer once it is verified. */
  repoint?: Kubeconfig[];
  /** Also read these binaries' `-v` (status). */
  versionsOf?: string[];
  /** Facts to read besides the steps' own (status reads both implementations' files). */
  extraFacts?: Partial<FactRequest>;
  /**
   * Called with the facts before planning: other steps to plan instead (lb.impl auto on a node
   * that cannot run the nginx binary gets kube-lb's). Their facts must be in extraFacts.
   */
  choose?: (facts: HostFacts) => PlaybookStep[] | undefined;
}

/** A host connected, its facts read and every step planned; nothing changed yet. */
export interface PreparedHost {
  o: HostRunOptions;
  conn: SshConnection;
  plan: HostPlan;
  results: StepResult[];
  timings: Record<string, number>;
  /** The unit the verify step watches. */
  unit?: string;
  lap: (phase: string) => void;
  /** Set once the apply script was sent: after that, a lost connection leaves the host's state unknown. */
  applySent?: boolean;
  /** Kubeconfigs to point at the local balancer after it is verified. */
  repoint: Repoint[];
}

type Base = { name: string; address: string; steps: StepResult[]; timings: Record<string, number> };

function base(p: PreparedHost | { o: HostRunOptions; results: StepResult[]; timings: Record<string, number> }): Base {
  return { name: p.o.node.name, address: p.o.node.address, steps: p.results, timings: p.timings };
}

/** Connect, read the facts and plan every step. A HostResult means the host cannot be worked on. */
export async function prepareHost(o: HostRunOptions): Promise<PreparedHost | HostResult> {
  const results: StepResult[] = o.steps.map((s) => ({ name: s.name, status: 'skipped', summary: 'not reached' }));
  if (o.repoint) results.push({ name: REPOINT_STEP, status: 'skipped', summary: 'not reached' });
  const timings: Record<string, number> = {};
  let mark = Date.now();
  const lap = (phase: string) => {
    const now = Date.now();
    timings[phase] = (timings[phase] ?? 0) + now - mark;
    mark = now;
  };
  let conn: SshConnection;
  try {
    o.say('connecting');
    conn = await o.connect();
    lap('connect');
  } catch (e) {
    const err = e as K8sHaError;
    const unreachable = e instanceof ConnectError && e.kind === 'unreachable';
    results.forEach((r) => (r.summary = unreachable ? 'host unreachable' : 'cannot log in'));
    return finishHost({ ...base({ o, results, timings }), status: unreachable ? 'unreachable' : 'failed', error: err.message, hint: err.hint });
  }
  try {
    o.say('gathering facts');
    const req = factRequest(o.steps);
    if (o.wantText) req.texts = [...textFiles(o.steps), ...(o.extraFacts?.texts ?? [])];
    if (o.versionsOf) req.versions = o.versionsOf;
    for (const k of ['files', 'dirs', 'units', 'guards'] as const) for (const v of o.extraFacts?.[k] ?? []) if (!req[k].includes(v)) req[k].push(v);
    if (o.repoint) {
      req.texts = [...(req.texts ?? []), ...o.repoint.map((k) => k.path)];
      req.units.push(...kubeconfigUnits(o.repoint).filter((u) => !req.units.includes(u)));
    }
    const f = await conn.execAsRoot(factScript(req));
    if (f.code !== 0) throw new Error(`gathering facts failed (exit ${f.code}): ${f.stderr.trim()}`);
    const facts = parseFacts(req, f.stdout);
    const other = o.choose?.(facts);
    if (other) {
      o.steps = other;
      results.splice(0, results.length - (o.repoint ? 1 : 0), ...other.map((s): StepResult => ({ name: s.name, status: 'skipped', summary: 'not reached' })));
    }
    const plan = planHost(o.node, o.steps, facts, { ...o.base, currentText: (path) => facts.texts[path] });
    lap('facts');
    plan.steps.forEach((st, i) => {
      const r = results[i]!;
      if (st.plan) Object.assign(r, { status: st.plan.changes.length ? 'changed' : 'ok', summary: st.plan.summary });
      else if (st.step.type in BUILD_STEPS) {
        Object.assign(r, { status: 'ok', summary: o.base.artifacts[BUILD_STEPS[st.step.type as keyof typeof BUILD_STEPS]]?.describe ?? 'built' });
      }
    });
    const repoint = o.repoint ? planRepoint(o.repoint, o.inventory.lb.listen, facts) : [];
    if (o.repoint) {
      Object.assign(results[results.length - 1]!, repoint.length
        ? { status: 'changed', summary: repoint.map(describeRepoint).join('; ') }
        : { status: 'ok', summary: 'every kubeconfig present already points at the local balancer' });
    }
    return { o, conn, plan, results, timings, unit: verifyUnit(o.steps), lap, repoint };
  } catch (e) {
    conn.close();
    return failFromError({ o, results, timings }, e);
  }
}

function failFromError(p: { o: HostRunOptions; results: StepResult[]; timings: Record<string, number> }, e: unknown): HostResult {
  const err = e as K8sHaError;
  const firstOpen = p.results.find((r) => r.status === 'skipped' || r.status === 'changed') ?? p.results[0]!;
  Object.assign(firstOpen, { status: 'failed', error: err.message, summary: err.message.split('\n')[0] });
  const unreachable = (e instanceof ConnectError && e.kind === 'unreachable') || connectionLost(e);
  return finishHost({ ...base(p), status: unreachable ? 'unreachable' : undefined, error: err.message, hint: err.hint });
}

/** The SSH connection died under us (node stopped, network gone). */
function connectionLost(e: unknown): boolean {
  return /not connected|keepalive|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|EPIPE|connection (lost|closed)|No response from server/i.test((e as Error)?.message ?? '');
}

export function hasChanges(p: PreparedHost): boolean {
  return p.plan.steps.some((st) => st.plan?.changes.length);
}

/** The unit serving now that this plan takes the listen port from (switching implementation), if any. */
export function switchingFrom(plan: HostPlan): string | undefined {
  return collect(plan, 'run').find((r) => r.change.switchFrom)?.change.switchFrom;
}

/** Would applying this plan restart, reload or replace a service that is serving now? Such hosts roll. */
export function disturbsRunningService(p: PreparedHost): boolean {
  if (!p.unit || !hasChanges(p)) return false;
  return p.plan.facts.units[p.unit]?.activeState === 'active' || !!switchingFrom(p.plan);
}

/** Handlers this host's plan notified, e.g. restart when the binary changed. */
export function notifiedHandlers(plan: HostPlan): Set<Handler> {
  const out = new Set<Handler>();
  for (const st of plan.steps) for (const h of st.plan?.notify ?? []) out.add(h);
  return out;
}

export interface ApplyOptions {
  /** Keep the live files as *.k8s-ha-prev so a failed batch can be put back. */
  backup: boolean;
  /** Verify that every connection through the local port reaches a master of the inventory (rolling). */
  checkNewList: boolean;
}

export const PREVIOUS_SUFFIX = '.k8s-ha-prev';

/** Apply the plan (if it changes anything), then verify. The connection stays open. */
export async function applyHost(p: PreparedHost, opts: ApplyOptions): Promise<HostResult> {
  const { o, conn, plan, results } = p;
  try {
    const f0 = p.unit ? plan.facts.units[p.unit] : undefined;
    let state = f0 ? `${f0.activeState} ${f0.subState}` : '';
    const puts = collect(plan, 'put');
    if (hasChanges(p)) {
      o.say(puts.length ? `staging ${puts.length} file${puts.length === 1 ? '' : 's'}, validating, committing` : 'applying');
      p.applySent = true;
      const a = await conn.execAsRoot(applyScript(plan, p.unit, opts.backup), {
        input: puts.length ? tarGzOf(puts.map((x) => x.change)) : undefined,
      });
      p.lap('apply');
      if (!/^@@committed$/m.test(a.stdout)) {
        const staged = /^@@staged$/m.test(a.stdout);
        const r = failStep(base(p), results, a.stdout, a.stderr, staged ? 'committing' : 'staging');
        return staged ? { ...r, journal: await journal(conn, p.unit), committed: true } : r;
      }
      state = /^@@state (.*)$/m.exec(a.stdout)?.[1]?.trim() ?? '';
    }
    const vi = o.steps.findIndex((st) => st.type === 'verify');
    if (vi < 0) return finishHost(base(p));
    const step = o.steps[vi] as Extract<PlaybookStep, { type: 'verify' }>;
    o.say('verifying');
    const v = await verify(conn, o.inventory, step.args, state, opts.checkNewList);
    p.lap('verify');
    results[vi] = { name: step.name, status: v.ok ? 'ok' : 'failed', summary: v.summary, error: v.ok ? undefined : v.summary };
    if (!v.ok) {
      return finishHost({ ...base(p), error: `verify: ${v.summary}`, journal: await journal(conn, step.args.unit), verified: v.verified, committed: hasChanges(p) });
    }
    const after = collect(plan, 'run').filter((r) => r.change.when === 'verified');
    if (after.length) {
      // Only now, with the new balancer proven, does the one it replaced stop coming back at boot.
      const r = await conn.execAsRoot(after.map((a) => a.change.command).join(' && ') + '\n');
      if (r.code !== 0) {
        const step = results[after[0]!.step]!;
        const out = (r.stderr || r.stdout).trim();
        Object.assign(step, { status: 'failed', error: out, summary: `${after.map((a) => a.change.label).join(', ')} failed: ${out.split('\n')[0]}` });
        return finishHost({ ...base(p), error: `${step.name}: ${out}`, verified: v.verified, committed: true, lbVerified: true });
      }
    }
    if (p.repoint.length) {
      // Only now, with the balancer proven, do kubelet and kube-proxy move to it.
      o.say('pointing kubeconfigs at the local balancer');
      const r = await conn.execAsRoot(repointScript(p.repoint));
      const step = results.find((x) => x.name === REPOINT_STEP)!;
      if (!/^@@repointed$/m.test(r.stdout)) {
        Object.assign(step, { status: 'failed', error: (r.stderr || r.stdout).trim(), summary: `failed: ${(r.stderr || r.stdout).trim().split('\n')[0]}` });
        // The balancer itself was applied and verified: the host runs the new configuration.
        return finishHost({ ...base(p), error: `${REPOINT_STEP}: ${(r.stderr || r.stdout).trim()}`, verified: v.verified, committed: hasChanges(p), lbVerified: true });
      }
    }
    return finishHost({ ...base(p), verified: v.verified });
  } catch (e) {
    return { ...failFromError(p, e), committed: !!p.applySent };
  }
}

/**
 * Put back the files a failed apply replaced (from *.k8s-ha-prev) and reload or restart again. A
 * switch of implementation is undone by its own command: the new unit stopped and disabled, the
 * old one started again on the port.
 */
export async function rollbackHost(p: PreparedHost): Promise<{ ok: boolean; detail: string }> {
  const puts = collect(p.plan, 'put').map((x) => x.change.path);
  const undo = collect(p.plan, 'run').filter((r) => r.change.undo).map((r) => r.change);
  if (!puts.length && !undo.length) return { ok: true, detail: 'nothing was replaced' };
  const handlers = notifiedHandlers(p.plan);
  // After an undone switch, the unit to see running is the one switched away from.
  const watched = undo.find((u) => u.switchFrom)?.switchFrom ?? p.unit;
  const lines = ['set -u'];
  for (const path of puts) {
    lines.push(`if [ -e ${quote(path + PREVIOUS_SUFFIX)} ]; then mv -f ${quote(path + PREVIOUS_SUFFIX)} ${quote(path)}; fi`);
  }
  if (handlers.has('daemon-reload')) lines.push('systemctl daemon-reload');
  if (undo.length) lines.push(...undo.map((u) => u.undo!));
  else if (p.unit) lines.push(handlers.has('restart') ? `systemctl restart ${quote(p.unit)}` : `systemctl reload ${quote(p.unit)}`);
  if (watched) lines.push(stateScript(watched));
  try {
    const r = await p.conn.execAsRoot(lines.join('\n') + '\n');
    const state = /^@@state (.*)$/m.exec(r.stdout)?.[1]?.trim() ?? '';
    const ok = !watched || state === 'active running';
    const what = undo.length ? `${watched} serves again` : 'the service runs them';
    return { ok, detail: ok ? `previous files restored and ${what}` : `previous files restored, but ${watched} is ${state || 'unknown'}` };
  } catch (e) {
    return { ok: false, detail: `could not restore the previous files: ${(e as Error).message.split('\n')[0]}` };
  }
}

function verifyUnit(steps: PlaybookStep[]): string | undefined {
  const v = steps.find((s) => s.type === 'verify') as Extract<PlaybookStep, { type: 'verify' }> | undefined;
  return v?.args.unit;
}

/** Mark the step a script stopped at as failed, with the output it printed; later steps were not reached. */
function failStep(base: { name: string; address: string; steps: StepResult[] }, results: StepResult[], stdout: string, stderr: string, phase: string): HostResult {
  const m = /^@@(failed|invalid) (\d+|tar)(?: (\d+))?$/m.exec(stdout);
  const idx = m && m[2] !== 'tar' ? Number(m[2]) : results.findIndex((r) => r.status === 'changed');
  const output = stdout.slice(m ? stdout.indexOf(m[0]) + m[0].length : 0).replace(/^@@\w+.*$/gm, '').trim() || stderr.trim();
  const what = m?.[1] === 'invalid' ? 'validation failed, nothing was replaced' : `${phase} failed${m?.[3] ? ` (exit ${m[3]})` : ''}`;
  const step = results[idx >= 0 ? idx : 0]!;
  Object.assign(step, { status: 'failed', error: output, summary: `${what}: ${output.split('\n')[0] ?? ''}` });
  results.forEach((r, i) => {
    if (i > idx && r.status !== 'failed') Object.assign(r, { status: 'skipped', summary: 'not reached' });
  });
  return finishHost({ ...base, error: `${step.name}: ${what}\n${output}` });
}

async function journal(conn: SshConnection, unit: string | undefined): Promise<string | undefined> {
  if (!unit) return undefined;
  const r = await conn.execAsRoot(`journalctl -u ${quote(unit)} -n 20 --no-pager -o short-iso 2>&1`).catch(() => undefined);
  return r?.stdout.trim() || undefined;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** GET /healthz over plain HTTP on the host's own loopback (kube-lb's admin port): the status, 0 when nothing answers. */
async function healthz(conn: SshConnection, where: string): Promise<{ status: number; body: string }> {
  const { host, port } = splitListen(where);
  try {
    const s = await conn.connectFromHost(host, port);
    return await new Promise((resolve) => {
      let out = '';
      const timer = setTimeout(() => {
        s.destroy();
        resolve({ status: 0, body: 'no answer within 2 s' });
      }, 2000);
      s.on('data', (b: Buffer) => (out += b.toString()));
      // HTTP/1.0: the answer ends when the server closes its side (an SSH channel says 'end', and 'close' only once both sides are done).
      const done = () => {
        clearTimeout(timer);
        s.destroy();
        const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(out)?.[1] ?? 0);
        resolve({ status, body: out.slice(out.indexOf('\r\n\r\n') + 4).trim() });
      };
      s.once('end', done);
      s.once('close', done);
      s.on('error', () => undefined);
      // ?checked: a check must have passed since the last (re)load, so a reload's new settings are what is proven.
      s.write(`GET /healthz?checked HTTP/1.0\r\nHost: ${host}\r\n\r\n`);
    });
  } catch (e) {
    return { status: 0, body: (e as Error).message };
  }
}

/** Wait up to 3 s for the balancer's /healthz to say some apiserver passes its checks. */
async function healthzOk(conn: SshConnection, where: string): Promise<string | undefined> {
  let last = { status: 0, body: '' };
  const deadline = Date.now() + 3000;
  for (;;) {
    last = await healthz(conn, where);
    if (last.status === 200) return undefined;
    if (Date.now() >= deadline) break;
    await sleep(200);
  }
  return last.status
    ? `its /healthz on ${where} answers ${last.status} (${last.body}): no apiserver passes its health check; check tls.caFile, tls.serverName and kubeLb.check`
    : `its /healthz on ${where} does not answer: ${last.body}`;
}

async function verify(
  conn: SshConnection,
  inv: Inventory,
  args: { unit: string; listen: string; path: string; healthz?: string },
  /** `ActiveState SubState` as the facts or the apply script saw it. */
  state: string,
  /** Rolling: every connection through the local port must reach a master of the inventory's list. */
  checkNewList: boolean,
): Promise<{ ok: boolean; summary: string; verified?: HostResult['verified'] }> {
  const [active = '?', sub = '?'] = state.trim().split(/\s+/);
  if (active !== 'active' || sub !== 'running') return { ok: false, summary: `${args.unit} is ${active} (${sub}), not active (running)` };
  const { host, port } = splitListen(args.listen);
  const trust = inv.tls.caFile ? 'TLS verified' : 'TLS NOT verified: set tls.caFile';

  if (checkNewList) {
    // For a few ms after a reload, nginx's old workers still accept on the shared socket (with the
    // old list) until the master tells them to stop. Give the reload up to 3 s to settle; a reload
    // that never takes effect keeps failing and is reported.
    let reach = await probeReach(conn, inv);
    for (let i = 0; i < 15 && (reach.local.unknown > 0 || reach.local.ok === 0); i++) {
      await sleep(200);
      reach = await probeReach(conn, inv);
    }
    const hit = reach.masters.filter((m) => m.viaLocal > 0).map((m) => m.name);
    const verified = { state: 'active (running)', status: reach.local.ok ? 200 : 0, backend: hit.join(',') || undefined };
    if (!reach.local.ok) return { ok: false, summary: `nothing answered through ${args.listen}: ${reach.local.errors[0] ?? 'no answer'}`, verified };
    if (reach.local.unknown) {
      return { ok: false, summary: `${reach.local.unknown} of ${reach.local.attempts} connections through ${args.listen} reached a backend outside the new master list`, verified };
    }
    const unhealthy = args.healthz ? await healthzOk(conn, args.healthz) : undefined;
    if (unhealthy) return { ok: false, summary: `${args.unit}: ${unhealthy}`, verified };
    return { ok: true, summary: `active (running); ${reach.local.ok}/${reach.local.attempts} requests through ${args.listen} answered by the new list (${hit.join(', ')}; ${trust})`, verified };
  }

  let last = '';
  for (let attempt = 0; attempt < 15; attempt++) {
    try {
      const r = await httpsGet(() => conn.connectFromHost(host, port), { path: args.path, ...tlsOptions(inv, inv.tls.serverName ?? host) });
      const verified = { state: 'active (running)', status: r.status, backend: r.peer };
      if (r.status === 200) {
        const unhealthy = args.healthz ? await healthzOk(conn, args.healthz) : undefined;
        if (unhealthy) return { ok: false, summary: `${args.unit}: ${unhealthy}`, verified };
        return { ok: true, summary: `active (running); GET ${args.path} through ${args.listen}: 200 from ${r.peer ?? 'an apiserver'} (${trust})`, verified };
      }
      last = `GET ${args.path} through ${args.listen} answered ${r.status}: ${r.body.trim().split('\n')[0]}`;
    } catch (e) {
      last = `GET ${args.path} through ${args.listen} failed: ${(e as Error).message}`;
    }
    await sleep(200);
  }
  return { ok: false, summary: last };
}
