/**
 * `deploy --masters-from-cluster`: the master list a roll takes from the cluster, and the rules that
 * refuse an unsafe one. Pure: the inventory's masters and the apiservers the cluster names in, the
 * new list (or a refusal saying why and how to go on) out.
 *
 * Rules, each refusing the whole run before any connection:
 * - the cluster names no ready apiserver: nothing to balance to;
 * - it names none of the inventory's masters (what nodes use now): a disjoint list is more likely a
 *   wrong kubeconfig or another cluster than a whole control plane replaced at once;
 * - it names fewer than the floor: by default a majority of the inventory's masters (2 of 3, 3 of
 *   5), `--min-masters N` to choose another. A control plane halved while a roll runs is more likely
 *   an outage in progress than a decision.
 */
import { UsageError } from '../errors.js';
import { master as masterSchema, type InventoryMaster } from '../inventory/schema.js';
import { formatHostPort } from '../util/hostport.js';
import type { ClusterApiserver } from './control-plane.js';

export interface MastersFromCluster {
  masters: InventoryMaster[];
  /** ADDRESS:PORT the cluster names and the inventory does not (added), and the reverse (removed). */
  added: string[];
  removed: string[];
  kept: string[];
  floor: number;
}

/** The default floor: a majority of the masters nodes use now. */
export const defaultFloor = (current: number) => Math.floor(current / 2) + 1;

/** A name for an apiserver the inventory does not list: from its address (apiserver-10-0-0-4). */
export function masterName(address: string): string {
  return `apiserver-${address.replace(/[^A-Za-z0-9]+/g, '-').replace(/^-+|-+$/g, '')}`.slice(0, 63);
}

/**
 * `resolved`: for an inventory master named by host name, the addresses it resolves to (so
 * `cp1.example:6443` and the cluster's `10.0.0.1:6443` are one apiserver).
 */
export function mastersFromCluster(
  current: readonly InventoryMaster[],
  cluster: readonly ClusterApiserver[],
  o: { minMasters?: number; resolved?: ReadonlyMap<string, readonly string[]>; vipHosts?: readonly string[] } = {},
): MastersFromCluster {
  const floor = o.minMasters ?? defaultFloor(current.length);
  const key = (address: string, port: number) => formatHostPort(address, port);
  const keysOf = (m: InventoryMaster) => [m.address, ...(o.resolved?.get(m.address) ?? [])].map((a) => key(a, m.port));
  // A master the inventory lists that the cluster names not ready (restarting) is kept, not dropped.
  const ready = cluster.filter((c) => c.ready || current.some((m) => keysOf(m).includes(key(c.address, c.port))));
  const named = `the cluster names ${ready.length ? ready.map((c) => key(c.address, c.port)).join(', ') : 'no ready apiserver'}`;
  const fix = 'nothing was changed; edit the inventory\'s masters instead, or fix what the cluster says';
  if (!ready.length) throw new UsageError(`--masters-from-cluster: ${named}: there would be nothing to balance to`, { hint: fix });
  const masters: InventoryMaster[] = [];
  const kept: string[] = [];
  const added: string[] = [];
  for (const c of ready) {
    const k = key(c.address, c.port);
    const known = current.find((m) => keysOf(m).includes(k));
    if (known) {
      if (!masters.includes(known)) masters.push(known);
      kept.push(key(known.address, known.port));
      continue;
    }
    // From the cluster, so checked as an inventory's master is before it reaches any config or shell.
    const base = c.port === 6443 ? masterName(c.address) : `${masterName(c.address)}-${c.port}`.slice(0, 63);
    const taken = (n: string) => [...current, ...masters].some((m) => m.name === n);
    const parsed = masterSchema.safeParse({ name: taken(base) ? `${base.slice(0, 60)}-${masters.length + 1}` : base, address: c.address, port: c.port });
    if (!parsed.success) throw new UsageError(`--masters-from-cluster: the cluster names ${k}, which is no master address k8s-ha can use (${parsed.error.issues[0]?.message})`, { hint: fix });
    masters.push(parsed.data);
    added.push(k);
  }
  const removed = current.filter((m) => !masters.includes(m)).map((m) => key(m.address, m.port));
  const inventory = current.map((m) => key(m.address, m.port)).join(', ');
  if (!kept.length) {
    throw new UsageError(`--masters-from-cluster: ${named}, none of the inventory's masters (${inventory}): refusing a list with nothing in common with what nodes use now`, {
      hint: 'is the kubeconfig this cluster\'s? If the whole control plane really moved, write the new masters in the inventory',
    });
  }
  if (masters.length < floor) {
    throw new UsageError(`--masters-from-cluster: ${named}: ${masters.length} apiserver${masters.length === 1 ? '' : 's'}, fewer than the floor of ${floor} (${o.minMasters === undefined ? `a majority of the inventory's ${current.length}` : '--min-masters'})`, {
      hint: `wait for the control plane to recover, or say the smaller list is meant: --min-masters ${masters.length}`,
    });
  }
  const gone = current.filter((m) => !masters.includes(m) && o.vipHosts?.includes(m.name));
  if (gone.length) {
    throw new UsageError(`--masters-from-cluster: vip.hosts names ${gone.map((m) => m.name).join(', ')}, which the cluster no longer names`, {
      hint: 'take it out of vip.hosts (and stop its keepalived) first, or keep it in the inventory\'s masters',
    });
  }
  return { masters, added, removed, kept, floor };
}
