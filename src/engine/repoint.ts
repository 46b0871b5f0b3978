/**
 * --repoint-kubeconfigs, done like a roll: kubelet and kube-proxy move to the node's balancer only
 * once that balancer is verified, in batches of --serial; the rewritten kubeconfig names the same
 * server (tls-server-name) that verify checked; the restarted services must be active (running)
 * with a connection established to the local port, else the kubeconfig it replaced is put back and
 * the service restarted again. Kubeconfigs are compared on the node: their keys never leave it, and
 * once verified no copy of them (this run's backup, or an earlier version's *.k8s-ha-orig) stays.
 */
import type { SshConnection } from '../connect/ssh.js';
import type { HostFacts } from '../facts/host.js';
import type { Inventory, InventoryNode } from '../inventory/schema.js';
import { formatHostPort } from '../util/hostport.js';
import { deadlineOf } from '../connect/deadlines.js';
import { isOriginName, isServerUrl, ORIGINS_FILE, parseRepointOutput, planRepoint, repointScript, serverUrl, type Repoint } from '../ops/kubeconfig.js';
import { quote } from '../util/quote.js';
import { LOCK_DIR } from './lock.js';
import { guardedBy } from './scripts.js';

export const REPOINT_STEP = 'repoint kubeconfigs';

/** How long a restarted kubelet or kube-proxy has to run and connect through the local port, unless --repoint-timeout says. */
export const REPOINT_TIMEOUT_S = 30;

export interface RepointPlan {
  changes: Repoint[];
  summary: string;
  /** ADDRESS:PORT the kubeconfigs point at: the node's balancer, or a master's apiserver (nodes[].repointTo). */
  to: string;
  /** That, in words. */
  toWhat: string;
}

/** Where a node's kubeconfigs go: its balancer, or the apiserver of the master nodes[].repointTo names. */
export function repointTarget(inv: Inventory, node: Pick<InventoryNode, 'repointTo'>): { to: string; toWhat: string } {
  const m = node.repointTo && node.repointTo !== 'balancer' ? inv.masters.find((x) => x.name === node.repointTo) : undefined;
  if (m) return { to: formatHostPort(m.address, m.port), toWhat: `${m.name}'s apiserver` };
  return { to: inv.lb.listen, toWhat: 'the local balancer' };
}

export function describeRepoint(r: Repoint): string {
  return `${r.path}: ${r.why}${r.service ? ` (restart ${r.service})` : ''}`;
}

export function planRepointFor(inv: Inventory, facts: HostFacts, node: Pick<InventoryNode, 'repointTo'> = {}): RepointPlan {
  const { to, toWhat } = repointTarget(inv, node);
  const balancer = serverUrl(inv.lb.listen);
  // Moved onto the balancer from elsewhere: where from is kept on the node, for `k8s-ha remove` to point it back.
  const changes = planRepoint(inv.kubeconfigs, to, facts, inv.tls.serverName).map((c) => {
    const name = facts.kubeconfigs?.[c.path]?.tlsServerNames[0] ?? '';
    // A value remove could not put back as it was is not kept: remove then asks for --repoint-to.
    return !c.forgetOnly && c.to === balancer && c.from !== balancer && isServerUrl(c.from) && isOriginName(name) ? { ...c, record: { server: c.from, tlsServerName: name } } : c;
  });
  return {
    changes,
    summary: changes.length ? changes.map(describeRepoint).join('; ') : `every kubeconfig present already points at ${toWhat}`,
    to,
    toWhat,
  };
}

export async function repointHost(conn: SshConnection, plan: RepointPlan, inv: Inventory, runId: string, timeoutS = REPOINT_TIMEOUT_S): Promise<{ ok: boolean; detail: string }> {
  // Behind any other k8s-ha script on the node, and only while this run still holds its lock.
  const guard = guardedBy(runId, { lockDir: LOCK_DIR, waitSeconds: deadlineOf('repoint', conn.target.deadlines) / 4000, say: (why) => `echo ${quote(`@@repoint-failed ${why}`)}` });
  const r = await conn.execAsRoot(guard + repointScript(plan.changes, { listen: plan.to, timeoutS, runId }), { kind: 'repoint' });
  const out = parseRepointOutput(r.stdout);
  if (out.ok) {
    const services = [...new Set(plan.changes.map((c) => c.service).filter(Boolean))];
    const through = plan.to === inv.lb.listen ? `through ${plan.to}` : `to ${plan.toWhat} (${plan.to})`;
    const unrecorded = out.unrecorded?.length ? `; where ${out.unrecorded.join(', ')} pointed before could not be kept in ${ORIGINS_FILE} (k8s-ha remove will need --repoint-to)` : '';
    return { ok: true, detail: `${plan.summary}${services.length ? `; ${services.join(', ')} active (running) and connected ${through}` : ''}${unrecorded}` };
  }
  const why = out.failure ?? (r.stderr.trim() || `exit ${r.code}`);
  const restored = out.restored ? 'the kubeconfig this run replaced is back and the service restarted on it' : `the kubeconfig this run replaced could NOT be restored: ${out.restoreFailure ?? 'unknown'}`;
  return { ok: false, detail: `${why}; ${restored}` };
}
