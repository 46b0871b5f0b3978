/**
 * Which apiservers a node reaches: each master directly from the node, and
 * through the node's own local port. Connections through the local port are
 * told apart by the certificate that answers (its SHA-256 fingerprint, as seen
 * directly), so this works even when every apiserver certificate has one CN.
 */
import fs from 'node:fs';
import { httpsGet, type HttpsProbeOptions } from '../connect/https-probe.js';
import type { SshConnection } from '../connect/ssh.js';
import type { Inventory } from '../inventory/schema.js';

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

export function splitListen(listen: string): { host: string; port: number } {
  const m = /^\[?(.+?)\]?:(\d+)$/.exec(listen)!;
  return { host: m[1]!, port: Number(m[2]) };
}

export function tlsOptions(inv: Inventory, servername: string): Omit<HttpsProbeOptions, 'path'> {
  const t = inv.tls;
  const ca = t.caFile ? fs.readFileSync(t.caFile) : undefined;
  return {
    ca,
    servername,
    insecureSkipVerify: t.insecureSkipVerify || !ca,
    cert: t.clientCertFile ? fs.readFileSync(t.clientCertFile) : undefined,
    key: t.clientKeyFile ? fs.readFileSync(t.clientKeyFile) : undefined,
    timeoutMs: 3000,
  };
}

const short = (e: unknown) => (e as Error).message.split('\n')[0]!.slice(0, 160);

export async function probeReach(conn: SshConnection, inv: Inventory): Promise<Reach> {
  const fingerprints = new Map<string, string>();
  const masters: MasterReach[] = await Promise.all(
    inv.masters.map(async (m) => {
      try {
        const r = await httpsGet(() => conn.connectFromHost(m.address, m.port), { path: '/readyz', ...tlsOptions(inv, inv.tls.serverName ?? m.address) });
        if (r.fingerprint) fingerprints.set(r.fingerprint, m.name);
        return { name: m.name, address: m.address, port: m.port, direct: { status: r.status }, viaLocal: 0 };
      } catch (e) {
        return { name: m.name, address: m.address, port: m.port, direct: { error: short(e) }, viaLocal: 0 };
      }
    }),
  );
  // Enough concurrent connections that least_conn and round_robin reach every backend they would use.
  const { host, port } = splitListen(inv.lb.listen);
  const attempts = Math.max(4, 2 * inv.masters.length);
  const local: LocalReach = { listening: false, attempts, ok: 0, unknown: 0, errors: [] };
  await Promise.all(
    Array.from({ length: attempts }, async () => {
      try {
        const r = await httpsGet(() => conn.connectFromHost(host, port), { path: '/readyz', ...tlsOptions(inv, inv.tls.serverName ?? host) });
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
      } catch (e) {
        const msg = short(e);
        if (!/refused/i.test(msg)) local.listening = true;
        local.errors.push(msg);
      }
    }),
  );
  return { masters, local };
}
