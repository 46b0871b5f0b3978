/**
 * Which apiservers a node reaches: each master directly from the node, and
 * through the node's own local port. Connections through the local port are
 * told apart by the certificate that answers (its SHA-256 fingerprint, as seen
 * directly), so this works even when every apiserver certificate has one CN.
 */
import fs from 'node:fs';
import tls from 'node:tls';
import { httpsGet, type HttpsProbeOptions } from '../connect/https-probe.js';
import type { SshConnection } from '../connect/ssh.js';
import type { Inventory } from '../inventory/schema.js';
import { hostPortOf } from '../util/hostport.js';

export interface MasterReach {
  name: string;
  address: string;
  port: number;
  /** GET /readyz straight from the node to this master. */
  direct: { status?: number; error?: string };
  /** Connections through the local port that this master answered with 200. */
  viaLocal: number;
}

export interface LocalReach {
  listening: boolean;
  attempts: number;
  /** Answered with 200 by some apiserver. */
  ok: number;
  /** Answered by a certificate that no master of the inventory presents (an old backend?). */
  unknown: number;
  errors: string[];
}

export interface Reach {
  masters: MasterReach[];
  local: LocalReach;
}


// One TLS context per inventory: the CA and client certificate are read and parsed once, not per connection.
const contexts = new WeakMap<Inventory, { secureContext: tls.SecureContext; verify: boolean }>();

export function tlsOptions(inv: Inventory, servername: string): Omit<HttpsProbeOptions, 'path'> {
  let c = contexts.get(inv);
  if (!c) {
    const t = inv.tls;
    const ca = t.caFile ? fs.readFileSync(t.caFile) : undefined;
    const secureContext = tls.createSecureContext({
      ca,
      cert: t.clientCertFile ? fs.readFileSync(t.clientCertFile) : undefined,
      key: t.clientKeyFile ? fs.readFileSync(t.clientKeyFile) : undefined,
    });
    c = { secureContext, verify: !!ca && !t.insecureSkipVerify };
    contexts.set(inv, c);
  }
  return { secureContext: c.secureContext, servername, insecureSkipVerify: !c.verify, timeoutMs: 3000 };
}

const short = (e: unknown) => (e as Error).message.split('\n')[0]!.slice(0, 160);

export async function probeReach(conn: SshConnection, inv: Inventory, timeoutMs = 3000): Promise<Reach> {
  // Direct and local probes run at once; local answers are matched to masters afterwards.
  const { host, port } = hostPortOf(inv.lb.listen);
  // As many connections as masters: least_conn gives each to the backend with the fewest and breaks
  // ties round-robin (as round_robin does anyway), so each backend nginx would use answers one.
  const attempts = Math.max(2, inv.masters.length);
  const local: LocalReach = { listening: false, attempts, ok: 0, unknown: 0, errors: [] };
  const [direct, answers] = await Promise.all([
    Promise.all(
      inv.masters.map(async (m) => {
        try {
          const r = await httpsGet(() => conn.connectFromHost(m.address, m.port), { path: '/readyz', ...tlsOptions(inv, inv.tls.serverName ?? m.address), timeoutMs });
          return { m, status: r.status, fingerprint: r.fingerprint };
        } catch (e) {
          return { m, error: short(e) };
        }
      }),
    ),
    Promise.all(
      Array.from({ length: attempts }, async () => {
        try {
          return await httpsGet(() => conn.connectFromHost(host, port), { path: '/readyz', ...tlsOptions(inv, inv.tls.serverName ?? host), timeoutMs });
        } catch (e) {
          return { error: short(e) };
        }
      }),
    ),
  ]);
  const fingerprints = new Map<string, string>();
  const masters: MasterReach[] = direct.map((d) => {
    if ('fingerprint' in d && d.fingerprint) fingerprints.set(d.fingerprint, d.m.name);
    return { name: d.m.name, address: d.m.address, port: d.m.port, direct: 'error' in d ? { error: d.error } : { status: d.status }, viaLocal: 0 };
  });
  for (const a of answers) {
    if ('error' in a && a.error !== undefined) {
      if (!/refused/i.test(a.error)) local.listening = true;
      local.errors.push(a.error);
      continue;
    }
    const r = a as Awaited<ReturnType<typeof httpsGet>>;
    local.listening = true;
    const who = r.fingerprint ? fingerprints.get(r.fingerprint) : undefined;
    if (!who) local.unknown++;
    if (r.status === 200) {
      local.ok++;
      const m = masters.find((x) => x.name === who);
      if (m) m.viaLocal++;
    } else {
      local.errors.push(`HTTP ${r.status} from ${who ?? 'an unknown backend'}`);
    }
  }
  return { masters, local };
}
