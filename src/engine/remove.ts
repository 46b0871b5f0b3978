/**
 * `k8s-ha remove`: take the node-local balancer off nodes, as a roll in batches of --serial.
 *
 * On each node, under its lock (an unfinished deploy found there is put right first):
 *   1. repoint  every kubeconfig that names the balancer goes back to where it pointed before k8s-ha
 *               (kept on the node when it was repointed, ORIGINS_FILE) or to --repoint-to; kubelet and
 *               kube-proxy are restarted and must connect there, else the file is put back and the
 *               node keeps its balancer. No target for a file that names the balancer: nothing is
 *               touched on that node.
 *   2. stop     only once nothing but the balancer itself is connected through its port (any other
 *               client is named, and the node refused, unless --force): every balancer unit k8s-ha
 *               may have put there is stopped and disabled, a static pod's manifest leaves kubelet's
 *               folder, and the port must be closed.
 *   3. clean    the files, units, users, images and folders of every built-in playbook, then
 *               /var/lib/k8s-ha (journal, the kubeconfigs' origins) and the lock folder, last.
 * Each stage starts from what the node's facts say, so a run interrupted anywhere is finished by
 * the next one; the node-side script ignores SIGHUP, so a controller lost mid-way does not cut it
 * short. The VIP hosts are not touched: `vip:` is not this command's.
 */
import type { SshTarget } from '../connect/ssh.js';
import { deadlineOf } from '../connect/deadlines.js';
import type { HostFacts, FactRequest } from '../facts/host.js';
import { posix } from 'node:path';
import { prefixProblem, vipHosts, type Inventory, type InventoryNode } from '../inventory/schema.js';
import { OPERATIONS } from '../ops/catalogue.js';
import { isServerUrl, LEGACY_SUFFIX, ORIGINS_FILE, parseOrigins, serverUrl, units, type Repoint } from '../ops/kubeconfig.js';
import { IMAGE_REPOSITORY } from '../build/image.js';
import { UsageError } from '../errors.js';
import { parseHostPort } from '../util/hostport.js';
import { mapLimit } from '../util/pool.js';
import { quote } from '../util/quote.js';
import { loadSetup, type DeployOptions, type RunImpl } from './deploy.js';
import { closeSession, openSession, readFacts, type HostJob } from './host.js';
import { controllerIdentity, LOCK_DIR } from './lock.js';
import type { Playbook } from './playbook.js';
import { repointHost, REPOINT_TIMEOUT_S, type RepointPlan } from './repoint.js';
import { batchSize, chunk, type Serial } from './roll.js';
import { dialed, finishHost, totals, type HostResult, type StepResult, type Totals } from './results.js';
import { doneLines, guardedBy, STATE_DIR, stepShell } from './scripts.js';
import { newRunId } from './run.js';
import { leaveVip, type LeavingHost } from './vip-leave.js';
import { vipLabel } from './vip.js';

export const REMOVE_STEPS = { repoint: 'repoint kubeconfigs', stop: 'stop balancer', clean: 'remove files' } as const;

/** Folders that are k8s-ha's alone on a node: removed with what is in them. */
const OWN_DIRS = ['/etc/kube-nginx', STATE_DIR];
/**
 * What deploy and the balancer make in a prefix: k8s-ha's folders, and nginx's temporary ones (its HTTP
 * core makes client_body_temp and the others at start when nginx.statusListen adds an http block).
 * The prefix itself may hold the site's own files: it goes only when left empty.
 */
const PREFIX_DIRS = ['sbin', 'conf', 'logs', 'client_body_temp', 'proxy_temp', 'fastcgi_temp', 'uwsgi_temp', 'scgi_temp'];

/** How long the balancer's port has to close once its units are stopped (kubelet stops a static pod within seconds). */
export const PORT_CLOSE_S = 60;

export interface RemoveOptions extends Pick<DeployOptions, 'inventoryFile' | 'limit' | 'concurrency' | 'acceptNewHostKeys' | 'check' | 'waitLockMs' | 'sshUser' | 'identityFile'> {
  serial?: Serial;
  /** --repoint-to https://ADDR:PORT: where every kubeconfig naming the balancer goes, in place of its recorded origin. */
  repointTo?: string;
  repointTimeoutMs?: number;
  /** --force: remove even while processes other than kubelet and kube-proxy are connected through the balancer's port. */
  force?: boolean;
  /** --vip: take the VIP layer off its hosts (vip.hosts, or every master once the inventory has no vip:) instead of the nodes' balancers. */
  vip?: boolean;
}

/** What k8s-ha may have put on a node, from every built-in playbook as it renders for that node. */
export interface Footprint {
  /** Services k8s-ha runs balancers as (kube-nginx.service...). */
  units: string[];
  /** Their unit files, and every file a step installs. */
  files: string[];
  /** Static pod manifests (and the name a switch moves one aside to): kubelet stops the pod when it goes. */
  manifests: string[];
  /** Folders that are k8s-ha's alone (sbin/, conf/, logs/ and nginx's temporary folders in the prefixes, /etc/kube-nginx, /var/lib/k8s-ha). */
  dirs: string[];
  /** System users a step made (useradd). */
  users: string[];
  /** The prefixes, then their parents (/opt/k8s): removed only when left empty, and never a system folder. */
  parents: string[];
}

const USERADD = /^useradd\b.*\s([a-z_][a-z0-9_-]*)$/;

export function footprint(playbooks: Record<RunImpl, Playbook>, inv: Inventory, node: InventoryNode): Footprint {
  const prefixes = [...new Set([inv.lb.prefix, inv.kubeLb.prefix])];
  const above = [...new Set(prefixes.map((p) => posix.dirname(p)))].filter((d) => prefixProblem(d, '/opt/k8s') === undefined && !prefixes.includes(d));
  // A VIP host's state (its VRRP state, a VIP change's journal) lives in the same folder: it stays there.
  const own = vipHosts(inv).some((h) => h.name === node.name) ? OWN_DIRS.filter((d) => d !== STATE_DIR) : OWN_DIRS;
  const fp: Footprint = { units: [], files: [], manifests: [], dirs: [...prefixes.flatMap((p) => PREFIX_DIRS.map((d) => `${p}/${d}`)), ...own], users: [], parents: [...prefixes, ...above] };
  const add = (list: string[], v: string | undefined) => {
    if (v && !list.includes(v)) list.push(v);
  };
  for (const pb of Object.values(playbooks)) {
    for (const s of pb.steps(node)) {
      if (s.type !== 'op') continue;
      const a = s.args as Record<string, any>;
      if (s.op === OPERATIONS.file || s.op === OPERATIONS.template) add(fp.files, a.dest);
      else if (s.op === OPERATIONS.systemdUnit) add(fp.files, `/etc/systemd/system/${a.name}`);
      else if (s.op === OPERATIONS.service) {
        add(fp.units, `${a.name}.service`);
        for (const r of a.replaces ?? []) if (r.aside) add(fp.manifests, r.aside);
      } else if (s.op === OPERATIONS.staticPod) add(fp.manifests, a.manifest);
      else if (s.op === OPERATIONS.image) add(fp.files, a.archive);
      else if (s.op === OPERATIONS.command) add(fp.users, USERADD.exec(String(a.run).trim())?.[1]);
    }
  }
  // Files inside a folder that goes whole are not listed one by one.
  const inOwn = (f: string) => fp.dirs.some((d) => f.startsWith(d + '/'));
  fp.files = fp.files.filter((f) => !inOwn(f));
  return fp;
}

const userGuard = (u: string) => `id -u ${quote(u)}`;

export function removeFactRequest(inv: Inventory, fp: Footprint): Partial<FactRequest> {
  return {
    files: [...fp.files, ...fp.manifests],
    dirs: [...fp.dirs, ...fp.parents],
    // kubelet and kube-proxy: restarted once their kubeconfigs move, where their units exist.
    units: [...fp.units, ...units(inv.kubeconfigs)],
    guards: fp.users.map(userGuard),
    kubeconfigs: inv.kubeconfigs.map((k) => k.path),
    texts: [ORIGINS_FILE],
    images: [IMAGE_REPOSITORY],
  };
}

export interface RemovalPlan {
  /** Kubeconfigs to point away from the balancer, one plan per target. */
  repoint: RepointPlan[];
  /** Why nothing may be removed from this node (a kubeconfig with nowhere to go). */
  refusal?: string;
  stop: string[];
  manifests: string[];
  files: string[];
  /** `RUNTIME REF` of k8s-ha's own image in each runtime that holds it. */
  images: string[];
  users: string[];
  dirs: string[];
  parents: string[];
}

/** A server URL's ADDRESS:PORT (443 when it names none). */
export function listenOf(url: string): string {
  const rest = url.replace(/^https:\/\//, '').replace(/\/$/, '');
  return parseHostPort(rest) ? rest : `${rest}:443`;
}

/** --repoint-to, checked before any connection. */
export function checkRepointTo(v: string | undefined): void {
  if (v === undefined) return;
  if (!isServerUrl(v) || !parseHostPort(listenOf(v))) {
    throw new UsageError(`--repoint-to must be a server URL such as https://10.0.0.11:6443, got "${v}"`, {
      hint: 'give the apiserver (or load balancer) kubelet and kube-proxy should use once the node-local balancer is gone',
    });
  }
}

/** Pure: what `remove` does on a node with these facts. */
export function planRemoval(inv: Inventory, fp: Footprint, facts: HostFacts, o: { repointTo?: string } = {}): RemovalPlan {
  const balancer = serverUrl(inv.lb.listen);
  const origins = parseOrigins(facts.texts[ORIGINS_FILE]);
  const byTarget = new Map<string, Repoint[]>();
  const stranded: string[] = [];
  const copies: string[] = [];
  for (const k of inv.kubeconfigs) {
    const kc = facts.kubeconfigs?.[k.path];
    // Copies of the file (and its key) an earlier version or an interrupted run left beside it go too.
    if (kc?.legacyBackup) copies.push(`${k.path}${LEGACY_SUFFIX}`);
    for (const l of kc?.leftovers ?? []) if (l.startsWith('/')) copies.push(l);
    if (!kc || !kc.servers.includes(balancer)) continue;
    const origin = o.repointTo ? undefined : origins.get(k.path);
    const to = o.repointTo ?? origin?.server;
    if (!to) {
      stranded.push(k.path);
      continue;
    }
    const unit = k.service ? `${k.service}.service` : undefined;
    const service = unit && facts.units[unit] && facts.units[unit]!.loadState !== 'not-found' ? k.service : undefined;
    const names = kc.tlsServerNames;
    const why = [`server ${balancer} -> ${to}${origin ? ' (where it pointed before k8s-ha)' : ''}`];
    const change: Repoint = { path: k.path, from: balancer, to, service, why: '' };
    // Put back as it was: its own tls-server-name, or none; names that are right already stay where they are.
    if (origin && (origin.tlsServerName ? names.some((n) => n !== origin.tlsServerName) || names.length < kc.servers.length : names.length)) {
      if (origin.tlsServerName) change.serverName = origin.tlsServerName;
      else change.dropServerName = true;
      why.push(`tls-server-name ${names.find((n) => n !== origin.tlsServerName) ?? '(none)'} -> ${origin.tlsServerName || '(none)'}`);
    }
    change.why = why.join('; ');
    byTarget.set(to, [...(byTarget.get(to) ?? []), change]);
  }
  const repoint: RepointPlan[] = [...byTarget].map(([to, changes]) => ({
    changes,
    summary: changes.map((c) => `${c.path}: ${c.why}${c.service ? ` (restart ${c.service})` : ''}`).join('; '),
    to: listenOf(to),
    toWhat: o.repointTo ? 'the server --repoint-to names' : 'the server it named before k8s-ha',
  }));
  const present = (f: string) => facts.files[f] != null;
  const plan: RemovalPlan = {
    parents: fp.parents,
    repoint,
    stop: fp.units.filter((u) => facts.units[u] && facts.units[u]!.loadState !== 'not-found'),
    manifests: fp.manifests.filter(present),
    files: [...fp.files.filter(present), ...copies],
    // RUNTIME REF, the reference as a runtime names an image (never `<none>`, never a shell character).
    images: (facts.images?.[IMAGE_REPOSITORY] ?? []).map((l) => l.split(' ').slice(0, 2).join(' ')).filter((l) => /^(podman|docker|containerd) [A-Za-z0-9._/:@-]+$/.test(l)),
    users: fp.users.filter((u) => facts.guards[userGuard(u)] === 0),
    dirs: fp.dirs.filter((d) => facts.dirs[d] != null),
  };
  if (stranded.length) {
    plan.refusal =
      `${stranded.join(' and ')} ${stranded.length > 1 ? 'name' : 'names'} the balancer (${balancer}), and k8s-ha kept no record of where ${stranded.length > 1 ? 'they' : 'it'} pointed before: ` +
      'nothing is removed from this node, or its kubelet would be left on a port about to close';
  }
  return plan;
}

export const hasRemoval = (p: RemovalPlan): boolean => !!(p.stop.length || p.manifests.length || p.files.length || p.images.length || p.users.length || p.dirs.length);

/** What stage 2 and 3 would do, in words. */
export function describeStop(p: RemovalPlan): string {
  const parts = [...p.stop.map((u) => `stop and disable ${u}`), ...p.manifests.map((m) => `remove static pod manifest ${m}`)];
  return parts.length ? parts.join('; ') : 'no balancer of k8s-ha runs here';
}

export function describeClean(p: RemovalPlan): string {
  const parts = [
    ...(p.files.length ? [`files ${p.files.join(', ')}`] : []),
    ...(p.dirs.length ? [`folders ${p.dirs.join(', ')}`] : []),
    ...(p.users.length ? [`user${p.users.length > 1 ? 's' : ''} ${p.users.join(', ')}`] : []),
    ...(p.images.length ? [`image${p.images.length > 1 ? 's' : ''} ${p.images.join(', ')}`] : []),
  ];
  return parts.length ? `remove ${parts.join('; ')}` : 'nothing of k8s-ha is left here';
}

/**
 * Stages 2 and 3 on the node, after the kubeconfigs moved: one script, behind any other k8s-ha script
 * and only while this run holds the lock. Markers: @@remove-refused REASON (nothing done),
 * @@remove-failed REASON (stopped there; a rerun goes on from the node's state), @@done ITEM, @@removed-all.
 */
export function removalScript(p: RemovalPlan, o: { listen: string; runId: string; force: boolean; waitSeconds: number }): string {
  const say = (why: string) => `echo ${quote(`@@remove-failed ${why}`)}`;
  const { fail, rm } = stepShell('@@remove-failed');
  const lines = [
    'set -u',
    "trap '' HUP PIPE",
    guardedBy(o.runId, { lockDir: LOCK_DIR, waitSeconds: o.waitSeconds, say }).trimEnd(),
    `LISTEN=${quote(o.listen)}`,
  ];
  if (!o.force && (p.stop.length || p.manifests.length)) {
    // Who still talks to an apiserver through the port: a kubelet or kube-proxy whose kubeconfig the
    // inventory does not list, a CNI plugin, an operator's kubectl. Named, and nothing is stopped.
    lines.push(
      `if ! out=$(ss -Htnp state established dst "$LISTEN" 2>&1); then echo "@@remove-refused cannot tell what still connects through $LISTEN (ss: $(printf '%s' "$out" | tr '\\n' ' ')); give --force to remove anyway"; exit 0; fi`,
      // Each as NAME (pid N, UNIT): the unit says what to restart or point elsewhere.
      `if [ -n "$out" ]; then who=$(printf '%s\\n' "$out" | grep -o '"[^"]*",pid=[0-9]*' | sort -u | while IFS= read -r p; do n=\${p#\\"}; n=\${n%%\\"*}; pid=\${p##*=}; u=$(ps -o unit= -p "$pid" 2>/dev/null | tr -d ' '); printf '%s (pid %s%s), ' "$n" "$pid" "\${u:+, $u}"; done); who=\${who%, }; echo "@@remove-refused still connected through $LISTEN: \${who:-processes ss cannot name}"; exit 0; fi`,
    );
  }
  // Units a switch left behind, stopped and disabled already, only lose their files below.
  for (const u of p.stop) lines.push(`if systemctl is-active -q ${quote(u)} || systemctl is-enabled -q ${quote(u)} 2>/dev/null; then out=$(systemctl disable --now ${quote(u)} 2>&1) || ${fail(`stop ${u}`)}; echo ${quote(`@@done stopped and disabled ${u}`)}; fi`);
  for (const m of p.manifests) lines.push(rm(m));
  if (p.stop.length || p.manifests.length) {
    lines.push(
      `end=$(( $(date +%s) + ${PORT_CLOSE_S} ))`,
      `while out=$(ss -Htlnp state listening src "$LISTEN" 2>/dev/null) && [ -n "$out" ]; do [ "$(date +%s)" -lt "$end" ] || ${fail(`${o.listen} is still open ${PORT_CLOSE_S} s after the balancer was stopped`)}; sleep 0.2; done`,
      `echo "@@done $LISTEN closed"`,
    );
  }
  for (const f of p.files) lines.push(rm(f));
  if (p.files.some((f) => f.startsWith('/etc/systemd/system/')) || p.stop.length) {
    lines.push(`systemctl daemon-reload; systemctl reset-failed ${p.stop.map(quote).join(' ')} >/dev/null 2>&1; true`);
  }
  for (const i of p.images) {
    const [rt, ref] = i.split(' ') as [string, string];
    const cmd = rt === 'containerd' ? `ctr -n k8s.io images rm ${quote(ref)}` : `${rt} rmi -f ${quote(ref)}`;
    lines.push(`out=$(timeout 60 ${cmd} 2>&1) || ${fail(`remove image ${ref} from ${rt}`)}; echo ${quote(`@@done removed image ${ref} from ${rt}`)}`);
  }
  for (const u of p.users) {
    lines.push(`if id -u ${quote(u)} >/dev/null 2>&1; then out=$(userdel ${quote(u)} 2>&1) || ${fail(`remove user ${u}`)}; fi; if getent group ${quote(u)} >/dev/null; then groupdel ${quote(u)} >/dev/null 2>&1; fi; echo ${quote(`@@done removed user ${u}`)}`);
  }
  // /var/lib/k8s-ha last of the files: it holds the kubeconfigs' origins, which a rerun needs until the files are gone.
  for (const d of p.dirs) lines.push(rm(d, '-rf'));
  lines.push(finalCleanup(p.parents), "echo '@@removed-all'");
  return lines.join('\n') + '\n';
}

/**
 * What goes at the end of every run that changes a node, even one with nothing else left to remove:
 * the prefixes and their parents, when empty. The lock's folder (/run/k8s-ha, a tmpfs gone at the next
 * boot) stays: removed under a run waiting for the lock, it would let a third take it as well.
 */
export function finalCleanup(parents: string[]): string {
  return parents.map((d) => `rmdir -- ${quote(d)} 2>/dev/null`).join('; ') + '; true';
}

export interface RemovalOutcome {
  ok: boolean;
  refused?: string;
  failure?: string;
  done: string[];
}

export function parseRemovalOutput(stdout: string, stderr = '', code = 0): RemovalOutcome {
  const done = doneLines(stdout);
  const refused = /^@@remove-refused (.*)$/m.exec(stdout)?.[1];
  if (refused) return { ok: false, refused, done };
  const failure = /^@@remove-failed (.*)$/m.exec(stdout)?.[1] ?? (/^@@failed journal 17$/m.test(stdout) ? (/^@@failed journal 17\n(.+)$/m.exec(stdout)?.[1] ?? 'another k8s-ha script on the node held its apply lock') : undefined);
  if (failure || !/^@@removed-all$/m.test(stdout)) return { ok: false, failure: failure ?? (stderr.trim() || `the removal script ended with exit ${code}`), done };
  return { ok: true, done };
}

export type RemoveEvent =
  | { type: 'start'; runId: string; nodes: string[]; check: boolean; warnings: string[] }
  | { type: 'batch'; index: number; total: number; nodes: string[] }
  | { type: 'host'; name: string; phase: string; detail?: string }
  | { type: 'host-done'; result: HostResult };

export interface RemoveReport {
  ok: boolean;
  check: boolean;
  runId: string;
  hosts: Record<string, HostResult>;
  totals: Totals;
  interrupted?: boolean;
  /** Why the run stopped before every node (a failed batch, an interrupt). */
  stopped?: string;
  durationMs: number;
}

const step = (name: string, status: StepResult['status'], summary: string, error?: string): StepResult => ({ name, status, summary, ...(error ? { error } : {}) });

/** The three steps of a node whose plan is known, before anything ran: what --check reports. */
export function plannedSteps(p: RemovalPlan): StepResult[] {
  const repoint = p.refusal
    ? step(REMOVE_STEPS.repoint, 'failed', p.refusal, p.refusal)
    : p.repoint.length
      ? step(REMOVE_STEPS.repoint, 'changed', p.repoint.map((r) => r.summary).join('; '))
      : step(REMOVE_STEPS.repoint, 'ok', 'no kubeconfig names the balancer');
  const blocked = p.refusal ? 'nothing is removed: a kubeconfig has nowhere to go' : undefined;
  return [
    repoint,
    blocked ? step(REMOVE_STEPS.stop, 'skipped', blocked) : step(REMOVE_STEPS.stop, p.stop.length || p.manifests.length ? 'changed' : 'ok', describeStop(p)),
    blocked ? step(REMOVE_STEPS.clean, 'skipped', blocked) : step(REMOVE_STEPS.clean, hasRemoval(p) ? 'changed' : 'ok', describeClean(p)),
  ];
}

export async function runRemove(options: RemoveOptions, emit: (e: RemoveEvent) => void, control: { signal?: AbortSignal } = {}): Promise<RemoveReport> {
  checkRepointTo(options.repointTo);
  if (options.vip) return removeVip(options, emit, control);
  const setup = await loadSetup({ ...options, repointKubeconfigs: false });
  const inv = setup.loaded.inventory;
  if (options.repointTo && listenOf(options.repointTo) === listenOf(serverUrl(inv.lb.listen))) {
    throw new UsageError(`--repoint-to ${options.repointTo} is the node-local balancer itself, which remove is about to stop`, { hint: 'name an apiserver, or your own load balancer' });
  }
  const notNodes = (options.limit ?? []).filter((n) => !inv.nodes.some((x) => x.name === n));
  if (notNodes.length) {
    throw new UsageError(`--limit names ${notNodes.join(', ')}, which ${notNodes.length > 1 ? 'are VIP hosts' : 'is a VIP host'}, not ${notNodes.length > 1 ? 'nodes' : 'a node'}: remove takes the node-local balancer off nodes`, {
      hint: `name nodes of ${options.inventoryFile}; the VIP layer is not removed by this command`,
    });
  }
  const runId = newRunId();
  const identity = controllerIdentity();
  const holder = `${identity} since ${new Date().toISOString()}, run ${runId}`;
  const check = !!options.check;
  const started = Date.now();
  const timeoutS = Math.max(1, Math.round((options.repointTimeoutMs ?? REPOINT_TIMEOUT_S * 1000) / 1000));
  emit({ type: 'start', runId, nodes: setup.nodes.map((n) => n.name), check, warnings: setup.warnings });
  const results = new Map<string, HostResult>();
  const done = (r: HostResult) => {
    results.set(r.name, r);
    emit({ type: 'host-done', result: r });
  };

  const one = async (node: InventoryNode): Promise<HostResult> => {
    const target = setup.targets.get(node.name) as SshTarget;
    const fp = footprint(setup.playbooks, inv, node);
    const say = (phase: string, detail?: string) => emit({ type: 'host', name: node.name, phase, detail });
    const job: HostJob = { inventory: inv, node, target, holder, steps: [], base: { artifacts: {}, render: () => '' }, extraFacts: removeFactRequest(inv, fp), say };
    const s = await openSession(job, { waitLockSeconds: (options.waitLockMs ?? 0) / 1000, check, verifyDeadlineMs: 15_000, signal: control.signal });
    if (!('conn' in s)) return { ...s, steps: Object.values(REMOVE_STEPS).map((n) => step(n, 'skipped', s.status === 'locked' ? 'host locked by another run' : 'not reached')) };
    const base = { name: node.name, ...dialed(target), ...(s.recovered ? { recovered: s.recovered } : {}) };
    try {
      const facts = await readFacts(s, job);
      const plan = planRemoval(inv, fp, facts, { repointTo: options.repointTo });
      const planned = plannedSteps(plan);
      if (check || plan.refusal) return finishHost({ ...base, steps: planned, ...(plan.refusal ? { error: plan.refusal, hint: 'give --repoint-to https://ADDRESS:PORT (an apiserver, or your own load balancer)' } : {}) });
      if (control.signal?.aborted) return finishHost({ ...base, status: 'skipped', steps: planned.map((p) => step(p.name, 'skipped', 'interrupted before this node')) });
      const steps: StepResult[] = [];
      if (plan.repoint.length) {
        say('repointing');
        const details: string[] = [];
        for (const r of plan.repoint) {
          const out = await repointHost(s.conn, r, inv, runId, timeoutS);
          if (!out.ok) {
            const why = `${r.summary}: ${out.detail}`;
            return finishHost({ ...base, steps: [step(REMOVE_STEPS.repoint, 'failed', why, why), ...planned.slice(1).map((p) => step(p.name, 'skipped', 'nothing is removed: a kubeconfig did not move'))], error: why });
          }
          details.push(out.detail);
        }
        steps.push(step(REMOVE_STEPS.repoint, 'changed', details.join('; ')));
      } else steps.push(planned[0]!);
      if (!hasRemoval(plan)) {
        await s.conn.execAsRoot(finalCleanup(plan.parents));
        return finishHost({ ...base, steps: [...steps, ...planned.slice(1)] });
      }
      say('removing');
      const script = removalScript(plan, { listen: inv.lb.listen, runId, force: !!options.force, waitSeconds: deadlineOf('apply', target.deadlines) / 4000 });
      const r = await s.conn.execAsRoot(script, { kind: 'apply' });
      const out = parseRemovalOutput(r.stdout, r.stderr, r.code ?? undefined);
      const stopped = out.done.filter((d) => /^stopped|^removed \/etc\/kubernetes\/manifests|closed$/.test(d));
      const cleaned = out.done.filter((d) => !stopped.includes(d));
      if (out.refused) {
        const why = `${out.refused}: nothing was stopped`;
        return finishHost({ ...base, steps: [...steps, step(REMOVE_STEPS.stop, 'failed', why, why), step(REMOVE_STEPS.clean, 'skipped', 'nothing removed')], error: why, hint: 'restart or point those clients elsewhere first (a kubelet or kube-proxy whose kubeconfig the inventory does not list: add it to kubeconfigs), or give --force' });
      }
      const stopStep = stopped.length ? step(REMOVE_STEPS.stop, 'changed', stopped.join('; ')) : planned[1]!;
      if (!out.ok) {
        const why = out.failure!;
        const failedInStop = !stopped.some((d) => d.endsWith('closed')) && (plan.stop.length > 0 || plan.manifests.length > 0);
        return finishHost({
          ...base,
          steps: [...steps, failedInStop ? step(REMOVE_STEPS.stop, 'failed', why, why) : stopStep, failedInStop ? step(REMOVE_STEPS.clean, 'skipped', 'not reached') : step(REMOVE_STEPS.clean, 'failed', `${cleaned.join('; ') || 'nothing removed'}; then ${why}`, why)],
          error: why,
          hint: 'rerun k8s-ha remove: it goes on from what is left on the node',
        });
      }
      return finishHost({ ...base, steps: [...steps, stopStep, step(REMOVE_STEPS.clean, 'changed', cleaned.join('; '))] });
    } catch (e) {
      const why = (e as Error).message;
      return finishHost({ ...base, status: 'failed', steps: Object.values(REMOVE_STEPS).map((n) => step(n, 'skipped', 'not finished')), error: why });
    } finally {
      closeSession(s);
    }
  };

  const batches = check ? [setup.nodes] : chunk(setup.nodes, batchSize(options.serial ?? { percent: 25 }, setup.nodes.length));
  let stopped: string | undefined;
  for (const [i, batch] of batches.entries()) {
    if (stopped === undefined && control.signal?.aborted) stopped = 'interrupted';
    if (stopped !== undefined) {
      for (const n of batch) done(finishHost({ name: n.name, ...dialed(setup.targets.get(n.name)!), status: 'skipped', steps: Object.values(REMOVE_STEPS).map((s) => step(s, 'skipped', `not reached: ${stopped}`)) }));
      continue;
    }
    if (!check) emit({ type: 'batch', index: i + 1, total: batches.length, nodes: batch.map((n) => n.name) });
    await mapLimit(batch, options.concurrency, async (n) => done(await one(n)));
    const failedHere = batch.filter((n) => ['failed', 'unreachable', 'locked'].includes(results.get(n.name)!.status));
    if (!check && failedHere.length && i < batches.length - 1) stopped = `batch ${i + 1} failed on ${failedHere.map((n) => n.name).join(', ')}`;
  }
  const hosts = Object.fromEntries(setup.nodes.map((n) => [n.name, results.get(n.name)!]));
  const t = totals(Object.values(hosts));
  const interrupted = !!control.signal?.aborted;
  return {
    ok: !interrupted && t.failed + t.unreachable + t.locked === 0 && (!stopped || check),
    check,
    runId,
    hosts,
    totals: t,
    ...(interrupted ? { interrupted } : {}),
    ...(stopped ? { stopped } : {}),
    durationMs: Date.now() - started,
  };
}

/**
 * remove --vip: the whole VIP layer off its hosts, the hosts that do not hold the VIP first and its
 * holder last (the VIP goes with it: outside clients lose it, which is what was asked). The hosts are
 * vip.hosts while the inventory has them, else every master (--limit narrows either); a host whose
 * keepalived k8s-ha did not set up is left alone.
 */
async function removeVip(options: RemoveOptions, emit: (e: RemoveEvent) => void, control: { signal?: AbortSignal }): Promise<RemoveReport> {
  if (options.repointTo !== undefined || options.force) throw new UsageError(`${options.repointTo !== undefined ? '--repoint-to' : '--force'} is for the nodes' balancers, not --vip`, { hint: 'leave it out' });
  const setup = await loadSetup({ ...options, limit: undefined, repointKubeconfigs: false });
  const inv = setup.loaded.inventory;
  const candidates = inv.vip ? vipHosts(inv).map((h) => ({ name: h.name, address: h.address, ssh: h.ssh })) : inv.masters.map((m) => ({ name: m.name, address: m.address, ssh: m.ssh }));
  const unknown = (options.limit ?? []).filter((n) => !candidates.some((c) => c.name === n));
  if (unknown.length) {
    throw new UsageError(`--limit names ${unknown.join(', ')}, not ${inv.vip ? 'in vip.hosts' : 'a master'} of ${options.inventoryFile}`, { hint: `with --vip, name ${inv.vip ? 'VIP hosts' : 'masters'}: ${candidates.map((c) => c.name).join(', ')}` });
  }
  const hosts: LeavingHost[] = candidates
    .filter((c) => !options.limit?.length || options.limit.includes(c.name))
    .map((c) => ({ name: c.name, address: c.address, known: true, isNode: inv.nodes.some((n) => n.name === c.name || n.address === c.address), ...(c.ssh ? { ssh: c.ssh } : {}) }));
  const runId = newRunId();
  const holder = `${controllerIdentity()} since ${new Date().toISOString()}, run ${runId}`;
  const check = !!options.check;
  const started = Date.now();
  emit({ type: 'start', runId, nodes: hosts.map((h) => vipLabel(h.name)), check, warnings: setup.warnings });
  const left = await leaveVip(setup, hosts, [], {
    runId,
    holder,
    check,
    handover: false,
    reason: 'remove --vip',
    settleMs: 0,
    verifyDeadlineMs: 15_000,
    signal: control.signal,
    emit: (e) => {
      if (e.type === 'host-phase') emit({ type: 'host', name: e.name, phase: e.phase === 'committing' ? 'removing' : e.phase, detail: e.detail });
    },
  });
  const results = hosts.map((h) => {
    const r = left.results.get(h.name)!;
    const { heldBefore: _held, ...rest } = r;
    return { ...rest, name: vipLabel(h.name) };
  });
  for (const r of results) emit({ type: 'host-done', result: r });
  const t = totals(results);
  const interrupted = !!control.signal?.aborted;
  return {
    ok: !interrupted && t.failed + t.unreachable + t.locked === 0,
    check,
    runId,
    hosts: Object.fromEntries(results.map((r) => [r.name, r])),
    totals: t,
    ...(interrupted ? { interrupted } : {}),
    ...(left.error && t.skipped ? { stopped: left.error } : {}),
    durationMs: Date.now() - started,
  };
}
