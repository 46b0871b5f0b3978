/**
 * The cluster's own view of its control plane: the `kubernetes` Service's endpoints in `default`,
 * which every kube-apiserver keeps up to date with its own address (its endpoint reconciler), read
 * as EndpointSlices (discovery.k8s.io/v1), or as the Endpoints object on clusters without them. Pure
 * parts: what the API answered, as addresses; the drift between that and the inventory's masters.
 */
import { formatHostPort } from '../util/hostport.js';

/** One apiserver the cluster names: ADDRESS:PORT as the inventory would write it, and whether it is ready. */
export interface ClusterApiserver {
  address: string;
  port: number;
  ready: boolean;
}

/** Where the EndpointSlices of the `kubernetes` Service are listed, and the Endpoints object on clusters without them. */
export const ENDPOINTSLICES_PATH = '/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dkubernetes';
export const ENDPOINTS_PATH = '/api/v1/namespaces/default/endpoints/kubernetes';

type Json = Record<string, unknown>;
const obj = (v: unknown): Json => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Json) : {});
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

/** The apiservers the EndpointSliceList's `kubernetes` slice names (port "https", else the first TCP port), each address once, ready unless it says it is not. */
export function fromEndpointSlices(list: unknown): ClusterApiserver[] {
  const out = new Map<string, ClusterApiserver>();
  for (const slice of arr(obj(list).items)) {
    const s = obj(slice);
    // The one kube-apiserver's endpoint reconciler writes; another slice with the same label is someone else's.
    if (obj(s.metadata).name !== 'kubernetes') continue;
    const ports = arr(s.ports).map(obj);
    const port = (ports.find((p) => p.name === 'https') ?? ports.find((p) => (p.protocol ?? 'TCP') === 'TCP'))?.port;
    if (typeof port !== 'number') continue;
    for (const e of arr(s.endpoints).map(obj)) {
      // conditions.ready: nil means ready (discovery.k8s.io/v1).
      const ready = obj(e.conditions).ready !== false;
      for (const a of arr(e.addresses)) if (typeof a === 'string') out.set(formatHostPort(a, port), { address: a, port, ready });
    }
  }
  return [...out.values()];
}

/** The apiservers an Endpoints object names: ready addresses, and notReadyAddresses as not ready. */
export function fromEndpoints(ep: unknown): ClusterApiserver[] {
  const out = new Map<string, ClusterApiserver>();
  for (const subset of arr(obj(ep).subsets).map(obj)) {
    const ports = arr(subset.ports).map(obj);
    const port = (ports.find((p) => p.name === 'https') ?? ports[0])?.port;
    if (typeof port !== 'number') continue;
    const add = (list: unknown, ready: boolean) => {
      for (const a of arr(list).map(obj)) if (typeof a.ip === 'string') out.set(formatHostPort(a.ip, port), { address: a.ip, port, ready });
    };
    add(subset.addresses, true);
    add(subset.notReadyAddresses, false);
  }
  return [...out.values()];
}

/** The inventory's masters against the cluster's apiservers, each list as ADDRESS:PORT. */
export interface ControlPlaneDrift {
  inventory: string[];
  cluster: string[];
  /** Masters of the inventory the cluster does not name. */
  notInCluster: string[];
  /** Apiservers the cluster names that the inventory does not list. */
  notInInventory: string[];
}

/** `resolved`: for a master named by host name, the addresses it resolves to (so cp1:6443 and 10.0.0.1:6443 are one apiserver). */
export function controlPlaneDrift(
  masters: readonly { address: string; port: number }[],
  cluster: readonly ClusterApiserver[],
  resolved?: ReadonlyMap<string, readonly string[]>,
): ControlPlaneDrift {
  const keysOf = (m: { address: string; port: number }) => [m.address, ...(resolved?.get(m.address) ?? [])].map((a) => formatHostPort(a, m.port));
  const inventory = [...new Set(masters.map((m) => formatHostPort(m.address, m.port)))];
  const named = [...new Set(cluster.map((c) => formatHostPort(c.address, c.port)))];
  const known = new Set(masters.flatMap(keysOf));
  return {
    inventory,
    cluster: named,
    notInCluster: [...new Set(masters.filter((m) => !keysOf(m).some((k) => named.includes(k))).map((m) => formatHostPort(m.address, m.port)))],
    notInInventory: named.filter((c) => !known.has(c)),
  };
}

/** In words, as `status` says it: "the cluster's control plane is A, B, D; the inventory names A, B, C (C is not in the cluster, D is not in the inventory)". */
export function describeDrift(d: ControlPlaneDrift): string {
  if (!d.notInCluster.length && !d.notInInventory.length) return `the cluster's control plane is the inventory's: ${d.inventory.join(', ')}`;
  const why = [
    ...(d.notInCluster.length ? [`${d.notInCluster.join(', ')} ${d.notInCluster.length === 1 ? 'is' : 'are'} not in the cluster`] : []),
    ...(d.notInInventory.length ? [`${d.notInInventory.join(', ')} ${d.notInInventory.length === 1 ? 'is' : 'are'} not in the inventory`] : []),
  ];
  return `the cluster's control plane is ${d.cluster.join(', ') || 'empty'}; the inventory names ${d.inventory.join(', ')} (${why.join(', ')})`;
}
