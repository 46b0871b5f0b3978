/**
 * A host taken out of vip.hosts: found in the peer lists the remaining VIP hosts' keepalived runs
 * with (k8s-ha wrote them), stopped and cleaned before any remaining host drops it as a peer.
 *
 * Why first: a host still running keepalived after the others dropped it from their unicast_peer
 * lists hears no advert any more (they send it none, and drop its own), so it claims the VIP too: a
 * split brain. Stopped first, it only leaves the others sending adverts to an address that no longer
 * answers until they roll. The hosts that do not hold the VIP leave first; the holder last, and the
 * run waits until one remaining host has taken the VIP over (keepalived's priority-0 advert on stop
 * hands it over within a second) before the remaining hosts roll to their new peer list.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Inventory } from '../inventory/schema.js';
import { VIP_HAPROXY_SERVICE, VIP_KEEPALIVED_SERVICE, VIP_PATHS } from '../lb/vip.js';
import { quote } from '../util/quote.js';
import { closeSession, openSession, readFacts, type HostJob } from './host.js';
import { LOCK_DIR } from './lock.js';
import { dialed, finishHost, type HostResult, type StepResult } from './results.js';
import { doneLines, guardedBy, STATE_DIR, stepShell } from './scripts.js';
import type { Setup } from './deploy.js';
import { holdsCommand, vipHolders, vipLabel, type VipAsk } from './vip.js';
import type { Emit } from './run.js';

export const LEAVE_STEP = 'leave the VIP';

/** The first line of every file k8s-ha writes on a VIP host: only such a keepalived.conf or haproxy.cfg is removed. */
const MANAGED = '# Managed by k8s-ha';

/** The addresses in the unicast_peer block of a keepalived.conf (the one k8s-ha writes lists one per line). */
export function keepalivedPeers(text: string | undefined): string[] {
  if (!text?.startsWith(MANAGED)) return [];
  const block = /^\s*unicast_peer\s*\{\s*$([\s\S]*?)^\s*\}\s*$/m.exec(text)?.[1] ?? '';
  return block
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => /^[0-9A-Fa-f:.]+$/.test(l));
}

export interface LeavingHost {
  /** The inventory's name for it, or its address when the inventory no longer has it. */
  name: string;
  address: string;
  /** Found among the inventory's masters or nodes: it can be reached. */
  known: boolean;
  /** A node of the inventory too: its /var/lib/k8s-ha and /run/k8s-ha belong to its balancer and stay. */
  isNode: boolean;
  ssh?: Inventory['ssh'];
}

/** Pure: peers the remaining hosts' keepalived still lists that vip.hosts no longer names. */
export function leavingHosts(inv: Inventory, peerLists: string[][], staying: { address: string }[]): LeavingHost[] {
  const keep = new Set(staying.map((h) => h.address));
  const out: LeavingHost[] = [];
  for (const address of peerLists.flat()) {
    if (keep.has(address) || out.some((h) => h.address === address)) continue;
    const m = inv.masters.find((x) => x.address === address);
    const n = inv.nodes.find((x) => x.address === address);
    const h = m ?? n;
    out.push({ name: h?.name ?? address, address, known: !!h, isNode: !!n, ...(h?.ssh ? { ssh: h.ssh } : {}) });
  }
  return out;
}

/**
 * On the leaving host: keepalived and haproxy stopped and disabled (keepalived first: the VIP is let go
 * before its frontend), then k8s-ha's files removed. Markers: @@done ITEM, @@left, @@leave-failed WHY.
 */
export function leaveScript(o: { runId: string; keepState: boolean; waitSeconds: number }): string {
  const { fail, rm } = stepShell('@@leave-failed');
  const isManaged = (f: string) => `head -n1 ${quote(f)} 2>/dev/null | grep -q ${quote(`^${MANAGED}`)}`;
  const stop = (u: string) => `if systemctl cat ${quote(u)} >/dev/null 2>&1; then out=$(systemctl disable --now ${quote(u)} 2>&1) || ${fail(`stop ${u}`)}; echo ${quote(`@@done stopped and disabled ${u}`)}; fi`;
  const lines = [
    'set -u',
    "trap '' HUP PIPE",
    // keepalived and haproxy that k8s-ha did not set up (the host's own) are not k8s-ha's to stop.
    `if ! { head -n1 ${quote(VIP_PATHS.keepalivedConfig)} 2>/dev/null | grep -q ${quote(`^${MANAGED}`)} || [ -e ${quote(VIP_PATHS.notify)} ]; }; then echo '@@not-ours'; exit 0; fi`,
    guardedBy(o.runId, { lockDir: LOCK_DIR, waitSeconds: o.waitSeconds, say: (why) => `echo ${quote(`@@leave-failed ${why}`)}` }).trimEnd(),
    // keepalived first: the VIP is let go before its frontend. haproxy only when its config is k8s-ha's.
    stop(VIP_KEEPALIVED_SERVICE),
    `if ${isManaged(VIP_PATHS.haproxyConfig)}; then ${stop(VIP_HAPROXY_SERVICE)}; fi`,
    ...[VIP_PATHS.ca, VIP_PATHS.client, VIP_PATHS.check, VIP_PATHS.notify, VIP_PATHS.state].map((f) => `if [ -e ${quote(f)} ]; then ${rm(f)}; fi`),
    ...[VIP_PATHS.keepalivedConfig, VIP_PATHS.haproxyConfig].map((f) => `if ${isManaged(f)}; then ${rm(f)}; fi`),
  ];
  // The journal's folder goes too, unless the host runs a node-local balancer of k8s-ha's. The lock's
  // folder (a tmpfs) stays: removed under a run waiting for the lock, it would let a third take it too.
  if (!o.keepState) lines.push(`out=$(rm -rf -- ${quote(STATE_DIR)} 2>&1) || ${fail(`remove ${STATE_DIR}`)}`);
  lines.push("echo '@@left'");
  return lines.join('\n') + '\n';
}

export interface LeaveOutcome {
  ok: boolean;
  /** The host's keepalived is not one k8s-ha set up: nothing was touched. */
  notOurs?: boolean;
  done: string[];
  failure?: string;
}

export function parseLeaveOutput(stdout: string, stderr = '', code?: number | null): LeaveOutcome {
  const done = doneLines(stdout);
  if (/^@@not-ours$/m.test(stdout)) return { ok: true, notOurs: true, done };
  const failure = /^@@leave-failed (.*)$/m.exec(stdout)?.[1];
  if (failure || !/^@@left$/m.test(stdout)) return { ok: false, done, failure: failure ?? (stderr.trim() || `the script ended with exit ${code ?? 'unknown'}`) };
  return { ok: true, done };
}

const leaveStep = (status: StepResult['status'], summary: string, error?: string): StepResult => ({ name: LEAVE_STEP, status, summary, ...(error ? { error } : {}) });

/**
 * Take each leaving host off the VIP, one at a time, those not holding it first; after the holder,
 * wait (up to settleMs) until one of the remaining hosts holds the VIP. `check`: say what would be done.
 */
export async function leaveVip(
  setup: Setup,
  leaving: LeavingHost[],
  remaining: VipAsk[],
  o: { runId: string; holder: string; emit: Emit; check: boolean; settleMs: number; verifyDeadlineMs: number; signal?: AbortSignal; /** false: the whole layer goes, nobody takes the VIP over. */ handover?: boolean; /** The VIP, when the inventory no longer has vip: (read from a host's keepalived.conf). */ address?: string; /** Why the hosts leave, for --check: `no longer in vip.hosts`. */ reason?: string },
): Promise<{ results: Map<string, HostResult & { heldBefore?: boolean }>; handedTo?: string; error?: string }> {
  const inv = setup.loaded.inventory;
  const v = { address: o.address ?? inv.vip?.address };
  const results = new Map<string, HostResult & { heldBefore?: boolean }>();
  const opened: { host: LeavingHost; job: HostJob; session: Awaited<ReturnType<typeof openSession>>; held: boolean; running: string[] }[] = [];
  for (const host of leaving) {
    if (!host.known) {
      const why = `${host.address} is in the VIP hosts' keepalived peers but is no host of the inventory: k8s-ha cannot reach it to stop its keepalived`;
      results.set(host.name, finishHost({ name: vipLabel(host.name), address: host.address, status: 'failed', steps: [leaveStep('failed', why, why)], error: why, hint: `stop it by hand (systemctl disable --now keepalived haproxy on ${host.address}), or list it under masters or nodes` }));
      continue;
    }
    const node = { name: vipLabel(host.name), address: host.address };
    const target = setup.targets.get(host.name) ?? setup.reach({ name: host.name, address: host.address, ...(host.ssh ? { ssh: host.ssh } : {}) }, 'former VIP host ');
    const job: HostJob = {
      inventory: inv,
      node,
      target,
      holder: o.holder,
      steps: [],
      base: { artifacts: {}, render: () => '' },
      // Who holds the VIP: asked of the address when known, else the VRRP state keepalived's notify script kept.
      extraFacts: { units: [`${VIP_KEEPALIVED_SERVICE}.service`, `${VIP_HAPROXY_SERVICE}.service`], guards: v.address ? [holdsCommand(v.address)] : [], texts: [VIP_PATHS.state, VIP_PATHS.keepalivedConfig], files: [VIP_PATHS.notify] },
      say: (phase, detail) => o.emit({ type: 'host-phase', name: node.name, phase, detail }),
    };
    const session = await openSession(job, { waitLockSeconds: (setup.options.waitLockMs ?? 0) / 1000, check: o.check, verifyDeadlineMs: o.verifyDeadlineMs, signal: o.signal });
    if (!('conn' in session)) {
      results.set(host.name, { ...session, steps: [leaveStep(session.status === 'locked' ? 'skipped' : 'failed', session.error ?? 'not reached', session.error)] });
      continue;
    }
    try {
      const facts = await readFacts(session, job);
      const running = [VIP_KEEPALIVED_SERVICE, VIP_HAPROXY_SERVICE].filter((u) => facts.units[`${u}.service`]?.unitFileState === 'enabled' || facts.units[`${u}.service`]?.activeState === 'active');
      const ours = !!facts.texts[VIP_PATHS.keepalivedConfig]?.startsWith(MANAGED) || facts.files[VIP_PATHS.notify] != null;
      if (!ours) {
        closeSession(session);
        results.set(host.name, finishHost({ name: node.name, ...dialed(target), steps: [leaveStep('ok', 'its keepalived is not one k8s-ha set up: left alone')] }));
        continue;
      }
      const held = v.address ? facts.guards[holdsCommand(v.address)] === 0 : /^MASTER\b/m.test(facts.texts[VIP_PATHS.state] ?? '');
      opened.push({ host, job, session, held, running });
    } catch (e) {
      closeSession(session);
      const why = (e as Error).message;
      results.set(host.name, finishHost({ name: node.name, ...dialed(target), status: 'failed', steps: [leaveStep('failed', why, why)], error: why }));
    }
  }
  let handedTo: string | undefined;
  let error: string | undefined;
  // One that cannot be asked may still run keepalived: stopping the others (the holder above all) could
  // hand it the VIP. None leaves until every one can.
  const unopened = [...results.values()].find((r) => r.status !== 'ok');
  if (unopened && !o.check) error = `${unopened.name} could not be reached to leave the VIP: ${unopened.error ?? unopened.status}`;
  try {
    // The hosts that do not hold the VIP first, its holder last: the VIP moves once.
    opened.sort((a, b) => Number(a.held) - Number(b.held));
    for (const x of opened) {
      const s = x.session as Exclude<typeof x.session, HostResult>;
      const base = { name: x.job.node.name, ...dialed(x.job.target), heldBefore: x.held };
      const what = `stop and disable ${x.running.length ? x.running.join(' and ') : 'keepalived and haproxy (not running)'}, then remove k8s-ha's files (${[VIP_PATHS.keepalivedConfig, VIP_PATHS.haproxyConfig, VIP_PATHS.ca, VIP_PATHS.client, VIP_PATHS.check, VIP_PATHS.notify].join(', ')})`;
      if (o.check) {
        results.set(x.host.name, finishHost({ ...base, steps: [leaveStep('changed', `${o.reason ?? 'no longer in vip.hosts'}: ${what}${x.held ? `; it holds the VIP now, which ${o.handover === false ? 'goes with it' : 'moves to a remaining host'}` : ''}`)] }));
        continue;
      }
      if (error || o.signal?.aborted) {
        results.set(x.host.name, finishHost({ ...base, status: 'skipped', steps: [leaveStep('skipped', error ? `not reached: ${error}` : 'the run was interrupted')] }));
        continue;
      }
      if (x.held && o.handover !== false && v.address && !remaining.length) {
        error = `${x.host.name} holds the VIP and no remaining VIP host runs keepalived to take it over: add the new hosts to vip.hosts and deploy first, then take ${x.host.name} out`;
        results.set(x.host.name, finishHost({ ...base, status: 'failed', steps: [leaveStep('failed', error, error)], error }));
        continue;
      }
      x.job.say('committing', 'leaving the VIP');
      let out: LeaveOutcome;
      try {
        const r = await s.conn.execAsRoot(leaveScript({ runId: o.runId, keepState: x.host.isNode, waitSeconds: 30 }), { kind: 'apply' });
        out = parseLeaveOutput(r.stdout, r.stderr, r.code);
      } catch (e) {
        out = { ok: false, done: [], failure: `${(e as Error).message.split('\n')[0]} (what the host did is unknown: run the same command again)` };
      }
      if (!out.ok) {
        error = `${x.host.name} could not leave the VIP: ${out.failure}`;
        results.set(x.host.name, finishHost({ ...base, steps: [leaveStep('failed', `${out.done.join('; ') || 'nothing done'}; then ${out.failure}`, out.failure)], error: out.failure }));
        continue;
      }
      if (out.notOurs) {
        results.set(x.host.name, finishHost({ ...base, steps: [leaveStep('ok', 'its keepalived is not one k8s-ha set up: left alone')] }));
        continue;
      }
      let summary = out.done.join('; ') || 'nothing of the VIP was left here';
      if (x.held && o.handover !== false && v.address) {
        // Its keepalived let go of the VIP on stop: one remaining host must have it before anything else changes.
        const start = Date.now();
        let seen = await vipHolders(remaining, v.address!);
        while (seen.holders.length !== 1 && Date.now() - start < o.settleMs) {
          await sleep(300);
          seen = await vipHolders(remaining, v.address!);
        }
        if (seen.holders.length === 1) {
          handedTo = seen.holders[0];
          summary += `; the VIP moved to ${handedTo} in ${((Date.now() - start) / 1000).toFixed(1)} s`;
        } else {
          error = seen.holders.length ? `${seen.holders.join(' and ')} all hold the VIP after ${x.host.name} let it go` : `no remaining host took the VIP over within ${Math.round(o.settleMs / 1000)} s of ${x.host.name} letting it go`;
        }
      }
      results.set(x.host.name, finishHost({ ...base, steps: [leaveStep('changed', summary)] }));
    }
  } finally {
    for (const x of opened) closeSession(x.session as Exclude<typeof x.session, HostResult>);
  }
  const failed = [...results.values()].find((r) => r.status === 'failed' || r.status === 'unreachable' || r.status === 'locked');
  if (!error && failed) error = `${failed.name} could not leave the VIP: ${failed.error ?? failed.status}`;
  return { results, ...(handedTo ? { handedTo } : {}), ...(error ? { error } : {}) };
}
