/**
 * kube-lb's data plane: a TCP balancer for kube-apiservers on one node.
 * - The listener pauses each new client until a backend accepts, so a failed
 *   dial moves on to the next backend before any client byte is read.
 * - Bytes flow by write() with backpressure (pause on a full buffer, resume
 *   on drain); counters come from the sockets' own byte counts.
 * - A backend marked down (active /readyz, or passive connect failures) gets
 *   no new connections, and its open ones are closed (or drained after
 *   drainTimeout) so watches reconnect to a healthy apiserver.
 * - With every backend down it tries them all (panic mode) and says so loudly.
 * - reload() swaps the configuration without closing the listener or any open
 *   connection to a backend that stays.
 */
import net from 'node:net';
import { firstIndex, order } from './balancer.js';
import { checkResult, connectFailed, initialHealth, isUp, type HealthSettings, type HealthState } from './health.js';
import type { Backend, ProxyConfig } from './config.js';
import { hostPortOf } from '../util/hostport.js';

export type Log = (line: string) => void;

export interface BackendRuntime {
  backend: Backend;
  health: HealthState;
  up: boolean;
  conns: Set<{ client: net.Socket; upstream: net.Socket }>;
  total: number;
  bytesIn: number;
  bytesOut: number;
  connectErrors: number;
  checksOk: number;
  checksFailed: number;
  lastCheckMs: number;
  /** When the last check ended (ms since the epoch; 0: none yet). */
  lastCheckAt: number;
  /** Checks whose TLS session was resumed (no full handshake). */
  checksResumed: number;
  /** The configuration generation of this backend's last passing check (-1: none yet). */
  okGeneration: number;
}

const key = (b: Backend) => `${b.address}:${b.port}`;

/**
 * Connect errors that are this node's own: out of file descriptors (process or system), of local
 * ports, of socket buffers or memory. A leaking process on the node must not make kube-lb mark the
 * apiservers down and cut every watch. Everything else (refused, reset, unreachable, a timeout) is
 * the backend's.
 */
export const LOCAL_ERRORS: ReadonlySet<string> = new Set(['EMFILE', 'ENFILE', 'EADDRNOTAVAIL', 'ENOBUFS', 'ENOMEM']);

export function healthSettings(cfg: ProxyConfig): HealthSettings {
  return {
    maxFails: cfg.passive.maxFails,
    failTimeout: cfg.passive.failTimeout,
    rise: cfg.active.rise,
    fall: cfg.active.fall,
    activeEnabled: cfg.active.enabled,
  };
}

export class Balancer {
  readonly backends = new Map<string, BackendRuntime>();
  /** The same runtimes as an array, rebuilt on reload: the accept path iterates it without copying. */
  private list: BackendRuntime[] = [];
  private rr = 0;
  private panicLogged = 0;
  /** Connects that failed for this node's own want (descriptors, ports, buffers), by errno code. */
  readonly localErrors = new Map<string, number>();
  private localLogged = 0;
  private localUnlogged = 0;
  private server?: net.Server;
  private closing = false;
  /** Bumped by every reload. */
  private generation = 0;

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
   * Bind the listen address. While another process holds it (the balancer this one replaces, on
   * its way out), retry every few milliseconds for up to listenWait: the port changes hands with
   * the shortest possible gap.
   */
  async listen(): Promise<net.AddressInfo> {
    const [host, port] = splitHostPort(this.cfg.listen);
    const deadline = this.now() + this.cfg.listenWait;
    let waiting = false;
    // A reload to another address on the same port: the old listener must go first, or the new bind
    // would wait on ourselves.
    if (this.server && (this.server.address() as net.AddressInfo | null)?.port === port) {
      this.server.close();
      this.server = undefined;
    }
    for (;;) {
      if (this.closing) throw new Error('stopping');
      const server = net.createServer({ pauseOnConnect: true, noDelay: true }, (client) => this.accept(client));
      try {
        const addr = await new Promise<net.AddressInfo>((resolve, reject) => {
          server.once('error', reject);
          server.listen({ host, port, backlog: 4096 }, () => {
            server.off('error', reject);
            // Once listening, an error is a failed accept (out of descriptors): Node emits it on the
            // server, and without a listener it would end the process and every connection with it.
            server.on('error', (err: NodeJS.ErrnoException) => this.localError(`accepting a client on ${this.cfg.listen}`, err.code ?? 'EUNKNOWN', err));
            resolve(server.address() as net.AddressInfo);
          });
        });
        // A reload to a new address: the old listener goes once the new one is bound.
        const previous = this.server;
        this.server = server;
        previous?.close();
        if (waiting) this.log(`${this.cfg.listen} is free: taking it over`);
        return addr;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EADDRINUSE' || this.now() >= deadline) throw e;
        if (!waiting) this.log(`${this.cfg.listen} is held by another process: waiting up to ${this.cfg.listenWait} ms for it`);
        waiting = true;
        await new Promise((r) => setTimeout(r, 5));
      }
    }
  }

  /** New configuration, same listener: backends that stay keep their connections and health. */
  reload(next: ProxyConfig): void {
    this.generation++;
    this.cfg = next;
    this.setBackends(next.backends);
  }

  private setBackends(list: Backend[]): void {
    const wanted = new Set(list.map(key));
    for (const [k, rt] of this.backends) {
      if (wanted.has(k)) continue;
      this.backends.delete(k);
      this.log(`backend ${rt.backend.name} (${k}) removed: closing its ${rt.conns.size} connection(s)`);
      this.shed(rt);
    }
    const hs = healthSettings(this.cfg);
    for (const b of list) {
      const rt = this.backends.get(key(b));
      if (rt) {
        rt.backend = b;
        continue;
      }
      const health = initialHealth(hs);
      this.backends.set(key(b), {
        backend: b,
        health,
        up: isUp(health, this.now()),
        conns: new Set(),
        total: 0,
        bytesIn: 0,
        bytesOut: 0,
        connectErrors: 0,
        checksOk: 0,
        checksFailed: 0,
        lastCheckMs: 0,
        lastCheckAt: 0,
        checksResumed: 0,
        okGeneration: -1,
      });
    }
    this.list = [...this.backends.values()];
  }

  /** Record an active check; a backend that goes down loses its connections. */
  checked(k: string, ok: boolean, ms: number, detail: string, resumed = false): void {
    const rt = this.backends.get(k);
    if (!rt) return;
    rt.lastCheckMs = ms;
    rt.lastCheckAt = Date.now();
    if (resumed) rt.checksResumed++;
    if (ok) {
      rt.checksOk++;
      rt.okGeneration = this.generation;
    }
    else rt.checksFailed++;
    rt.health = checkResult(rt.health, healthSettings(this.cfg), ok);
    this.refresh(rt, ok ? 'its health check passes' : `its health check fails: ${detail}`);
  }

  private refresh(rt: BackendRuntime, why: string): void {
    const up = isUp(rt.health, this.now());
    if (up === rt.up) return;
    rt.up = up;
    if (up) {
      this.log(`backend ${rt.backend.name} (${key(rt.backend)}) is UP: ${why}`);
      return;
    }
    this.log(`backend ${rt.backend.name} (${key(rt.backend)}) is DOWN: ${why}; no new connections, closing its ${rt.conns.size}`);
    this.shed(rt);
  }

  private shed(rt: BackendRuntime): void {
    // Only the connections open now: if the backend recovers before a drain ends, new ones stay.
    const victims = [...rt.conns];
    const close = () => {
      for (const c of victims) {
        c.client.destroy();
        c.upstream.destroy();
      }
    };
    if (this.cfg.drainTimeout > 0) setTimeout(close, this.cfg.drainTimeout).unref();
    else close();
  }

  private candidates(): BackendRuntime[] {
    const now = this.now();
    let up = 0;
    for (const rt of this.list) {
      if (!rt.up && isUp(rt.health, now)) this.refresh(rt, 'its passive ban ended');
      if (rt.up) up++;
    }
    if (up === this.list.length) return this.list;
    if (up) return this.list.filter((rt) => rt.up);
    if (now - this.panicLogged > 5000) {
      this.panicLogged = now;
      this.log(`PANIC: no backend is healthy; trying all ${this.list.length} of them`);
    }
    return this.list;
  }

  /** The first choice (balancer.ts's policy, without a sort for least_conn and round_robin). */
  private first(cands: BackendRuntime[], rr: number, client: net.Socket): BackendRuntime {
    const balance = this.cfg.balance;
    if (balance === 'hash') return this.ranked(cands, rr, client)[0]!;
    return cands[firstIndex(cands.length, (i) => cands[i]!.conns.size, balance, rr)]!;
  }

  /** Every candidate in the order to try them (after a failed dial, or for hash). */
  private ranked(cands: BackendRuntime[], rr: number, client: net.Socket): BackendRuntime[] {
    const byKey = new Map(cands.map((rt) => [key(rt.backend), rt]));
    return order(
      cands.map((rt) => ({ name: key(rt.backend), active: rt.conns.size })),
      this.cfg.balance,
      rr,
      `${client.remoteAddress}:${client.remotePort}`,
    ).map((c) => byKey.get(c.name)!);
  }

  private accept(client: net.Socket): void {
    if (this.closing) return void client.destroy();
    const cands = this.candidates();
    const rr = this.rr++;
    client.on('error', () => client.destroy());
    this.dial(client, this.first(cands, rr, client), () => this.ranked(cands, rr, client), new Set());
  }

  /** Connect to rt; on failure before any byte, the next untried one. The client stays paused meanwhile. */
  private dial(client: net.Socket, rt: BackendRuntime | undefined, rest: () => BackendRuntime[], tried: Set<BackendRuntime>): void {
    if (!rt || client.destroyed) return void client.destroy();
    tried.add(rt);
    const upstream = net.connect({ host: rt.backend.address, port: rt.backend.port, noDelay: true, autoSelectFamily: false });
    // The socket's own timer covers the connect; it becomes the idle timer once joined.
    upstream.setTimeout(this.cfg.connectTimeout);
    const onEarly = (e?: Error) => {
      upstream.destroy();
      const code = (e as NodeJS.ErrnoException | undefined)?.code;
      if (code && LOCAL_ERRORS.has(code)) {
        // Only this client is refused; no other backend is tried (it would meet the same want).
        client.destroy();
        return this.localError(`connecting to ${rt.backend.name} (${key(rt.backend)})`, code, e!);
      }
      rt.connectErrors++;
      rt.health = connectFailed(rt.health, healthSettings(this.cfg), this.now());
      this.refresh(rt, `${rt.connectErrors} failed connects (${e?.message ?? `connect timeout after ${this.cfg.connectTimeout} ms`})`);
      this.dial(client, rest().find((c) => !tried.has(c)), rest, tried);
    };
    const onTimeout = () => onEarly();
    upstream.once('error', onEarly);
    upstream.once('timeout', onTimeout);
    upstream.once('connect', () => {
      upstream.off('error', onEarly);
      upstream.off('timeout', onTimeout);
      // Removed, or marked down while we dialled (and another backend is up): try the next one.
      if (this.backends.get(key(rt.backend)) !== rt || (!rt.up && this.list.some((b) => b.up))) {
        upstream.destroy();
        return this.dial(client, rest().find((c) => !tried.has(c) && c.up), rest, tried);
      }
      this.join(client, upstream, rt);
    });
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

  private join(client: net.Socket, upstream: net.Socket, rt: BackendRuntime): void {
    const pair = { client, upstream };
    rt.conns.add(pair);
    rt.total++;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      rt.conns.delete(pair);
      rt.bytesIn += client.bytesRead;
      rt.bytesOut += upstream.bytesRead;
      client.destroy();
      upstream.destroy();
    };
    client.on('close', finish);
    upstream.on('error', finish);
    upstream.on('close', finish);
    // One idle timer per connection pair: both directions refresh the client's (reads and writes).
    upstream.setTimeout(0);
    client.setTimeout(this.cfg.idleTimeout, finish);
    forward(client, upstream);
    forward(upstream, client);
    client.resume();
  }

  /** Stop accepting; wait for open connections to finish, up to `graceMs`, then close what is left. */
  async stop(graceMs: number): Promise<void> {
    this.closing = true;
    // The port is free as soon as close() returns; its callback would wait for every open connection.
    this.server?.close();
    const open = () => [...this.backends.values()].reduce((n, rt) => n + rt.conns.size, 0);
    const deadline = this.now() + graceMs;
    while (open() && this.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    for (const rt of this.backends.values()) this.shed({ ...rt, conns: rt.conns });
  }

  /**
   * Some backend takes new connections. With `checked`, one must also have passed an active check
   * since the configuration was last (re)loaded: proof that the current check settings work, not
   * just the ones before a reload.
   */
  healthy(checked = false): boolean {
    if (checked && this.cfg.active.enabled) return this.list.some((rt) => rt.up && rt.okGeneration === this.generation);
    return [...this.backends.values()].some((rt) => rt.up);
  }

  /** Prometheus text exposition. */
  metrics(): string {
    const rows: [string, string, string, (rt: BackendRuntime) => number][] = [
      ['kube_lb_backend_up', 'gauge', '1 when the backend takes new connections', (rt) => (rt.up ? 1 : 0)],
      ['kube_lb_backend_active_connections', 'gauge', 'open connections', (rt) => rt.conns.size],
      ['kube_lb_backend_connections_total', 'counter', 'connections made', (rt) => rt.total],
      ['kube_lb_backend_bytes_in_total', 'counter', 'bytes from clients to the backend', (rt) => rt.bytesIn + sum(rt, (c) => c.client.bytesRead)],
      ['kube_lb_backend_bytes_out_total', 'counter', 'bytes from the backend to clients', (rt) => rt.bytesOut + sum(rt, (c) => c.upstream.bytesRead)],
      ['kube_lb_backend_connect_errors_total', 'counter', 'failed connects', (rt) => rt.connectErrors],
      ['kube_lb_backend_checks_ok_total', 'counter', 'health checks that passed', (rt) => rt.checksOk],
      ['kube_lb_backend_checks_failed_total', 'counter', 'health checks that failed', (rt) => rt.checksFailed],
      ['kube_lb_backend_check_duration_seconds', 'gauge', 'duration of the last health check', (rt) => rt.lastCheckMs / 1000],
      ['kube_lb_backend_last_check_timestamp_seconds', 'gauge', 'when the last health check ended (checks are spread: interval +-20%)', (rt) => rt.lastCheckAt / 1000],
      ['kube_lb_backend_checks_resumed_total', 'counter', 'health checks that resumed a TLS session instead of a full handshake', (rt) => rt.checksResumed],
    ];
    const out: string[] = [];
    for (const [name, type, help, value] of rows) {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const rt of this.backends.values()) out.push(`${name}{backend="${rt.backend.name}",address="${key(rt.backend)}"} ${value(rt)}`);
    }
    out.push('# HELP kube_lb_local_errors_total connects that failed for want of this node\'s own resources (descriptors, local ports, buffers), by errno', '# TYPE kube_lb_local_errors_total counter');
    for (const code of new Set([...LOCAL_ERRORS, ...this.localErrors.keys()])) out.push(`kube_lb_local_errors_total{code="${code}"} ${this.localErrors.get(code) ?? 0}`);
    out.push('# HELP kube_lb_backends_up healthy backends', '# TYPE kube_lb_backends_up gauge');
    out.push(`kube_lb_backends_up ${[...this.backends.values()].filter((rt) => rt.up).length}`);
    return out.join('\n') + '\n';
  }
}

/**
 * Bytes from one socket to the other with backpressure, and a half-close passed on: what pipe()
 * does, with three listeners instead of pipe()'s nine (a measurable share of a short connection).
 */
function forward(from: net.Socket, to: net.Socket): void {
  from.on('data', (chunk: Buffer) => {
    if (!to.write(chunk)) from.pause();
  });
  to.on('drain', () => from.resume());
  from.on('end', () => to.end());
}

function sum(rt: BackendRuntime, f: (c: { client: net.Socket; upstream: net.Socket }) => number): number {
  let n = 0;
  for (const c of rt.conns) n += f(c);
  return n;
}

export function splitHostPort(hp: string): [string, number] {
  const { host, port } = hostPortOf(hp);
  return [host, port];
}

export const backendKey = key;
