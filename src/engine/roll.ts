/**
 * The rolling part of a deploy, as pure functions. Hosts whose change would restart, reload or
 * replace a balancer that is serving now go in batches of --serial: each keeps its live files as
 * backups, swaps, and must then answer through its local port from the new master list; a failed
 * host is put back. More failures than --max-fail-percent allows stop the roll. Hosts with
 * nothing running yet (first install) or nothing to do go at once.
 */
import { UsageError } from '../errors.js';
import { disturbsRunningService } from './plan.js';
import type { PlannedHost } from './host.js';
import type { HostResult } from './results.js';

export const DEFAULT_SERIAL = '25%';

export type Serial = { count: number } | { percent: number };

export function parseSerial(text: string): Serial {
  const m = /^(\d+)(%?)$/.exec(text.trim());
  const n = m ? Number(m[1]) : NaN;
  if (!m || n < 1 || (m[2] && n > 100)) {
    throw new UsageError(`--serial must be a number of nodes (e.g. 2) or a percentage from 1% to 100%, got "${text}"`, {
      hint: `the default is ${DEFAULT_SERIAL}; --serial 100% rolls every node at once`,
    });
  }
  return m[2] ? { percent: n } : { count: n };
}

/** Nodes per batch: a percentage rounds up, never below one. */
export function batchSize(serial: Serial, total: number): number {
  if ('count' in serial) return Math.max(1, Math.min(serial.count, total));
  return Math.max(1, Math.ceil((total * serial.percent) / 100));
}

export function chunk<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/** How many failed hosts a roll of `total` tolerates before it stops. */
export function failLimit(maxFailPercent: number, total: number): number {
  return Math.floor((total * maxFailPercent) / 100);
}

export interface RollPlan<H> {
  /** Changes that disturb no running service, and hosts with nothing to do: all at once (still at most --concurrency at a time). */
  immediate: H[];
  batches: H[][];
  failLimit: number;
}

export function planRoll<H extends Pick<PlannedHost, 'plan' | 'unit'>>(planned: H[], serial: Serial, maxFailPercent: number): RollPlan<H> {
  const rolling = planned.filter((p) => disturbsRunningService(p.plan, p.unit));
  const immediate = planned.filter((p) => !rolling.includes(p));
  return { immediate, batches: chunk(rolling, batchSize(serial, rolling.length)), failLimit: failLimit(maxFailPercent, rolling.length) };
}

export function failed(r: HostResult): boolean {
  return r.status === 'failed' || r.status === 'unreachable';
}

/**
 * Which configuration a host runs after a deploy: `new` when it was applied and verified,
 * `previous` when nothing was replaced (or it was put back), `unknown` when a
 * replacement could not be verified nor undone.
 */
export function configState(r: HostResult): 'new' | 'previous' | 'unknown' {
  if (!failed(r)) return r.status === 'skipped' || r.status === 'locked' ? 'previous' : 'new';
  if (r.lbVerified) return 'new';
  if (!r.committed) return 'previous';
  return r.rollback?.ok ? 'previous' : 'unknown';
}
