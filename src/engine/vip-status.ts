/**
 * `k8s-ha status` for the VIP layer: on each VIP host, whether it holds the VIP, its VRRP state
 * (as keepalived's notify recorded it), haproxy and keepalived as systemd sees them, and
 * haproxy's own view of every master (its stats page, read on the host's loopback). Then the
 * verdict an operator needs: exactly one holder, none (an outage) or several (a split brain).
 */
import { SshConnection } from '../connect/ssh.js';
import type { Inventory, VipHost } from '../inventory/schema.js';
import { emptyRequest, factScript, parseFacts, serviceState, type FactRequest } from '../facts/host.js';
import { VIP_BACKEND, VIP_HAPROXY_SERVICE, VIP_KEEPALIVED_SERVICE, VIP_PATHS } from '../lb/vip.js';
import { mapLimit } from '../util/pool.js';
import type { SshTarget } from '../connect/ssh.js';
import { dialed } from './results.js';
import { httpGetOnHost } from './verify.js';
import { holdsCommand, splitBrain } from './vip.js';

export interface VipBackendStatus {
  name: string;
  /** haproxy's word: UP, DOWN, `UP 1/2` (turning), MAINT, no check... */
  status: string;
  /** Sessions open to it now. */
  sessions: number;
  /** The last check's outcome, e.g. `L7OK/200 in 3ms`, `L4CON`. */
  check?: string;
}

export interface VipHostStatus {
  name: string;
  address: string;
  via?: string;
  reachable: boolean;
  error?: string;
  holds?: boolean;
  /** MASTER, BACKUP, FAULT, STOP: the last state keepalived announced, and when. */
  vrrp?: string;
  vrrpSince?: string;
  haproxy?: string;
  keepalived?: string;
  backends: VipBackendStatus[];
  /** Why haproxy's view could not be read. */
  statsError?: string;
}

export interface VipStatus {
  address: string;
  port: number;
  hosts: VipHostStatus[];
  holders: string[];
  /** A split brain, no holder, or a VIP host that cannot be asked: what is wrong, in a line. */
  problem?: string;
}

/** haproxy's CSV stats: the servers of the masters' backend. */
export function parseHaproxyCsv(csv: string, backend = VIP_BACKEND): VipBackendStatus[] {
  const lines = csv.split('\n').filter((l) => l.trim());
  const header = lines[0]?.replace(/^#\s*/, '').split(',') ?? [];
  const col = (name: string) => header.indexOf(name);
  const [px, sv, scur, status, check, desc, code] = [col('pxname'), col('svname'), col('scur'), col('status'), col('check_status'), col('check_desc'), col('check_code')];
  if (px < 0 || sv < 0) return [];
  const out: VipBackendStatus[] = [];
  for (const line of lines.slice(1)) {
    const f = line.split(',');
    if (f[px] !== backend || f[sv] === 'BACKEND' || f[sv] === 'FRONTEND') continue;
    // The HTTP status a failed check got (L7STS): 401 is an apiserver refusing anonymous /readyz.
    const c = `${f[check] ?? ''}${f[check] === 'L7STS' && f[code] ? ` ${f[code]}` : ''}`;
    out.push({ name: f[sv]!, status: f[status] ?? '?', sessions: Number(f[scur] ?? 0), check: c ? `${c}${f[desc] ? ` (${f[desc]})` : ''}` : undefined });
  }
  return out;
}

/** haproxy's stats page as CSV, read on the host's loopback; throws with the reason when it does not answer 200. */
async function statsCsv(conn: SshConnection, statsListen: string): Promise<string> {
  const r = await httpGetOnHost(conn, statsListen, '/stats;csv', 3000);
  if (r.status === 200) return r.body;
  throw new Error(r.status ? `haproxy's stats answered ${r.status}` : `haproxy's stats did not answer: ${r.body}`);
}

async function hostStatus(inv: Inventory, host: VipHost, target: SshTarget): Promise<VipHostStatus> {
  const v = inv.vip!;
  const base = { name: host.name, ...dialed(target), backends: [] as VipBackendStatus[] };
  let conn: SshConnection;
  try {
    conn = await SshConnection.open(target);
  } catch (e) {
    return { ...base, reachable: false, error: (e as Error).message };
  }
  try {
    // The facts script deploy reads: the units, whether this host has the VIP, and the VRRP state file.
    const req: FactRequest = { ...emptyRequest(), units: [VIP_HAPROXY_SERVICE, VIP_KEEPALIVED_SERVICE], guards: [holdsCommand(v.address)], texts: [VIP_PATHS.state] };
    const [r, csv] = await Promise.all([
      conn.execAsRoot(factScript(req), { kind: 'facts' }),
      statsCsv(conn, v.statsListen).then(
        (text) => ({ text }),
        (e: Error) => ({ error: e.message.split('\n')[0] }),
      ),
    ]);
    const facts = parseFacts(req, r.stdout);
    const [vrrp, since] = (facts.texts[VIP_PATHS.state] ?? '').trim().split(/\s+/);
    return {
      ...base,
      reachable: true,
      holds: facts.guards[holdsCommand(v.address)] === 0,
      vrrp: vrrp || undefined,
      vrrpSince: since || undefined,
      haproxy: serviceState(facts.units[VIP_HAPROXY_SERVICE]),
      keepalived: serviceState(facts.units[VIP_KEEPALIVED_SERVICE]),
      backends: 'text' in csv ? parseHaproxyCsv(csv.text) : [],
      statsError: 'error' in csv ? csv.error : undefined,
    };
  } catch (e) {
    return { ...base, reachable: false, error: (e as Error).message };
  } finally {
    conn.close();
  }
}

/**
 * The verdict on a set of VIP host states: one holder is right; none, several, or a host that could
 * not be asked (down, or holding the VIP too for all anyone knows) are problems.
 */
export function vipProblem(hosts: Pick<VipHostStatus, 'name' | 'reachable' | 'holds'>[], address: string): string | undefined {
  const holders = hosts.filter((h) => h.holds).map((h) => h.name);
  const silent = hosts.filter((h) => !h.reachable).map((h) => h.name);
  if (holders.length > 1) return splitBrain(holders, address);
  if (!holders.length) return silent.length ? `no reachable host holds the VIP ${address} (${silent.join(', ')} could not be asked)` : `no host holds the VIP ${address}: clients outside the nodes cannot reach the apiservers`;
  if (silent.length) return `${silent.join(', ')} could not be asked: the VIP has ${silent.length === 1 ? 'one host' : 'hosts'} fewer to move to (held by ${holders[0]})`;
  return undefined;
}

export async function vipStatus(inv: Inventory, hosts: VipHost[], targets: Map<string, SshTarget>, concurrency: number): Promise<VipStatus | undefined> {
  const v = inv.vip;
  if (!v || !hosts.length) return undefined;
  const states = await mapLimit(hosts, concurrency, (h) => hostStatus(inv, h, targets.get(h.name)!));
  return { address: v.address, port: v.port, hosts: states, holders: states.filter((h) => h.holds).map((h) => h.name), problem: vipProblem(states, v.address) };
}
