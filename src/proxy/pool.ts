/**
 * The backends of kube-lb: their health (active checks, passive connect failures), which of them
 * take new connections, and the connections each one carries.
 * - A backend marked down (active /readyz, or passive connect failures) gets no new connections,
 *   and its open ones are closed (or drained after drainTimeout) so watches reconnect to a
 *   healthy apiserver.
 * - With every backend down it offers them all (panic mode) and says so loudly.
 * - reload() swaps the configuration: backends that stay keep their connections and health.
 * - The node's own faults (out of descriptors, local ports, buffers) are counted apart and blame
 *   no backend.
 */
import fs from 'node:fs';
import { pick, type Candidate } from './balancer.js';
import { checkResult, connectFailed, initialHealth, isUp, type HealthSettings, type HealthState } from './health.js';
import type { Backend, ProxyConfig } from './config.js';

export type Log = (line: string) => void;

/** One client connection joined to its backend connection (forward.ts). */
export interface Pair {
  /** Bytes moved so far, client to backend and back. */
  readonly bytesIn: number;
  readonly bytesOut: number;
  /** Close both sockets now. */
  close(): void;
}

export const backendKey = (b: Backend) => `${b.address}:${b.port}`;

/**
 * Connect errors that are this node's own: out of file descriptors (process or system), of local
 * ports, of socket buffers or memory. A leaking process on the node must not make kube-lb mark the
 * apiservers down and cut every watch. Everything else (refused, reset, unreachable, a timeout) is
 * the backend's.
 */
export const LOCAL_ERRORS: ReadonlySet<string> = new Set(['EMFILE', 'ENFILE', 'EADDRNOTAVAIL', 'ENOBUFS', 'ENOMEM']);

/**
 * A failed connect or check as the node's own fault, or undefined when the backend is to blame: the
 * error itself when its code is one of LOCAL_ERRORS; else a descriptor is asked for at once (the
 * runtime reports a socket it could not open for want of descriptors as a refused connect,
 * ECONNREFUSED, so a process or system out of them is told only by trying; only failures pay), and
 * the error comes back carrying that code.
 */
export function localFailure(e: Error | undefined): (Error & { code: string }) | undefined {
  const own = (e as NodeJS.ErrnoException | undefined)?.code;
  if (e && own && LOCAL_ERRORS.has(own)) return e as Error & { code: string };
  try {
    fs.closeSync(fs.openSync('/dev/null', 'r'));
    return undefined;
  } catch (x) {
    const code = (x as NodeJS.ErrnoException).code;
    if (code !== 'EMFILE' && code !== 'ENFILE') return undefined;
    return Object.assign(new Error(e ? `${e.message}: ${code}` : code), { code });
  }
}

export function healthSettings(cfg: ProxyConfig): HealthSettings {
  return {
    maxFails: cfg.passive.maxFails,
    failTimeout: cfg.passive.failTimeout,
    rise: cfg.active.rise,
    fall: cfg.active.fall,
    activeEnabled: cfg.active.enabled,
  };
}

/** One active check's outcome, as the checker hands it to the pool. */
export interface CheckResult {
  ok: boolean;
  /** Why it failed ("HTTP 500, shutting down", "no answer within 700 ms"), or the status. */
  detail: string;
  /** The TLS session of the check before was resumed. */
  resumed: boolean;
  /** It answered that it is shutting down (its /readyz names the `shutdown` check failing). */
  shuttingDown?: boolean;
  /** No answer at all within the check's timeout: frozen, partitioned or powered off. */
  silent?: boolean;
}

/**
 * How long the connections of an apiserver that says it is shutting down are left to it. It ends
 * them itself (GOAWAY, its watches ended) after --shutdown-delay-duration, and drains its requests
 * within --request-timeout (60 s by default); kube-lb closes what is left after that, or at once if
 * it stops answering (frozen mid-shutdown).
 */
export const SHUTDOWN_GRACE_MS = 60_000;

export class BackendState implements Candidate {
  readonly id: string;
  up: boolean;
  readonly conns = new Set<Pair>();
  /** Connections made, and the bytes of those already closed (open ones count from their sockets). */
  total = 0;
  bytesIn = 0;
  bytesOut = 0;
  connectErrors = 0;
  checksOk = 0;
  checksFailed = 0;
  lastCheckMs = 0;
  /** When the last check ended (ms since the epoch; 0: none yet). */
  lastCheckAt = 0;
  /** Checks whose TLS session was resumed (no full handshake). */
  checksResumed = 0;
  /** Dials that timed out and still hold a socket (forward.ts: MAX_HANGING_DIALS). */
  hangingDials = 0;
  /** The configuration generation of this backend's last passing check (-1: none yet). */
  okGeneration = -1;
  /** The configuration generation of its last check, passing or not (-1: none yet). */
  checkedGeneration = -1;
  /** When its checks first said it is shutting down (ms since the epoch; 0: they have not). */
  leavingSince = 0;

  constructor(
    public backend: Backend,
    public health: HealthState,
    now: number,
  ) {
    this.id = backendKey(backend);
    this.up = isUp(health, now);
  }

  get active(): number {
    return this.conns.size;
  }
}

export class Pool {
  readonly backends = new Map<string, BackendState>();
  /** The same states as an array, rebuilt on reload: the accept path iterates it without copying. */
  private list: BackendState[] = [];
  private panicLogged = 0;
  /** Connects that failed for this node's own want (descriptors, ports, buffers), by errno code. */
  readonly localErrors = new Map<string, number>();
  private localLogged = 0;
  private localUnlogged = 0;
  /** Bumped by every reload. */
  private generation = 0;
  /** Backends a reload removed whose connections are still finishing (shutdownTimeout). */
  private readonly retired = new Set<BackendState>();

  constructor(
    private cfg: ProxyConfig,
    private readonly log: Log,
    private readonly now: () => number = Date.now,
  ) {
    this.setBackends(cfg.backends);
  }

  get config(): ProxyConfig {
    return this.cfg;
  }

  /**
   * New configuration: backends that stay keep their connections and health. Those keyed in `unproven`
   * (learned from the cluster, not configured) start down until their first check passes.
   */
  reload(next: ProxyConfig, unproven?: ReadonlySet<string>): void {
    this.generation++;
    this.cfg = next;
    this.setBackends(next.backends, unproven);
  }

  private setBackends(list: Backend[], unproven?: ReadonlySet<string>): void {
    const wanted = new Set(list.map(backendKey));
    for (const [k, b] of this.backends) {
      if (wanted.has(k)) continue;
      this.backends.delete(k);
      // A master taken out of the list is not a failed one: what is in flight finishes (for as long as
      // on SIGTERM), then what is left, the watches, is closed and reconnects to the masters listed.
      this.log(`backend ${b.backend.name} (${k}) removed: no new connections; its ${b.conns.size} open connection(s) closed in ${this.cfg.shutdownTimeout} ms`);
      // Still counted until they are closed: SIGTERM waits for them and closes what is left.
      this.retired.add(b);
      this.shed(b, this.cfg.shutdownTimeout, () => this.retired.delete(b));
    }
    const hs = healthSettings(this.cfg);
    for (const backend of list) {
      const b = this.backends.get(backendKey(backend));
      if (b) b.backend = backend;
      else {
        const h = initialHealth(hs);
        const start = unproven?.has(backendKey(backend)) && hs.activeEnabled ? { ...h, activeUp: false } : h;
        this.backends.set(backendKey(backend), new BackendState(backend, start, this.now()));
      }
    }
    this.list = [...this.backends.values()];
  }

  /**
   * Record an active check. A backend that goes down loses its connections: at once (or after
   * drainTimeout), or, when it says it is shutting down, once it has ended them itself (at most
   * SHUTDOWN_GRACE_MS, and at once if it then stops answering).
   */
  checked(k: string, r: CheckResult, ms: number): void {
    const b = this.backends.get(k);
    if (!b) return;
    b.lastCheckMs = ms;
    b.lastCheckAt = Date.now();
    b.checkedGeneration = this.generation;
    if (r.resumed) b.checksResumed++;
    if (r.ok) {
      b.checksOk++;
      b.okGeneration = this.generation;
    } else b.checksFailed++;
    if (r.ok) b.leavingSince = 0;
    else if (r.shuttingDown) b.leavingSince ||= this.now();
    else if (b.leavingSince && r.silent && !b.up) {
      // Frozen in the middle of its shutdown: nothing will end what it carries.
      b.leavingSince = 0;
      this.log(`backend ${b.backend.name} (${b.id}) stopped answering while shutting down: ${r.detail}; closing its ${b.conns.size} connection(s)`);
      this.shed(b, 0);
    }
    b.health = checkResult(b.health, healthSettings(this.cfg), r.ok);
    this.refresh(b, r.ok ? 'its health check passes' : `its health check fails: ${r.detail}`);
  }

  /** A connect to b failed (refused, reset, timed out): passive health. */
  connectFailed(b: BackendState, why: string): void {
    b.connectErrors++;
    b.health = connectFailed(b.health, healthSettings(this.cfg), this.now());
    this.refresh(b, `${b.connectErrors} failed connects (${why})`);
  }

  private refresh(b: BackendState, why: string): void {
    const up = isUp(b.health, this.now());
    if (up === b.up) return;
    b.up = up;
    if (up) {
      this.log(`backend ${b.backend.name} (${b.id}) is UP: ${why}`);
      return;
    }
    if (b.leavingSince) {
      // As HAProxy without shutdown-sessions, but only for this case: closing them now would cut the
      // requests the apiserver is still serving, which its shutdown sequence exists to finish.
      const grace = Math.max(this.cfg.drainTimeout, SHUTDOWN_GRACE_MS);
      this.log(`backend ${b.backend.name} (${b.id}) is DOWN: ${why}; no new connections, its ${b.conns.size} open ones left to it to end (closed after ${grace / 1000} s if it has not)`);
      return this.shed(b, grace);
    }
    this.log(`backend ${b.backend.name} (${b.id}) is DOWN: ${why}; no new connections, closing its ${b.conns.size}`);
    this.shed(b);
  }

  /** Close b's connections open now (at once, or after drainTimeout): if it recovers meanwhile, new ones stay. */
  private shed(b: BackendState, afterMs = this.cfg.drainTimeout, then?: () => void): void {
    const victims = [...b.conns];
    const close = () => {
      for (const c of victims) c.close();
      then?.();
    };
    if (afterMs > 0) setTimeout(close, afterMs).unref();
    else close();
  }

  /** The backends that take new connections now: the healthy ones, or every one in panic mode. */
  candidates(): readonly BackendState[] {
    const now = this.now();
    let up = 0;
    for (const b of this.list) {
      if (!b.up && isUp(b.health, now)) this.refresh(b, 'its passive ban ended');
      if (b.up) up++;
    }
    if (up === this.list.length) return this.list;
    if (up) return this.list.filter((b) => b.up);
    if (now - this.panicLogged > 5000) {
      this.panicLogged = now;
      this.log(`PANIC: no backend is healthy; trying all ${this.list.length} of them`);
    }
    return this.list;
  }

  /** The next of `cands` to try for a client (balancer.ts's policy), or undefined once all were tried. */
  choose(cands: readonly BackendState[], rr: number, remote: string, tried?: ReadonlySet<BackendState>): BackendState | undefined {
    return pick(cands, this.cfg.balance, rr, () => remote, tried);
  }

  /** b is still in the configuration, and may take a connection: up, or nothing else is. */
  current(b: BackendState): boolean {
    return this.backends.get(b.id) === b && (b.up || !this.list.some((x) => x.up));
  }

  /**
   * This node, not a backend, failed (out of file descriptors or local ports): counted by errno,
   * logged at most every 5 s. No backend is counted against, and no connection is closed for it.
   */
  localError(what: string, code: string, e: Error): void {
    this.localErrors.set(code, (this.localErrors.get(code) ?? 0) + 1);
    const now = this.now();
    if (now - this.localLogged < 5000) {
      this.localUnlogged++;
      return;
    }
    const more = this.localUnlogged ? ` (and ${this.localUnlogged} more since the last such line)` : '';
    this.localLogged = now;
    this.localUnlogged = 0;
    this.log(`local error ${what}: ${e.message}${more}; that client was refused, no backend is blamed`);
  }

  /** Open connections, all backends. */
  open(): number {
    let n = 0;
    for (const b of this.list) n += b.conns.size;
    for (const b of this.retired) n += b.conns.size;
    return n;
  }

  /** Close every open connection now. */
  closeAll(): void {
    for (const b of [...this.backends.values(), ...this.retired]) this.shed(b, 0);
    this.retired.clear();
  }

  /**
   * Some backend takes new connections. With `checked`, one must also have passed an active check
   * since the configuration was last (re)loaded: proof that the current check settings work, not
   * just the ones before a reload.
   */
  healthy(checked = false): boolean {
    if (checked && this.cfg.active.enabled) return this.list.some((b) => b.up && b.okGeneration === this.generation);
    return this.list.some((b) => b.up);
  }

  /** Every backend has had a check under the current configuration (or checks are off): its verdicts are real. */
  judged(): boolean {
    return !this.cfg.active.enabled || this.list.every((b) => b.checkedGeneration === this.generation);
  }
}
