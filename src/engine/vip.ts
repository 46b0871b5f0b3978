/**
 * The VIP layer's part of a deploy: haproxy and keepalived on each of vip.hosts, over the same
 * host jobs as the nodes (lock, journal, staged files validated before the swap, verify, restore).
 *
 * Order: hosts whose haproxy and keepalived do not serve yet are set up at once. Hosts that serve
 * change one at a time, the hosts that do not hold the VIP first and its holder last, each verified
 * before the next: the VIP moves at most once (the holder's keepalived reloads; it does not move
 * at all unless the holder must let go). A host that fails verify is restored and the rest wait.
 *
 * Then the VIP itself: exactly one host holds it (two are a split brain, none an outage), and
 * /readyz answers 200 through VIP:PORT, from another VIP host over its own network, verified
 * with the cluster CA.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { httpsGet } from '../connect/https-probe.js';
import { SshConnection, type SshTarget } from '../connect/ssh.js';
import { vipHosts, type Inventory, type InventoryNode, type VipHost } from '../inventory/schema.js';
import { VIP_HAPROXY_SERVICE, VIP_KEEPALIVED_SERVICE, VIP_PATHS, VIP_TEMPLATES } from '../lb/vip.js';
import { keepalivedPeers, leaveVip, leavingHosts, LEAVE_STEP } from './vip-leave.js';
import { mapLimit } from '../util/pool.js';
import { quote } from '../util/quote.js';
import { formatHostPort } from '../util/hostport.js';
import type { Setup } from './deploy.js';
import { applyPlanned, closeSession, failedResult, hostResult, notReached, openSession, planOn, type HostJob, type PlannedHost, type Session } from './host.js';
import { hasChanges } from './plan.js';
import { tlsOptions } from './probe.js';
import type { HostResult } from './results.js';
import type { Emit } from './run.js';
import { checkNode, type NodeCheck } from './check.js';

/** Shell: exit 0 when this host has the address (keepalived added it here). */
export function holdsCommand(address: string): string {
  return `ip -o addr show to ${quote(address)} | grep -q .`;
}

/** The one way deploy, --check and status say that several hosts hold the VIP. */
export const splitBrain = (holders: string[], address: string) => `split brain: ${holders.join(' and ')} all hold the VIP ${address}`;

/** How a VIP host's name is shown beside the nodes (a master may share a node's name space). */
export const vipLabel = (name: string) => `vip/${name}`;

/**
 * Who holds the VIP as --check saw it, claiming no more than was asked: "not held" only when every
 * VIP host of the run answered; unknown when none could be asked.
 */
export function heldText(holders: string[], asked: number, of: number): string {
  if (holders.length === 1) return `held by ${holders[0]}`;
  if (asked === 0) return `unknown: none of the ${of} VIP host${of === 1 ? '' : 's'} could be asked`;
  if (asked < of) return `held by none of the ${asked} VIP host${asked === 1 ? '' : 's'} asked; ${of - asked} could not be asked`;
  return 'not held';
}

export interface VipHostReport
  extends Pick<HostResult, 'address' | 'via' | 'status' | 'ok' | 'changed' | 'failed' | 'steps' | 'error' | 'hint' | 'journal' | 'verified' | 'rollback' | 'recovered' | 'lockedBy'> {
  /** `leaving`: no longer in vip.hosts, taken off the VIP by this run (vip-leave.ts). */
  role: VipHost['role'] | 'leaving';
  /** Held the VIP when planned. */
  heldBefore?: boolean;
  /** --check / --diff: what would change. */
  check?: Pick<NodeCheck, 'service' | 'changes'>;
}

export interface VipReport {
  address: string;
  port: number;
  ok: boolean;
  hosts: Record<string, VipHostReport>;
  /** Hosts changed one at a time, in this order (the holder last). */
  rolled: string[];
  /** Hosts that hold the VIP after the run (more than one: a split brain). */
  holders?: string[];
  /** /readyz through VIP:PORT. */
  through?: { ok: boolean; summary: string; from?: string };
  /** Why the VIP is not proven, when it is not. */
  error?: string;
}

interface VipRun {
  host: VipHost;
  job: HostJob;
  session?: Session;
  planned?: PlannedHost;
  result?: HostResult;
}

export interface VipOptions {
  runId: string;
  identity: string;
  holder: string;
  emit: Emit;
  signal?: AbortSignal;
  concurrency: number;
  verifyDeadlineMs: number;
}

/** A VIP host's line of the report, from its result. */
function vipHostReport(h: HostResult, role: VipHostReport['role']): VipHostReport {
  const { address, via, status, ok, changed, failed, steps, error, hint, journal, verified, rollback, recovered, lockedBy } = h;
  return { role, address, via, status, ok, changed, failed, steps, error, hint, journal, verified, rollback, recovered, lockedBy };
}

/** The VIP hosts this run works on: all of them, or those --limit names. */
export function selectedVipHosts(inv: Inventory, limit?: string[]): VipHost[] {
  const all = vipHosts(inv);
  return limit?.length ? all.filter((h) => limit.includes(h.name)) : all;
}

function vipJob(setup: Setup, host: VipHost, o: VipOptions): HostJob {
  const inv = setup.loaded.inventory;
  const peers = vipHosts(inv);
  const node: InventoryNode = { name: vipLabel(host.name), address: host.address };
  const steps = setup.vipPlaybook!.steps({ name: host.name, address: host.address });
  return {
    inventory: inv,
    node,
    target: setup.vipTargets.get(host.name)!,
    holder: o.holder,
    steps,
    base: { artifacts: {}, render: (t, facts) => VIP_TEMPLATES[t]!(inv, host, facts, peers) },
    wantText: setup.options.diff,
    // Its live keepalived.conf: the peers it runs with name any host taken out of vip.hosts since.
    extraFacts: { interfaces: [host.address], guards: [holdsCommand(inv.vip!.address)], texts: [VIP_PATHS.keepalivedConfig] },
    say: (phase, detail) => o.emit({ type: 'host-phase', name: node.name, phase, detail }),
  };
}

const serving = (p: PlannedHost) => [VIP_HAPROXY_SERVICE, VIP_KEEPALIVED_SERVICE].some((u) => p.plan.facts.units[u]?.activeState === 'active');

/** Asks one VIP host a shell command as root: over the run's session, or a connection of its own. */
export type VipAsk = { name: string; exec: (command: string) => Promise<{ code: number | null }> };

/** Which VIP hosts hold the address now; a host that does not answer is left out and named. */
export async function vipHolders(hosts: VipAsk[], address: string): Promise<{ holders: string[]; silent: string[] }> {
  const holders: string[] = [];
  const silent: string[] = [];
  await Promise.all(
    hosts.map(async (h) => {
      try {
        const r = await h.exec(holdsCommand(address));
        if (r.code === 0) holders.push(h.name);
      } catch {
        silent.push(h.name);
      }
    }),
  );
  return { holders: holders.sort(), silent: silent.sort() };
}

/**
 * Wait (up to deadlineMs) until exactly one host holds the VIP, then prove /readyz answers through
 * it, asked from another VIP host (over the network, as an outside client would) when there is one.
 */
export async function proveVip(
  inv: Inventory,
  sessions: { name: string; session: Session }[],
  others: VipAsk[],
  deadlineMs: number,
): Promise<Pick<VipReport, 'holders' | 'through' | 'error'>> {
  const v = inv.vip!;
  const start = Date.now();
  let seen: { holders: string[]; silent: string[] } = { holders: [], silent: [] };
  // Every VIP host, also those --limit left out: any of them may hold the VIP.
  const all: VipAsk[] = [...sessions.map((x) => ({ name: x.name, exec: (c: string) => x.session.conn.execAsRoot(c) })), ...others];
  // A first deploy waits for vrrp_startup_delay and an election (about 5 + 3 s); a split brain must last to count.
  for (;;) {
    seen = await vipHolders(all, v.address);
    if (seen.holders.length === 1 || Date.now() - start >= deadlineMs) break;
    await sleep(500);
  }
  const { holders } = seen;
  const silent = seen.silent.length ? ` (${seen.silent.join(', ')} did not answer)` : '';
  if (holders.length === 0) return { holders, error: `no host holds the VIP ${v.address} after ${Math.round(deadlineMs / 1000)} s${silent}: look at \`journalctl -u keepalived\` on ${all.map((h) => h.name).join(', ')}` };
  if (holders.length > 1) {
    return { holders, error: `${splitBrain(holders, v.address)}; their keepalived instances do not hear each other (VRRP, IP protocol 112, blocked between them? or dropped as "not a unicast peer": \`journalctl -u keepalived\`)${silent}` };
  }
  const from = sessions.find((s) => s.name !== holders[0]) ?? sessions[0]!;
  const where = formatHostPort(v.address, v.port);
  let last = '';
  for (;;) {
    try {
      const r = await httpsGet(() => from.session.conn.connectFromHost(v.address, v.port), { path: '/readyz', ...tlsOptions(inv, inv.tls.serverName ?? v.address), timeoutMs: 3000 });
      if (r.status === 200) {
        return { holders, through: { ok: true, from: from.name, summary: `GET /readyz through ${where} from ${from.name}: 200 from ${r.peer ?? 'an apiserver'} (${inv.tls.caFile ? 'TLS verified' : 'TLS NOT verified'})` } };
      }
      last = `answered ${r.status}: ${r.body.trim().split('\n')[0]}`;
    } catch (e) {
      last = (e as Error).message.split('\n')[0]!;
    }
    if (Date.now() - start >= deadlineMs) break;
    await sleep(500);
  }
  const summary = `GET /readyz through ${where} from ${from.name}: ${last}`;
  return { holders, through: { ok: false, from: from.name, summary }, error: `the VIP does not answer: ${summary}` };
}

/** One command on a host over a connection of its own, closed after. */
async function askOnce(target: SshTarget, command: string): Promise<{ code: number | null }> {
  const conn = await SshConnection.open(target);
  try {
    return await conn.execAsRoot(command);
  } finally {
    conn.close();
  }
}

/** How long the VIP may take to settle after a change: keepalived's startup delay, an election, haproxy's first checks. */
const VIP_SETTLE_MS = 30_000;

export async function runVip(setup: Setup, o: VipOptions): Promise<VipReport | undefined> {
  const inv = setup.loaded.inventory;
  const v = inv.vip;
  const hosts = setup.vipHosts;
  if (!v || !hosts.length) return undefined;
  const check = !!setup.options.check;
  const emit = o.emit;
  const stopped = () => !!o.signal?.aborted;
  const runs: VipRun[] = [];
  for (const host of hosts) runs.push({ host, job: vipJob(setup, host, o) });
  const done = (r: VipRun, result: HostResult) => {
    r.result = result;
    emit({ type: 'host-done', result });
  };
  const sessionOpts = { waitLockSeconds: (setup.options.waitLockMs ?? 0) / 1000, check, verifyDeadlineMs: o.verifyDeadlineMs, signal: o.signal };
  const fail = (r: VipRun, e: unknown) => done(r, failedResult(r, e));
  emit({
    type: 'phase',
    phase: 'vip',
    title: `${check ? 'Check' : 'Set up'} the VIP ${formatHostPort(v.address, v.port)} on ${hosts.map((h) => h.name).join(', ')} (haproxy + keepalived)`,
  });
  const report: VipReport = { address: v.address, port: v.port, ok: false, hosts: {}, rolled: [] };
  // VIP hosts --limit left out are asked too (read-only, over a connection of their own): the holder may be one of them.
  const others: VipAsk[] = vipHosts(inv)
    .filter((h) => !hosts.some((x) => x.name === h.name))
    .map((h) => ({ name: h.name, exec: (c: string) => askOnce(setup.vipTargets.get(h.name)!, c) }));
  try {
    // Connect, lock and plan every VIP host.
    await mapLimit(runs, o.concurrency, async (r) => {
      if (stopped()) return done(r, notReached(r, 'the run was interrupted'));
      const s = await openSession(r.job, sessionOpts);
      if ('status' in s) return done(r, s);
      for (const line of s.conn.notes) emit({ type: 'note', line });
      r.session = s;
      try {
        r.planned = await planOn(s, r.job);
      } catch (e) {
        closeSession(s);
        r.session = undefined;
        fail(r, e);
      }
    });
    const planned = runs.filter((r) => r.planned && !r.result);
    const heldBefore = new Set(planned.filter((r) => r.planned!.plan.facts.guards[holdsCommand(v.address)] === 0).map((r) => r.host.name));
    // Hosts taken out of vip.hosts leave first, the holder last; the remaining hosts drop them as peers only then.
    const leaving = leavingHosts(inv, planned.map((r) => keepalivedPeers(r.planned!.plan.facts.texts[VIP_PATHS.keepalivedConfig])), vipHosts(inv));
    let leaveError: string | undefined;
    const leavingHeld: string[] = [];
    if (leaving.length && !stopped()) {
      emit({ type: 'note', line: `no longer in vip.hosts: ${leaving.map((h) => h.name).join(', ')}: ${check ? 'would be' : 'being'} taken off the VIP before the others drop ${leaving.length > 1 ? 'them' : 'it'} as a peer` });
      // Who may take the VIP over: the remaining hosts whose keepalived runs, those --limit left out included.
      const remaining: VipAsk[] = [
        ...planned.filter((r) => r.planned!.plan.facts.units[VIP_KEEPALIVED_SERVICE]?.activeState === 'active').map((r) => ({ name: r.host.name, exec: (c: string) => r.session!.conn.execAsRoot(c) })),
        ...others,
      ];
      const left = await leaveVip(setup, leaving, remaining, { runId: o.runId, holder: o.holder, emit, check, settleMs: VIP_SETTLE_MS, verifyDeadlineMs: o.verifyDeadlineMs, signal: o.signal });
      leaveError = left.error;
      // The new holder changes last in the roll below.
      if (left.handedTo) heldBefore.add(left.handedTo);
      for (const [name, h] of left.results) {
        emit({ type: 'host-done', result: h });
        if (h.heldBefore) leavingHeld.push(name);
        report.hosts[name] = {
          ...vipHostReport(h, 'leaving'),
          heldBefore: h.heldBefore,
          ...(check && h.steps[0]?.status === 'changed' ? { check: { service: 'stop keepalived and haproxy', changes: [{ step: LEAVE_STEP, summary: h.steps[0].summary }] } } : {}),
        };
      }
      if (leaveError && !check) {
        // The others keep it as a peer: dropped while it still runs, it would claim the VIP too.
        for (const r of planned) done(r, notReached(r, `${leaveError}: the remaining VIP hosts keep their peer list until it has left`));
      }
    }
    if (check) {
      for (const r of planned) r.result = hostResult(r.planned!, undefined);
    } else if (!leaveError) {
      const apply = async (r: VipRun, rolling: boolean) => {
        if (stopped()) return done(r, notReached(r, `the run was interrupted (${String(o.signal?.reason ?? 'interrupted')})`));
        const out = await applyPlanned(r.session!, r.planned!, { backup: rolling, checkNewList: false, verifyDeadlineMs: o.verifyDeadlineMs }, { runId: o.runId, by: o.identity });
        done(r, hostResult(r.planned!, out));
      };
      // Nothing to change: only verified, at once.
      const unchanged = planned.filter((r) => !hasChanges(r.planned!.plan));
      await Promise.all(unchanged.map((r) => apply(r, false)));
      // Serving: one at a time, the VIP's holder last, stopping at the first failure.
      const rolling = planned.filter((r) => !unchanged.includes(r) && serving(r.planned!)).sort((a, b) => Number(heldBefore.has(a.host.name)) - Number(heldBefore.has(b.host.name)));
      // Not serving yet: at once, and only once the serving hosts know them as peers. A new host started
      // first would hear no advert from a holder that does not send it any, and claim the VIP too.
      const fresh = planned.filter((r) => !unchanged.includes(r) && !rolling.includes(r));
      report.rolled = rolling.map((r) => r.host.name);
      let failedAt: string | undefined;
      for (const [i, r] of rolling.entries()) {
        emit({ type: 'batch', phase: 'vip', index: i + 1, total: rolling.length, nodes: [r.job.node.name] });
        await apply(r, true);
        if (r.result!.status === 'failed' || r.result!.status === 'unreachable') {
          failedAt = r.host.name;
          for (const rest of rolling.slice(i + 1)) done(rest, notReached(rest, `${r.host.name} failed before it: the VIP hosts change one at a time`));
          break;
        }
      }
      if (failedAt) for (const r of fresh) done(r, notReached(r, `${failedAt} failed: new VIP hosts start only once every serving one knows them`));
      else await Promise.all(fresh.map((r) => apply(r, false)));
    }
    for (const r of runs) {
      const h = r.result ?? notReached(r, 'not reached');
      report.hosts[r.host.name] = {
        ...vipHostReport(h, r.host.role),
        heldBefore: r.planned ? heldBefore.has(r.host.name) : undefined,
        check: (check || setup.options.diff) && r.planned ? checkNode(r.planned, undefined, !!setup.options.diff) : undefined,
      };
    }
    const live = runs.filter((r) => r.session).map((r) => ({ name: r.host.name, session: r.session! }));
    const allOk = runs.every((r) => r.result && (r.result.status === 'ok' || r.result.status === 'changed')) && !leaveError;
    if (check) {
      const elsewhere = others.length ? (await vipHolders(others, v.address)).holders : [];
      report.holders = [...heldBefore, ...leavingHeld, ...elsewhere].sort();
      if (report.holders.length > 1) report.error = splitBrain(report.holders, v.address);
      else if (!report.holders.length && planned.length === runs.length && planned.some((r) => serving(r.planned!))) report.error = `no host holds the VIP ${v.address}`;
      report.ok = allOk && !report.error;
    } else if (live.length && !stopped()) {
      const changedAny = runs.some((r) => r.result?.status === 'changed');
      Object.assign(report, await proveVip(inv, live, others, changedAny ? VIP_SETTLE_MS : Math.min(VIP_SETTLE_MS, o.verifyDeadlineMs)));
      report.ok = allOk && !report.error && !!report.through?.ok;
    }
    if (leaveError && !report.error) report.error = leaveError;
    emit({
      type: 'phase-done',
      phase: 'vip',
      summary: report.error
        ? report.error
        : check
          ? heldText(report.holders ?? [], runs.filter((r) => r.planned).length, runs.length)
          : report.through
            ? `held by ${report.holders!.join(', ')}; ${report.through.summary}`
            : 'not proven (interrupted)',
    });
    return report;
  } finally {
    for (const r of runs) if (r.session) closeSession(r.session);
  }
}
