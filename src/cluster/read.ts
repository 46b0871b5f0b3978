/**
 * Ask the cluster which apiservers it has: the `kubernetes` Service's EndpointSlices in `default`
 * (the Endpoints object on clusters without them), with a kubeconfig's credentials and CA, from this
 * machine. The kubeconfig's own server is not dialed (a node's often names 127.0.0.1:8443); the
 * inventory's masters are, in turn, until one answers. What went wrong is said as the user would fix
 * it: no such object, forbidden (and for whom), or no master answering (each one's reason).
 */
import dns from 'node:dns/promises';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { httpsGet, type HttpsProbeResult } from '../connect/https-probe.js';
import { K8sHaError, UsageError } from '../errors.js';
import { formatHostPort } from '../util/hostport.js';
import { kubeconfigProblem } from '../inventory/local-files.js';
import type { Inventory } from '../inventory/schema.js';
import { controlPlaneDrift, ENDPOINTS_PATH, ENDPOINTSLICES_PATH, fromEndpoints, fromEndpointSlices, type ClusterApiserver, type ControlPlaneDrift } from './control-plane.js';
import { credentialsOf, type ClusterCredentials } from './kubeconfig-client.js';
import { mastersFromCluster, type MastersFromCluster } from './masters.js';

export interface ControlPlaneView {
  /** The master that answered, by its inventory name. */
  via: string;
  /** What was read: EndpointSlices, or the Endpoints object of a cluster without them. */
  source: 'EndpointSlices' | 'Endpoints';
  apiservers: ClusterApiserver[];
}

/** The cluster refused the credentials (401) or the list (403): exit 2, the fix is the kubeconfig or RBAC. */
export class ClusterAccessError extends UsageError {}

/** No inventory master answered: exit 3, as for unreachable hosts. */
export class ClusterUnreachableError extends K8sHaError {
  override readonly exitCode = 3;
}

export interface ReadOptions {
  /** Each master's deadline; default 5 s. */
  timeoutMs?: number;
  /** Inventory tls.serverName: the name the apiservers' certificates are checked against, unless the kubeconfig names one. */
  serverName?: string;
}

/** A Kubernetes Status's message, else the start of the body. */
function statusMessage(body: string): string {
  // An apiserver's words, fit for a line: no control characters, at most 300 characters.
  const fit = (t: string) => t.replace(/[\x00-\x1f\x7f-\x9f]/g, ' ').slice(0, 300);
  try {
    const m = (JSON.parse(body) as { message?: unknown } | null)?.message;
    if (typeof m === 'string' && m) return fit(m);
  } catch {
    // not JSON
  }
  return fit(body.trim().split('\n')[0] ?? '') || '(no body)';
}

export async function readControlPlane(creds: ClusterCredentials, masters: readonly { name: string; address: string; port: number }[], o: ReadOptions = {}): Promise<ControlPlaneView> {
  const failures: string[] = [];
  for (const m of masters) {
    const get = (path: string): Promise<HttpsProbeResult> =>
      httpsGet(
        { address: m.address, port: m.port },
        {
          path,
          ca: creds.ca,
          cert: creds.cert,
          key: creds.key,
          servername: creds.tlsServerName ?? o.serverName ?? m.address,
          timeoutMs: o.timeoutMs ?? 5000,
          headers: { accept: 'application/json', ...(creds.token ? { authorization: `Bearer ${creds.token}` } : {}) },
        },
      );
    const where = `${m.name} (${formatHostPort(m.address, m.port)})`;
    let r: HttpsProbeResult;
    try {
      r = await get(ENDPOINTSLICES_PATH);
      // A cluster without discovery.k8s.io/v1 (before 1.21): the Endpoints object.
      if (r.status === 404) {
        const e = await get(ENDPOINTS_PATH);
        if (e.status === 200) return { via: m.name, source: 'Endpoints', apiservers: fromEndpoints(JSON.parse(e.body)) };
        if (e.status === 404) throw new UsageError(`${where} has neither EndpointSlices of the kubernetes Service nor its Endpoints object in default`, { hint: 'is the kubeconfig this cluster\'s, and the inventory\'s masters its apiservers?' });
        r = e;
      }
    } catch (e) {
      if (e instanceof UsageError) throw e;
      failures.push(`${where}: ${(e as Error).message}`);
      continue;
    }
    if (r.status === 200) {
      let list: unknown;
      try {
        list = JSON.parse(r.body);
      } catch {
        failures.push(`${where}: answered 200 with a body that is not JSON`);
        continue;
      }
      return { via: m.name, source: 'EndpointSlices', apiservers: fromEndpointSlices(list) };
    }
    const message = statusMessage(r.body);
    if (r.status === 401) {
      throw new ClusterAccessError(`${where} did not accept ${creds.file}'s credentials (401 Unauthorized: ${message})`, { hint: 'use a kubeconfig of this cluster with a valid client certificate or token' });
    }
    if (r.status === 403) {
      throw new ClusterAccessError(`${where} refused the list (403 Forbidden: ${message})`, {
        hint: 'use credentials allowed to list endpointslices (discovery.k8s.io) in default, as kube-proxy\'s are (system:node-proxier), or an admin\'s',
      });
    }
    failures.push(`${where}: answered ${r.status}: ${message}`);
  }
  throw new ClusterUnreachableError(`no master answered for the cluster's control plane:\n${failures.map((f) => `  ${f}`).join('\n')}`, {
    hint: 'the masters\' API port must be reachable from this machine, and the kubeconfig\'s CA must be the one that signed their certificates',
  });
}

/** For masters named by host name: the addresses each resolves to here (at most 3 s), to match the cluster's addresses. */
export async function resolveMasters(masters: readonly { address: string }[]): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  await Promise.all(
    masters
      .filter((m) => net.isIP(m.address) === 0)
      .map(async (m) => {
        const found = await Promise.race([dns.lookup(m.address, { all: true }).then((a) => a.map((x) => x.address), () => []), new Promise<string[]>((r) => setTimeout(() => r([]), 3000).unref())]);
        out.set(m.address, found);
      }),
  );
  return out;
}

/** The kubeconfig to ask the cluster with: `--kubeconfig` (checked here, before any connection), else the inventory's cluster.kubeconfig. */
export async function clusterKubeconfig(inv: Inventory, flag?: string): Promise<ClusterCredentials | undefined> {
  if (flag) {
    const file = path.resolve(flag);
    const problem = await kubeconfigProblem(file);
    if (problem) throw new UsageError(`--kubeconfig: ${problem}`);
    return credentialsOf(await fs.readFile(file, 'utf8'), file);
  }
  if (!inv.cluster) return undefined;
  // Checked at load (local-files.ts): read again here for the credentials themselves.
  return credentialsOf(await fs.readFile(inv.cluster.kubeconfig, 'utf8'), inv.cluster.kubeconfig);
}

/** What `status` says of the control plane: the drift and where it was read, or why it could not be. */
export type ControlPlaneStatus =
  | (ControlPlaneDrift & { kubeconfig: string; via: string; source: ControlPlaneView['source']; notReady: string[] })
  | { kubeconfig: string; error: string; hint?: string };

export async function controlPlaneStatus(inv: Inventory, creds: ClusterCredentials): Promise<ControlPlaneStatus> {
  try {
    const [view, resolved] = await Promise.all([readControlPlane(creds, inv.masters, { serverName: inv.tls.serverName }), resolveMasters(inv.masters)]);
    return {
      kubeconfig: creds.file,
      via: view.via,
      source: view.source,
      ...controlPlaneDrift(inv.masters, view.apiservers, resolved),
      notReady: view.apiservers.filter((a) => !a.ready).map((a) => formatHostPort(a.address, a.port)),
    };
  } catch (e) {
    return { kubeconfig: creds.file, error: (e as Error).message, ...((e as K8sHaError).hint ? { hint: (e as K8sHaError).hint } : {}) };
  }
}

/** What `deploy --masters-from-cluster` took from the cluster: said before the run, and in its report. */
export interface MastersChange extends Omit<MastersFromCluster, 'masters'> {
  kubeconfig: string;
  via: string;
  source: ControlPlaneView['source'];
  /** The inventory's masters, and the list this run uses, as ADDRESS:PORT. */
  inventory: string[];
  cluster: string[];
  /** The names this run gives the apiservers the inventory does not list, by ADDRESS:PORT. */
  names: Record<string, string>;
}

/**
 * `deploy --masters-from-cluster`: the inventory with the cluster's master list, and what changed. Refuses
 * (exit 2) without a kubeconfig, and any list masters.ts calls unsafe; exit 3 when no master answers.
 */
export async function takeMastersFromCluster(inv: Inventory, o: { kubeconfig?: string; minMasters?: number; inventoryFile: string }): Promise<{ inventory: Inventory; change: MastersChange }> {
  const creds = await clusterKubeconfig(inv, o.kubeconfig);
  if (!creds) {
    throw new UsageError(`--masters-from-cluster needs a kubeconfig to ask the cluster with, and ${o.inventoryFile} names none`, {
      hint: "add cluster: {kubeconfig: FILE} to the inventory, or give --kubeconfig FILE (kube-proxy's or an admin's)",
    });
  }
  if (o.minMasters !== undefined && o.minMasters > inv.masters.length + 16) throw new UsageError(`--min-masters ${o.minMasters} is more apiservers than any control plane has`, { hint: 'give the fewest apiservers the roll may leave nodes with' });
  const [view, resolved] = await Promise.all([readControlPlane(creds, inv.masters, { serverName: inv.tls.serverName }), resolveMasters(inv.masters)]);
  const plan = mastersFromCluster(inv.masters, view.apiservers, { minMasters: o.minMasters, resolved, vipHosts: inv.vip?.hosts });
  const { masters, ...rest } = plan;
  return {
    inventory: { ...inv, masters },
    change: {
      ...rest,
      kubeconfig: creds.file,
      via: view.via,
      source: view.source,
      inventory: inv.masters.map((m) => formatHostPort(m.address, m.port)),
      cluster: masters.map((m) => formatHostPort(m.address, m.port)),
      names: Object.fromEntries(masters.filter((m) => !inv.masters.includes(m)).map((m) => [formatHostPort(m.address, m.port), m.name])),
    },
  };
}

/** The change in words, said before the run: what is added and removed, or that the lists agree. */
export function describeMastersChange(c: MastersChange): string[] {
  const head = `masters from the cluster (${c.source} of the kubernetes Service, via ${c.via}, with ${c.kubeconfig}):`;
  if (!c.added.length && !c.removed.length) return [`${head} the inventory's, ${c.inventory.join(', ')}: nothing to change from it`];
  return [
    `${head} ${c.cluster.join(', ')} (floor ${c.floor})`,
    ...c.added.map((a) => `  + ${a} (not in the inventory; named ${c.names[a]} in this run)`),
    ...c.removed.map((r) => `  - ${r} (the cluster no longer names it)`),
    `  the inventory still names ${c.inventory.join(', ')}: update it to match once this run is done`,
  ];
}
