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
import fs from 'node:fs';
import { ConnectError, K8sHaError } from '../errors.js';
import { factScript, parseFacts, type FactRequest, type HostFacts } from '../facts/host.js';
import { httpsGet } from '../connect/https-probe.js';
import { SshConnection } from '../connect/ssh.js';
import type { Inventory, InventoryNode } from '../inventory/schema.js';
import type { Change, Handler, PlanContext, StepPlan } from '../ops/types.js';
import { quote } from '../util/quote.js';
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

export function commitScript(plan: HostPlan): string {
  const lines = ['set -u'];
  for (const p of collect(plan, 'put')) {
    lines.push(`mv -f ${quote(p.change.path + STAGED_SUFFIX)} ${quote(p.change.path)} || { echo "@@failed ${p.step}"; exit 40; }`);
  }
  for (const r of collect(plan, 'run')) {
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
export function applyScript(plan: HostPlan, unit: string | undefined): string {
  return stageScript(plan) + commitScript(plan) + (unit ? stateScript(unit) : '');
}

export interface HostRunOptions {
  inventory: Inventory;
  node: InventoryNode;
  steps: PlaybookStep[];
  base: Omit<PlanContext, 'notified'>;
  /** An open connection to reuse (the build host's), else one is opened. */
  connect: () => Promise<SshConnection>;
  say: Say;
}

export async function deployHost(o: HostRunOptions): Promise<HostResult> {
  const { node, say } = o;
  const results: StepResult[] = o.steps.map((s) => ({ name: s.name, status: 'skipped', summary: 'not reached' }));
  const timings: Record<string, number> = {};
  let mark = Date.now();
  const lap = (phase: string) => {
    const now = Date.now();
    timings[phase] = now - mark;
    mark = now;
  };
  const base = { name: node.name, address: node.address, steps: results, timings };
  let conn: SshConnection;
  try {
    say('connecting');
    conn = await o.connect();
    lap('connect');
  } catch (e) {
    const err = e as K8sHaError;
    const unreachable = e instanceof ConnectError && e.kind === 'unreachable';
    results.forEach((r) => (r.summary = unreachable ? 'host unreachable' : 'cannot log in'));
    return finishHost({ ...base, status: unreachable ? 'unreachable' : 'failed', error: err.message, hint: err.hint });
  }

  try {
    say('gathering facts');
    const req = factRequest(o.steps);
    const f = await conn.execAsRoot(factScript(req));
    if (f.code !== 0) throw new Error(`gathering facts failed (exit ${f.code}): ${f.stderr.trim()}`);
    const plan = planHost(node, o.steps, parseFacts(req, f.stdout), o.base);
    lap('facts');
    plan.steps.forEach((s, i) => {
      const r = results[i]!;
      if (s.plan) Object.assign(r, { status: s.plan.changes.length ? 'changed' : 'ok', summary: s.plan.summary });
      else if (s.step.type === 'nginxBuild') Object.assign(r, { status: 'ok', summary: o.base.artifacts.nginx?.describe ?? 'built' });
    });

    const unit = verifyUnit(o.steps);
    const f0 = unit ? plan.facts.units[unit] : undefined;
    let state = f0 ? `${f0.activeState} ${f0.subState}` : '';
    const puts = collect(plan, 'put');
    if (plan.steps.some((st) => st.plan?.changes.length)) {
      say(puts.length ? `staging ${puts.length} file${puts.length === 1 ? '' : 's'}, validating, committing` : 'applying');
      const a = await conn.execAsRoot(applyScript(plan, unit), { input: puts.length ? tarGzOf(puts.map((p) => p.change.content)) : undefined });
      lap('apply');
      if (!/^@@committed$/m.test(a.stdout)) {
        const staged = /^@@staged$/m.test(a.stdout);
        const r = failStep(base, results, a.stdout, a.stderr, staged ? 'committing' : 'staging');
        return staged ? { ...r, journal: await journal(conn, unit) } : r;
      }
      state = /^@@state (.*)$/m.exec(a.stdout)?.[1]?.trim() ?? '';
    }

    const vi = o.steps.findIndex((st) => st.type === 'verify');
    if (vi >= 0) {
      const step = o.steps[vi] as Extract<PlaybookStep, { type: 'verify' }>;
      say('verifying');
      const v = await verify(conn, o.inventory, step.args, state);
      lap('verify');
      results[vi] = { name: step.name, status: v.ok ? 'ok' : 'failed', summary: v.summary, error: v.ok ? undefined : v.summary };
      if (!v.ok) {
        return finishHost({ ...base, error: `verify: ${v.summary}`, journal: await journal(conn, step.args.unit), verified: v.verified });
      }
      return finishHost({ ...base, verified: v.verified });
    }
    return finishHost(base);
  } catch (e) {
    const err = e as K8sHaError;
    const firstOpen = results.find((r) => r.status === 'skipped') ?? results[0]!;
    Object.assign(firstOpen, { status: 'failed', error: err.message, summary: err.message.split('\n')[0] });
    return finishHost({ ...base, error: err.message, hint: err.hint });
  } finally {
    conn.close();
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

async function verify(
  conn: SshConnection,
  inv: Inventory,
  args: { unit: string; listen: string; path: string },
  /** `ActiveState SubState` as the facts or the apply script saw it. */
  state: string,
): Promise<{ ok: boolean; summary: string; verified?: HostResult['verified'] }> {
  const [active = '?', sub = '?'] = state.trim().split(/\s+/);
  if (active !== 'active' || sub !== 'running') return { ok: false, summary: `${args.unit} is ${active} (${sub}), not active (running)` };

  const m = /^\[?(.+?)\]?:(\d+)$/.exec(args.listen)!;
  const host = m[1]!;
  const port = Number(m[2]);
  const tls = inv.tls;
  const ca = tls.caFile ? fs.readFileSync(tls.caFile) : undefined;
  let last = '';
  for (let attempt = 0; attempt < 15; attempt++) {
    try {
      const r = await httpsGet(() => conn.connectFromHost(host, port), {
        path: args.path,
        ca,
        servername: tls.serverName ?? host,
        insecureSkipVerify: tls.insecureSkipVerify || !ca,
        cert: tls.clientCertFile ? fs.readFileSync(tls.clientCertFile) : undefined,
        key: tls.clientKeyFile ? fs.readFileSync(tls.clientKeyFile) : undefined,
        timeoutMs: 3000,
      });
      const verified = { state: 'active (running)', status: r.status, backend: r.peer };
      if (r.status === 200) {
        const trust = ca ? 'TLS verified' : 'TLS NOT verified: set tls.caFile';
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
