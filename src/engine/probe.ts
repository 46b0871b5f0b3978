/**
 * Which apiservers a node reaches: each master directly from the node, and
 * through the node's own local port. Connections through the local port are
 * told apart by the certificate that answers (its SHA-256 fingerprint, as seen
 * directly), so this works even when every apiserver certificate has one CN.
 */
import fs from 'node:fs';
import tls from 'node:tls';
import { httpsGet, type HttpsProbeOptions, type HttpsProbeResult, type ProbeSession } from '../connect/https-probe.js';
import type { SshConnection } from '../connect/ssh.js';
import type { Inventory } from '../inventory/schema.js';
import { formatHostPort, hostPortOf } from '../util/hostport.js';
import { refusedReadyz } from '../lb/client-cert.js';
import { ProbePool } from './probe-pool.js';
import type { Duplex } from 'node:stream';

export interface MasterReach {
  name: string;
  address: string;
  port: number;
  /**
   * GET /readyz straight from the node to this master: an HTTP status, a definite error (refused,
   * TLS...), or `unknown` when every attempt ran out of time (nothing is known).
   */
  direct: { status?: number; error?: string; unknown?: string; refused?: string };
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
  /** Ran out of time on every attempt: no evidence either way. */
  timedOut: number;
  errors: string[];
}

export interface Reach {
  masters: MasterReach[];
  local: LocalReach;
}

export interface ReachOptions {
  /**
   * The run's probe pool (bounds, deadlines, retry); without one, every probe at once with `timeoutMs`.
   * With both, the pool's bounds and `timeoutMs` for each probe, not retried (a deploy's verify retries on its own).
   */
  pool?: ProbePool;
  timeoutMs?: number;
  /** TLS sessions by server, resumed by the next probe of the same server. */
  sessions?: Map<string, ProbeSession>;
  /**
   * With `sessions`: a master's first probe in flight, by server. Others of that master wait for its
   * session (at most FIRST_CONTACT_WAIT_MS) and resume it, rather than all make full handshakes at once.
   */
  firstContact?: Map<string, Promise<void>>;
}

/** How long a probe waits for the first probe of its master to bring a session to resume. */
export const FIRST_CONTACT_WAIT_MS = 1000;

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

const timedOut = (o: { timeoutMs: number; attempts: number }) => `timed out after ${o.timeoutMs / 1000} s (${o.attempts} tries)`;

export async function probeReach(conn: SshConnection, inv: Inventory, o: ReachOptions = {}): Promise<Reach> {
  const shared = o.pool;
  const pool = shared ?? new ProbePool({ limit: Infinity, perTarget: Infinity, timeoutMs: o.timeoutMs ?? 3000 });
  const run = <T>(target: string, probe: (timeoutMs: number) => Promise<T>) => pool.run(target, probe, shared ? o.timeoutMs : undefined);
  const sessions = o.sessions;
  // Direct and local probes are queued at once; local answers are matched to masters afterwards.
  const { host, port } = hostPortOf(inv.lb.listen);
  // As many connections as masters: least_conn gives each to the backend with the fewest and breaks
  // ties round-robin (as round_robin does anyway), so each backend nginx would use answers one.
  const attempts = Math.max(2, inv.masters.length);
  const local: LocalReach = { listening: false, attempts, ok: 0, unknown: 0, timedOut: 0, errors: [] };
  const get = (target: string, connect: () => Promise<Duplex>, servername: string) => (timeoutMs: number) =>
    httpsGet(connect, {
      path: '/readyz',
      ...tlsOptions(inv, servername),
      timeoutMs,
      session: sessions?.get(target),
      onSession: sessions
        ? (s) => {
            sessions.set(target, s);
            opening.get(target)?.();
          }
        : undefined,
    });
  /** The first probes of this node's masters, each opening the way for the others once its session comes. */
  const opening = new Map<string, () => void>();
  /**
   * A master's probe: the first of the run goes at once and opens the way when its session (or its
   * end) comes; the others wait for that, then resume the session. Waited before taking a place in
   * the pool, so the wait holds no slot and is not counted in the probe's timeout.
   */
  const firstContact = o.firstContact;
  const probeMaster = async (target: string, probe: (timeoutMs: number) => Promise<HttpsProbeResult>) => {
    if (!sessions || !firstContact || sessions.has(target)) return run(target, probe);
    const pending = firstContact.get(target);
    if (pending) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([pending, new Promise<void>((r) => (timer = setTimeout(r, FIRST_CONTACT_WAIT_MS)))]).finally(() => clearTimeout(timer));
      return run(target, probe);
    }
    let open!: () => void;
    firstContact.set(target, new Promise<void>((r) => (open = r)));
    opening.set(target, open);
    try {
      return await run(target, probe);
    } finally {
      // Ended without a session (refused, timed out): the others go on with full handshakes.
      open();
    }
  };
  const [direct, answers] = await Promise.all([
    Promise.all(
      inv.masters.map(async (m) => {
        const target = formatHostPort(m.address, m.port);
        return { m, out: await probeMaster(target, get(target, () => conn.connectFromHost(m.address, m.port), inv.tls.serverName ?? m.address)) };
      }),
    ),
    // Each through-the-local-port probe reaches some master: bounded by the pool, not by a master.
    Promise.all(Array.from({ length: attempts }, () => run(`local ${conn.name}`, get(`local ${inv.lb.listen}`, () => conn.connectFromHost(host, port), inv.tls.serverName ?? host)))),
  ]);
  const fingerprints = new Map<string, string>();
  const masters: MasterReach[] = direct.map(({ m, out }) => {
    if (out.kind === 'answer' && out.value.fingerprint) fingerprints.set(out.value.fingerprint, m.name);
    const refused = out.kind === 'answer' ? refusedReadyz(inv, out.value.status) : undefined;
    const d: MasterReach['direct'] =
      out.kind === 'answer' ? { status: out.value.status, ...(refused ? { refused } : {}) } : out.kind === 'failed' ? { error: out.error } : { unknown: timedOut(out) };
    return { name: m.name, address: m.address, port: m.port, direct: d, viaLocal: 0 };
  });
  for (const a of answers) {
    if (a.kind === 'unknown') {
      // The connection may have been accepted: a timeout says nothing about the listener.
      local.timedOut++;
      local.errors.push(`${timedOut(a)}: ${a.error}`);
      continue;
    }
    if (a.kind === 'failed') {
      if (!/refused/i.test(a.error)) local.listening = true;
      local.errors.push(a.error);
      continue;
    }
    const r = a.value;
    local.listening = true;
    const who = r.fingerprint ? fingerprints.get(r.fingerprint) : undefined;
    if (!who) local.unknown++;
    if (r.status === 200) {
      local.ok++;
      const m = masters.find((x) => x.name === who);
      if (m) m.viaLocal++;
    } else {
      const refused = refusedReadyz(inv, r.status);
      local.errors.push(`HTTP ${r.status} from ${who ?? 'an unknown backend'}${refused ? `: ${refused}` : ''}`);
    }
  }
  return { masters, local };
}
