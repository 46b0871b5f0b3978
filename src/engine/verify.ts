/**
 * Prove a balancer works, within a stated deadline: its unit is active (running), an apiserver
 * answers /readyz through the node's own local port (TLS, from the node itself over an SSH
 * channel), and, for kube-lb, its own /healthz says an apiserver passed a check since the last
 * (re)load. While it waits it says what it waits for and how long it has waited.
 */
import { KUBE_LB_SERVICE } from '../lb/kube-lb.js';
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Duplex } from 'node:stream';
import { httpsGet, MAX_BODY_BYTES, ProbeOversized, readCapped } from '../connect/https-probe.js';
import { quote } from '../util/quote.js';
import type { SshConnection } from '../connect/ssh.js';
import type { Inventory } from '../inventory/schema.js';
import { probeReach, tlsOptions, type ReachOptions } from './probe.js';
import { hostPortOf } from '../util/hostport.js';
import type { HostResult } from './results.js';
import { inUnitCgroup, listenerPids } from '../facts/host.js';
import { refusedReadyz } from '../lb/client-cert.js';
import { containerStateScript, parseContainerState, type Runtime } from '../lb/container.js';
import { parsePodMaster, podMasterScript, podProblem, podRuntimeProblem, podRuntimeScript, podRuntimeSeen } from '../lb/static-pod.js';

export const DEFAULT_VERIFY_TIMEOUT_MS = 15_000;

export interface VerifyArgs {
  unit: string;
  listen: string;
  path: string;
  healthz?: string;
  /** Units that must be active (running) besides `unit`. */
  also?: string[];
  /** lb.impl container: the container the unit runs, as its runtime names it, and the image it must run. */
  container?: { runtime: Runtime; name: string; image: string };
  /**
   * lb.impl static-pod: kubelet runs the balancer (`unit` is kubelet). The listeners on the port must
   * be the pod's (one PID namespace not the host's, kube-nginx its first process), running the image's
   * nginx binary when its sha256 is given.
   */
  staticPod?: { sha256?: string; runtime?: Runtime };
}

export interface VerifyOutcome {
  ok: boolean;
  summary: string;
  verified?: HostResult['verified'];
}

/** Called about once a second while verify waits: what it waits for, and the time spent of the deadline. */
export type VerifyProgress = (waitingFor: string, elapsedMs: number, deadlineMs: number) => void;

export interface VerifyOptions {
  /** Rolling: every connection through the local port must reach a master of the inventory's list. */
  checkNewList: boolean;
  deadlineMs: number;
  progress?: VerifyProgress;
  /** The port owner check's output, read with the facts (nothing changed since): the first attempt asks no command for it. */
  ownerSeen?: string;
  /**
   * The run's probe pool and TLS sessions (rolling): every node's probes within one bound, each
   * master's session made once and resumed, so a batch of nodes verifying at once does not bring
   * every apiserver a burst of full handshakes.
   */
  probing?: Pick<ReachOptions, 'pool' | 'sessions' | 'firstContact'>;
}

/**
 * GET over plain HTTP on an ADDRESS:PORT as the host itself sees it (its loopback: kube-lb's admin
 * port, haproxy's stats page), over an SSH channel. Never throws: status 0 and the reason instead.
 */
export async function httpGetOnHost(conn: SshConnection, where: string, path: string, timeoutMs: number): Promise<{ status: number; body: string }> {
  const { host, port } = hostPortOf(where);
  let timer: NodeJS.Timeout | undefined;
  let socket: Duplex | undefined;
  // One deadline for the whole of it (the channel, the answer, its body), and a cap on the body.
  const deadline = new Promise<{ status: number; body: string }>((resolve) => {
    timer = setTimeout(() => {
      socket?.destroy();
      resolve({ status: 0, body: `no answer within ${timeoutMs} ms` });
    }, timeoutMs);
  });
  const get = (async () => {
    const channel = conn.connectFromHost(host, port);
    socket = await channel;
    if (!timer) socket.destroy();
    return await new Promise<{ status: number; body: string }>((resolve) => {
      const req = http.request({ createConnection: () => socket as never, path, headers: { host, connection: 'close' } }, (res) => {
        readCapped(
          res,
          () => req.destroy(),
          (r) =>
            resolve(
              'body' in r
                ? { status: res.statusCode ?? 0, body: r.body.trim() }
                : { status: 0, body: 'error' in r ? r.error.message : `answered HTTP ${res.statusCode ?? 0} with more than ${MAX_BODY_BYTES / 1024} KiB, stopped reading there` },
            ),
        );
      });
      req.on('error', (e) => resolve({ status: 0, body: e.message }));
      req.end();
    });
  })().catch((e: Error) => ({ status: 0, body: e.message }));
  try {
    return await Promise.race([get, deadline]);
  } finally {
    clearTimeout(timer);
    timer = undefined;
  }
}

const trustOf = (inv: Inventory) => (inv.tls.caFile ? 'TLS verified' : 'TLS NOT verified: set tls.caFile');

/**
 * Shell: who listens on the port, as `@@owner ours`, `@@owner other PID COMMAND` (a listener that is
 * not one of the unit's processes: its main process, a child of it (nginx's and haproxy's workers),
 * or any process in the unit's cgroup (during nginx's binary upgrade the new master's workers are
 * grandchildren)), or `@@owner unknown` where `ss` is missing. Without it, verify would pass through
 * whatever else holds the port while the unit waits for it.
 */
export function portOwnerScript(unit: string, listen: string): string {
  return [
    `command -v ss >/dev/null 2>&1 || { echo "@@owner unknown"; exit 0; }`,
    // Listeners that overlap this one: on its address, or on every address (either side a wildcard).
    // The unit's cgroup first: that settles it for every process a unit started, so systemctl (the
    // costliest process here) is asked for the main PID only for a listener outside it.
    `main=`,
    `for p in $(${listenerPids(listen)}); do`,
    `  ${inUnitCgroup(unit, '$p')} && continue`,
    `  [ -n "$main" ] || main=$(systemctl show -p MainPID --value ${quote(unit)})`,
    `  pp=$(awk '/^PPid:/{print $2}' /proc/$p/status 2>/dev/null)`,
    `  [ "$p" = "$main" ] || [ "$pp" = "$main" ] || { echo "@@owner other $p $(cat /proc/$p/comm 2>/dev/null)"; exit 0; }`,
    `done`,
    `echo "@@owner ours"`,
  ].join('\n');
}

/**
 * Shell: the container as its runtime sees it (containerStateScript), then who listens on the port:
 * `@@owner ours` when every listener is a process of that container (in its PID namespace, where
 * nginx's master and workers are), else `@@owner other PID COMMAND`.
 */
export function containerOwnerScript(c: NonNullable<VerifyArgs['container']>, listen: string): string {
  return [
    containerStateScript(c.runtime, c.name),
    `command -v ss >/dev/null 2>&1 || { echo "@@owner unknown"; exit 0; }`,
    `cpid=$(printf '%s' "$s" | cut -d ' ' -f 2)`,
    `ns=$(readlink /proc/$cpid/ns/pid 2>/dev/null)`,
    // Listeners that overlap this one (its address, or either side on every address), as the other owner checks.
    `for p in $(${listenerPids(listen)}); do`,
    `  [ -n "$ns" ] && [ "$(readlink /proc/$p/ns/pid 2>/dev/null)" = "$ns" ] || { echo "@@owner other $p $(cat /proc/$p/comm 2>/dev/null)"; exit 0; }`,
    `done`,
    `echo "@@owner ours"`,
  ].join('\n');
}

/** Why the container is not what verify waits for (not there, not running, another image), or undefined. */
export function containerProblem(stdout: string, c: NonNullable<VerifyArgs['container']>): string | undefined {
  const st = parseContainerState(stdout);
  if (!st) return `${c.runtime} has no container ${c.name}`;
  if (!st.running) return `${c.runtime} shows container ${c.name} not running`;
  // podman names an image `localhost/...`; so does Docker for a tag it was given with that prefix.
  if (st.image !== c.image) return `container ${c.name} runs ${st.image}, not ${c.image}`;
  return undefined;
}

/** Another process holds the port: who, in words; undefined when the unit's own processes hold it (or it cannot be told). */
export function portOwnerProblem(stdout: string, unit: string, listen: string): string | undefined {
  const m = /^@@owner other (\d+) ?(.*)$/m.exec(stdout);
  return m ? `${listen} is held by another process (pid ${m[1]}${m[2] ? `, ${m[2]}` : ''}), not by ${unit}: it cannot take the port while that runs` : undefined;
}

/**
 * The first master's /readyz, from the node, with the identity the checks use: why it refuses them
 * (401: anonymous auth is off and no client certificate is set), or undefined.
 */
async function directRefusal(conn: SshConnection, inv: Inventory, timeoutMs: number): Promise<string | undefined> {
  const m = inv.masters[0];
  if (!m) return undefined;
  try {
    const r = await httpsGet(() => conn.connectFromHost(m.address, m.port), { path: '/readyz', ...tlsOptions(inv, inv.tls.serverName ?? m.address), timeoutMs });
    const why = refusedReadyz(inv, r.status);
    return why ? `${m.name} says: ${why}` : undefined;
  } catch {
    return undefined;
  }
}

/** One attempt: undefined when it passed, else what is still missing. */
async function attempt(conn: SshConnection, inv: Inventory, args: VerifyArgs, o: VerifyOptions, timeoutMs: number): Promise<VerifyOutcome> {
  const { host, port } = hostPortOf(args.listen);
  let verified: HostResult['verified'];
  let passed: string;
  // First: the port is the unit's (or its container's). An answer through it from another process proves nothing.
  let runtimeSaid = '';
  if (args.staticPod) {
    const rt = args.staticPod.runtime;
    const out = (await conn.execAsRoot(`${podMasterScript(args.listen)}${rt ? `\n${podRuntimeScript(rt)}` : ''}`)).stdout;
    const pod = parsePodMaster(out);
    const why = podProblem(pod, args.listen, args.staticPod.sha256 || undefined) ?? (rt && pod.state === 'ours' ? podRuntimeProblem(out, rt, pod.pid) : undefined);
    if (why) return { ok: false, summary: why };
    const seen = rt ? podRuntimeSeen(out, rt) : undefined;
    if (seen) runtimeSaid = `; ${seen}`;
  } else if (args.container) {
    const out = (await conn.execAsRoot(containerOwnerScript(args.container, args.listen))).stdout;
    const why = containerProblem(out, args.container) ?? portOwnerProblem(out, `container ${args.container.name}`, args.listen);
    if (why) return { ok: false, summary: why };
  } else {
    const seen = o.ownerSeen ?? (await conn.execAsRoot(portOwnerScript(args.unit, args.listen))).stdout;
    // Read once: a later attempt (the port not answering yet) asks the node again.
    o.ownerSeen = undefined;
    const owner = portOwnerProblem(seen, args.unit, args.listen);
    if (owner) return { ok: false, summary: owner };
  }
  if (o.checkNewList) {
    // For a few ms after a reload, nginx's old workers still accept on the shared socket with the
    // old list; the loop around this retries until the reload has taken effect or time is up.
    const reach = await probeReach(conn, inv, { ...o.probing, timeoutMs });
    const hit = reach.masters.filter((m) => m.viaLocal > 0).map((m) => m.name);
    verified = { state: 'active (running)', status: reach.local.ok ? 200 : 0, backend: hit.join(',') || undefined };
    if (!reach.local.ok) return { ok: false, summary: `no apiserver answered through ${args.listen}: ${reach.local.errors[0] ?? 'no answer'}`, verified };
    // kube-lb with discovery balances to the apiservers the cluster names too: an answer from one of them is expected.
    const learns = args.unit === KUBE_LB_SERVICE && !!inv.kubeLb.discovery;
    if (learns && !hit.length) return { ok: false, summary: `none of the ${reach.local.ok} answers through ${args.listen} came from the new master list (only from apiservers kube-lb learned)`, verified };
    if (reach.local.unknown && !learns) {
      return { ok: false, summary: `${reach.local.unknown} of ${reach.local.attempts} connections through ${args.listen} reached a backend outside the new master list`, verified };
    }
    const learned = reach.local.unknown ? `, ${reach.local.unknown} by apiservers kube-lb learned from the cluster` : '';
    passed = `${reach.local.ok}/${reach.local.attempts} requests through ${args.listen} answered by the new list (${hit.join(', ')}${learned}; ${trustOf(inv)})`;
  } else {
    try {
      const r = await httpsGet(() => conn.connectFromHost(host, port), { path: args.path, ...tlsOptions(inv, inv.tls.serverName ?? host), timeoutMs });
      verified = { state: 'active (running)', status: r.status, backend: r.peer };
      if (r.status !== 200) {
        return { ok: false, summary: `GET ${args.path} through ${args.listen} answered ${r.status}: ${refusedReadyz(inv, r.status) ?? r.body.trim().split('\n')[0]}`, verified };
      }
      passed = `GET ${args.path} through ${args.listen}: 200 from ${r.peer ?? 'an apiserver'} (${trustOf(inv)})`;
    } catch (e) {
      // An answer, just not a health answer: nothing to ask a master about.
      if (e instanceof ProbeOversized) return { ok: false, summary: `GET ${args.path} through ${args.listen}: ${e.message}` };
      // A balancer whose checks mark every master down closes the connection: ask a master why.
      const why = await directRefusal(conn, inv, timeoutMs);
      return { ok: false, summary: `no apiserver answered GET ${args.path} through ${args.listen}: ${(e as Error).message.split('\n')[0]}${why ? `; ${why}` : ''}` };
    }
  }
  if (args.healthz) {
    // ?checked: a check must have passed since the last (re)load, so a reload's new settings are what is proven.
    const h = await httpGetOnHost(conn, args.healthz, '/healthz?checked', timeoutMs);
    if (h.status !== 200) {
      const why = h.status
        ? `its /healthz on ${args.healthz} answers ${h.status} (${h.body}): no apiserver passes its health check; check tls.caFile, tls.serverName and kubeLb.check`
        : `its /healthz on ${args.healthz} does not answer: ${h.body}`;
      return { ok: false, summary: `${args.unit}: ${why}`, verified };
    }
  }
  return { ok: true, summary: `active (running); ${passed}${runtimeSaid}`, verified };
}

/** Shell: a unit's `ActiveState SubState` on one line. */
export const unitStateCommand = (unit: string) => `systemctl show -p ActiveState -p SubState --value ${quote(unit)} | tr '\\n' ' '`;

/**
 * Wait until the unit is active (running): one still starting (activating, reloading) gets what is
 * left of the deadline. `state` is its `ActiveState SubState` as last seen, when known. The reason
 * when it is not, else undefined.
 */
async function untilRunning(conn: SshConnection, unit: string, state: string | undefined, start: number, o: VerifyOptions, listen?: string): Promise<string | undefined> {
  for (;;) {
    state ??= (await conn.execAsRoot(unitStateCommand(unit))).stdout;
    const [active = '?', sub = '?'] = state.trim().split(/\s+/);
    if (active === 'active' && sub === 'running') return undefined;
    const elapsed = Date.now() - start;
    // deactivating: a --no-block restart whose old process still drains (kube-lb's shutdownTimeout); the start follows.
    if (active !== 'activating' && active !== 'reloading' && active !== 'deactivating') return `${unit} is ${active} (${sub}), not active (running)`;
    // A unit that is started only once it holds its port (kube-lb) waits in vain while another process holds it: say who, now.
    if (listen && active === 'activating') {
      const owner = portOwnerProblem((await conn.execAsRoot(portOwnerScript(unit, listen))).stdout, unit, listen);
      if (owner) return `${unit} is still ${active} (${sub}): ${owner}`;
    }
    if (elapsed >= o.deadlineMs) return `${unit} is still ${active} (${sub}) after ${(o.deadlineMs / 1000).toFixed(0)} s, not active (running)`;
    o.progress?.(`${unit} is ${active} (${sub})`, elapsed, o.deadlineMs);
    await sleep(250);
    state = undefined;
  }
}

/** Verify until it passes or the deadline is reached; `state` is `ActiveState SubState` as last seen. */
export async function verifyBalancer(conn: SshConnection, inv: Inventory, args: VerifyArgs, state: string, o: VerifyOptions): Promise<VerifyOutcome> {
  const start = Date.now();
  // The unit, then its companions (keepalived beside haproxy), each given the same wait for its start.
  const notRunning = await untilRunning(conn, args.unit, state, start, o, args.listen);
  if (notRunning) return { ok: false, summary: notRunning };
  for (const other of args.also ?? []) {
    const why = await untilRunning(conn, other, undefined, start, o);
    if (why) return { ok: false, summary: why };
  }
  let last: VerifyOutcome = { ok: false, summary: 'not tried' };
  let told = 0;
  for (;;) {
    const left = o.deadlineMs - (Date.now() - start);
    last = await attempt(conn, inv, args, o, Math.max(200, Math.min(3000, left)));
    if (last.ok) return last;
    const elapsed = Date.now() - start;
    if (elapsed >= o.deadlineMs) break;
    if (elapsed - told >= 1000) {
      told = elapsed;
      o.progress?.(last.summary, elapsed, o.deadlineMs);
    }
    await sleep(Math.min(200, o.deadlineMs - elapsed));
  }
  return { ...last, summary: `${last.summary} (gave up after ${(o.deadlineMs / 1000).toFixed(0)} s)` };
}
