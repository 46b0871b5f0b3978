/** What a deploy did on each host, and the recap totals. */
import { formatHop } from '../connect/proxy-jump.js';
import type { SshTarget } from '../connect/ssh.js';

export type StepStatus = 'ok' | 'changed' | 'failed' | 'skipped';
/**
 * `skipped`: a roll stopped (or the run was interrupted) before reaching this host; it still runs
 * what it ran before. `locked`: another run holds the host's lock; this run did not touch it.
 */
export type HostStatus = 'ok' | 'changed' | 'failed' | 'unreachable' | 'skipped' | 'locked';

export interface StepResult {
  name: string;
  status: StepStatus;
  /** What the step did, or why it did nothing. */
  summary: string;
  error?: string;
}

export interface HostResult {
  name: string;
  /** The address dialed (the inventory's, or ssh_config's HostName). */
  address: string;
  /** The bastion(s) it was reached through, nearest last: `root@10.0.0.5`. */
  via?: string;
  status: HostStatus;
  ok: number;
  changed: number;
  failed: number;
  steps: StepResult[];
  /** Why the host failed or was unreachable, and what to do. */
  error?: string;
  hint?: string;
  /** The last lines of the service's journal, when it failed. */
  journal?: string;
  /** The end-to-end check: which apiserver answered through the local port. */
  verified?: { state: string; status: number; backend?: string };
  /** Milliseconds spent in each phase on this host: connect, facts, apply, verify. */
  timings?: Record<string, number>;
  /** True when live files had been replaced before the failure (so a roll puts them back). */
  committed?: boolean;
  /** For a rolled host that failed: what putting the previous files back did. */
  rollback?: { ok: boolean; detail: string };
  /** In a roll: the batch this host was in (1-based), or why it was not reached. */
  batch?: number;
  /** The balancer was applied and verified; a later step (repointing kubeconfigs) failed. */
  lbVerified?: boolean;
  /** What this run did about an unfinished earlier run found on the host (its journal). */
  recovered?: string;
  /** `user@controller (pid N) since ...` when another run holds the host's lock. */
  lockedBy?: string;
}

export interface Totals {
  ok: number;
  changed: number;
  failed: number;
  unreachable: number;
  skipped: number;
  locked: number;
}

export function hostStatus(r: Pick<HostResult, 'steps'>): HostStatus {
  if (r.steps.some((s) => s.status === 'failed')) return 'failed';
  return r.steps.some((s) => s.status === 'changed') ? 'changed' : 'ok';
}

export function finishHost(r: Omit<HostResult, 'ok' | 'changed' | 'failed' | 'status'> & { status?: HostStatus }): HostResult {
  const count = (st: StepStatus) => r.steps.filter((s) => s.status === st).length;
  return { ...r, status: r.status ?? hostStatus(r), ok: count('ok'), changed: count('changed'), failed: count('failed') };
}

/** Hosts counted by outcome: ok (nothing changed), changed, failed, unreachable. */
export function totals(hosts: HostResult[]): Totals {
  const t: Totals = { ok: 0, changed: 0, failed: 0, unreachable: 0, skipped: 0, locked: 0 };
  for (const h of hosts) t[h.status]++;
  return t;
}

/** How a host is reached, for reports: the address dialed and the bastions in front of it, first hop first. */
export function dialed(target: SshTarget): { address: string; via?: string } {
  const hops: string[] = [];
  for (let j = target.jump; j; j = j.jump) hops.unshift(formatHop({ user: j.user, host: j.address, port: j.port }));
  return hops.length ? { address: target.address, via: hops.join(' > ') } : { address: target.address };
}
