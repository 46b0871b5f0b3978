/**
 * kube-lb's discovery (opt-in, `discovery:` in its config): it watches the `kubernetes` Service's
 * EndpointSlices in `default`, which every kube-apiserver keeps with its own address, and follows
 * them: backends added and removed live, each with its health checks, with no deploy.
 *
 * - It asks through its own pool: the request goes to a backend the pool offers now (a healthy one,
 *   by the balancing policy), so it needs no other address and follows the same health verdicts.
 * - One list, then one watch (allowWatchBookmarks, 30 to 60 minutes each), resumed from the last
 *   resourceVersion; a new list only when the watch cannot resume (410 Gone). A watch whose backend
 *   goes down, or that says nothing (no event, no bookmark) for 3 minutes, is dropped and made again
 *   through another backend.
 * - Credentials: a kubeconfig on the node (kube-proxy's): a client certificate or a token, inline,
 *   and its CA (else the config's). Under systemd it is read from the copy the unit makes as root in
 *   a root-owned folder (DISCOVERY_COPY, group kube-lb, 0440), so kube-lb's own user reads no file of
 *   root's and can plant nothing where root writes; a missing one stops nothing but discovery.
 * - Always verified: the apiserver's certificate against that CA and the name (tls-server-name, the
 *   config's serverName, else the address), whatever active.insecureSkipVerify says: credentials go
 *   to no server that is not proven to be an apiserver of the cluster.
 * - Only the slice named `kubernetes` counts (the one kube-apiserver's reconciler writes; another
 *   slice with the same label is someone else's), and only usable unicast IP addresses from it.
 * - Safety (planBackends): the configured backends are the seeds. The pool never empties, never
 *   takes an answer with nothing in common with what it balances to now, and keeps enough seeds
 *   that it never has fewer backends than seeds until the cluster names replacements.
 * - Anything that goes wrong (403, 401, no EndpointSlices, no answer) is logged once per distinct
 *   reason, counted, and changes nothing: the configured backends stay.
 */
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import type { IncomingMessage } from 'node:http';
import { credentialsOf, type ClusterCredentials } from '../cluster/kubeconfig-client.js';
import { ENDPOINTSLICES_PATH, fromEndpointSlices, type ClusterApiserver } from '../cluster/control-plane.js';
import type { Backend, ProxyConfig } from './config.js';
import type { BackendState, Log, Pool } from './pool.js';

/**
 * The copy of the kubeconfig the unit makes as root before kube-lb starts (and before each reload), in
 * a folder of root's: kube-lb's user may read it (group, 0440) and write nothing there. The unit tells
 * kube-lb where by the environment variable DISCOVERY_COPY_ENV.
 */
export const DISCOVERY_COPY_DIR = '/run/kube-lb-discovery';
export const DISCOVERY_COPY = `${DISCOVERY_COPY_DIR}/kubeconfig`;
export const DISCOVERY_COPY_ENV = 'KUBE_LB_DISCOVERY_COPY';
/** Learned backends beyond this many are not taken (a cluster has 3 to 7 apiservers). */
export const MAX_LEARNED = 32;

/** Text from an apiserver, fit for a log line: no control characters, at most 300 characters. */
export const tame = (v: unknown) => String(v).replace(/[\x00-\x1f\x7f-\x9f]/g, ' ').slice(0, 300);

/** A unicast address to balance to: not unspecified, loopback, link-local, multicast, nor with a zone. */
export function usableAddress(a: string): boolean {
  const v = net.isIP(a);
  if (!v || a.includes('%')) return false;
  if (v === 4) {
    const [x, y] = a.split('.').map(Number) as [number, number];
    return !(x === 0 || x === 127 || (x === 169 && y === 254) || x >= 224);
  }
  const l = a.toLowerCase();
  return !(l === '::' || l === '::1' || /^fe[89ab]/.test(l) || l.startsWith('ff') || /^::ffff:/.test(l));
}

/** A watch says nothing for this long (real apiservers send a bookmark about every minute): made again. */
export const WATCH_SILENCE_MS = 180_000;
const WATCH_MIN_S = 1800;
/**
 * A watch moved because the pool marked its backend down is made again at once only when it had
 * lived this long; sooner, through the backoff. Checks that flap (apiservers too busy to answer
 * them in time) would otherwise have every node open a watch a second on apiservers already slow.
 */
export const WATCH_CALM_MS = 10_000;
const MAX_LINE_BYTES = 4 * 1024 * 1024;

/** A name for an apiserver the configuration does not list: from its address (apiserver-10-0-0-4). */
export function learnedName(address: string, port = 6443): string {
  const base = `apiserver-${address.replace(/[^A-Za-z0-9]+/g, '-').replace(/^-+|-+$/g, '')}`;
  return (port === 6443 ? base : `${base}-${port}`).slice(0, 63);
}

/** One text per address: an IPv6 address in its canonical form (fd00:0::1 and FD00::1 are one apiserver). */
const canonical = (address: string) => (net.isIPv6(address) ? new URL(`http://[${address}]`).hostname.slice(1, -1) : address);
const key = (a: { address: string; port: number }) => `${canonical(a.address)}:${a.port}`;
/** The one EndpointSlice kube-apiserver's endpoint reconciler writes for the kubernetes Service. */
const KUBERNETES_SLICE = 'kubernetes';

/**
 * Pure: the backends to balance to, from the configured ones (seeds), those in use now, and what the
 * cluster names; `ignored` says why the cluster's answer is not taken. `resolved`: the addresses a
 * seed named by host name resolves to (the cluster names addresses).
 */
export function planBackends(
  seeds: readonly Backend[],
  current: readonly Backend[],
  learned: readonly ClusterApiserver[],
  resolved?: ReadonlyMap<string, readonly string[]>,
): { backends: Backend[]; ignored?: string } {
  const ready = learned.filter((a) => a.ready && usableAddress(a.address) && Number.isInteger(a.port) && a.port > 0 && a.port < 65536);
  if (!ready.length) return { backends: [...current], ignored: 'the cluster names no ready apiserver' };
  if (ready.length > MAX_LEARNED) return { backends: [...current], ignored: `the cluster names ${ready.length} apiservers, more than ${MAX_LEARNED}` };
  const keysOf = (b: Backend) => [b.address, ...(resolved?.get(b.address) ?? [])].map((x) => key({ address: x, port: b.port }));
  const seedOf = new Map(seeds.flatMap((b) => keysOf(b).map((k) => [k, b] as const)));
  // Never an answer with none of the seeds: another cluster's, or a control plane moved in steps no inventory says.
  if (!ready.some((a) => seedOf.has(key(a)))) {
    return { backends: [...current], ignored: `the cluster names ${ready.map(key).join(', ')}, none of the configured masters (another cluster's answer? after a move, deploy the new masters)` };
  }
  const byKey = new Map([...current.map((b) => [key(b), b] as const), ...seedOf]);
  const backends: Backend[] = [];
  for (const a of ready) {
    const b = byKey.get(key(a)) ?? { name: learnedName(a.address, a.port), address: a.address, port: a.port };
    if (backends.includes(b)) continue;
    // A learned name another backend has: the port (or an index) tells them apart.
    const name = backends.some((x) => x.name === b.name) || (!seeds.includes(b) && seeds.some((x) => x.name === b.name)) ? `${b.name}-${backends.length + 1}` : b.name;
    backends.push(name === b.name ? b : { ...b, name });
  }
  // Seeds the cluster no longer names stay until it names as many replacements.
  const keep = Math.max(0, seeds.length - backends.length);
  backends.push(...seeds.filter((s) => !backends.includes(s)).slice(0, keep));
  return { backends };
}

export interface DiscoveryState {
  /** A watch is open now. */
  watching: boolean;
  /** What the cluster named last (ADDRESS:PORT, ready ones), or undefined before a first answer. */
  learned?: string[];
  /** Why the last answer was not taken, or the last error; cleared by the next good answer. */
  problem?: string;
  resourceVersion?: string;
  lists: number;
  watches: number;
  changes: number;
  errors: number;
}

export interface DiscoveryOptions {
  pool: Pool;
  log: Log;
  /** Apply a learned list: main.ts reloads the pool with planBackends' answer. */
  onLearned: (apiservers: ClusterApiserver[]) => void;
  random?: () => number;
}

/** What next: wait and then list (or watch again from the last resourceVersion), list now, or watch again now. */
type Outcome = { kind: 'retry'; afterMs: number; then: 'list' | 'watch' } | { kind: 'relist' } | { kind: 'resume' };

export class Discovery {
  readonly state: DiscoveryState = { watching: false, lists: 0, watches: 0, changes: 0, errors: 0 };
  private stopped = true;
  /** Bumped by stop(): a loop of an earlier start() ends instead of running beside a new one. */
  private round = 0;
  private req?: ReturnType<typeof https.request>;
  private timer?: NodeJS.Timeout;
  private lastProblem?: string;
  private failures = 0;
  private slices = new Map<string, unknown>();
  private cfg: ProxyConfig;
  /** The backend the last watch went through: the next one avoids it when it can. */
  private prev?: BackendState;

  constructor(
    cfg: ProxyConfig,
    private readonly o: DiscoveryOptions,
  ) {
    this.cfg = cfg;
  }

  /** A new configuration (SIGHUP): the next request uses it. */
  reconfigure(cfg: ProxyConfig): void {
    this.cfg = cfg;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.loop('list', this.round);
  }

  get running(): boolean {
    return !this.stopped;
  }

  stop(): void {
    this.stopped = true;
    this.round++;
    clearTimeout(this.timer);
    this.req?.destroy();
    this.state.watching = false;
  }

  private problem(text: string): void {
    if (this.stopped) return;
    this.state.problem = text;
    this.state.errors++;
    if (text !== this.lastProblem) this.o.log(`discovery: ${text}; keeping the backends in use`);
    this.lastProblem = text;
  }

  private loop(next: 'list' | 'watch', round: number): void {
    if (this.stopped || round !== this.round) return;
    const run = next === 'list' ? this.list() : this.watch();
    run.then(
      (out) => {
        if (this.stopped || round !== this.round) return;
        if (out.kind === 'retry') {
          this.timer = setTimeout(() => this.loop(out.then, round), out.afterMs);
          this.timer.unref();
        } else this.loop(out.kind === 'relist' ? 'list' : 'watch', round);
      },
      (e: Error) => {
        if (this.stopped || round !== this.round) return;
        this.problem(`internal error: ${e.message}`);
        this.timer = setTimeout(() => this.loop('list', round), 30_000);
        this.timer.unref();
      },
    );
  }

  /** Backoff after a failure: 1 s doubling to 30 s; a refusal (401, 403, 404) waits 60 s to 5 min. */
  private retry(refused: boolean, then: 'list' | 'watch' = 'list'): Outcome {
    this.failures++;
    const base = refused ? 60_000 * 2 ** Math.min(this.failures - 1, 2) : 1000 * 2 ** Math.min(this.failures - 1, 5);
    return { kind: 'retry', then, afterMs: Math.min(refused ? 300_000 : 30_000, base) * (0.8 + 0.4 * (this.o.random ?? Math.random)()) };
  }

  /** The kubeconfig's credentials, read again for each request (a reload may have copied a new one); undefined, said, when unusable. */
  private credentials(): ClusterCredentials | undefined {
    try {
      return this.readCredentials();
    } catch (e) {
      this.problem(`cannot use the kubeconfig ${this.cfg.discovery!.kubeconfig}: ${(e as Error).message}`);
      return undefined;
    }
  }

  private readCredentials(): ClusterCredentials {
    const d = this.cfg.discovery!;
    const fromUnit = process.env[DISCOVERY_COPY_ENV];
    if (fromUnit && !fs.existsSync(fromUnit)) throw new Error(`${d.kubeconfig} was not there to copy when kube-lb started or last reloaded`);
    const text = fs.readFileSync(fromUnit ?? d.kubeconfig, 'utf8');
    // Relative paths in it are the kubeconfig's own folder's, wherever systemd put the copy.
    return credentialsOf(text, d.kubeconfig);
  }

  /** The backend to ask: one the pool offers now (healthy, by the policy), avoiding `not` when it can. */
  private backend(not?: BackendState): BackendState | undefined {
    const cands = this.o.pool.candidates();
    const pick = cands.filter((b) => b !== not);
    const list = pick.length ? pick : cands;
    return list[Math.floor((this.o.random ?? Math.random)() * list.length)];
  }

  private request(b: BackendState, creds: ClusterCredentials, pathname: string): Promise<IncomingMessage> {
    const a = this.cfg.active;
    return new Promise((resolve, reject) => {
      const servername = creds.tlsServerName ?? a.serverName ?? b.backend.address;
      const req = https.request({
        host: b.backend.address,
        port: b.backend.port,
        path: pathname,
        method: 'GET',
        agent: false,
        ca: creds.ca ?? a.ca ?? (a.caFile ? fs.readFileSync(a.caFile) : undefined),
        ...(creds.cert ? { cert: creds.cert, key: creds.key } : {}),
        servername: net.isIP(servername) ? undefined : servername,
        checkServerIdentity: (_h, cert) => tls.checkServerIdentity(servername, cert),
        rejectUnauthorized: true,
        headers: { accept: 'application/json', 'user-agent': 'kube-lb', host: servername, ...(creds.token ? { authorization: `Bearer ${creds.token}` } : {}) },
        timeout: 10_000,
      });
      this.req = req;
      req.on('response', resolve);
      req.on('timeout', () => req.destroy(new Error(`no answer from ${b.backend.name} within 10 s`)));
      req.on('error', reject);
      req.end();
    });
  }

  private async body(res: IncomingMessage): Promise<string> {
    const chunks: Buffer[] = [];
    let n = 0;
    for await (const c of res as AsyncIterable<Buffer>) {
      n += c.length;
      if (n > MAX_LINE_BYTES) throw new Error(`an answer over ${MAX_LINE_BYTES / 1024 / 1024} MiB`);
      chunks.push(c);
    }
    return Buffer.concat(chunks).toString('utf8');
  }

  /** A refusal or error status, said as the apiserver said it. */
  private refused(status: number, body: string, via: string): Outcome {
    let message = tame(body.trim());
    try {
      const m = (JSON.parse(body) as { message?: unknown } | null)?.message;
      if (m !== undefined) message = tame(m);
    } catch {
      // not a Status
    }
    const what =
      status === 401
        ? `401 Unauthorized from ${via}: the kubeconfig's credentials are not accepted`
        : status === 403
          ? `403 Forbidden from ${via}: ${message} (allow list and watch on endpointslices in default, as system:node-proxier does)`
          : status === 404
            ? `no EndpointSlices on ${via} (discovery.k8s.io/v1 needs Kubernetes 1.21 or later)`
            : `${via} answered ${status}: ${message}`;
    this.problem(what);
    return this.retry(status === 401 || status === 403 || status === 404);
  }

  private learned(): void {
    const apiservers = fromEndpointSlices({ items: [...this.slices.values()] });
    try {
      this.take(apiservers);
    } catch (e) {
      this.problem(`internal error applying the cluster's list: ${(e as Error).message}`);
    }
  }

  private take(apiservers: ClusterApiserver[]): void {
    const names = apiservers.filter((a) => a.ready).map(key).sort();
    if (this.state.learned?.join() === names.join()) return;
    this.state.learned = names;
    this.state.changes++;
    this.o.onLearned(apiservers);
  }

  private async list(): Promise<Outcome> {
    this.state.watching = false;
    const creds = this.credentials();
    if (!creds) return this.retry(true);
    const b = this.backend();
    if (!b) return this.retry(false);
    this.state.lists++;
    let res: IncomingMessage;
    let body: string;
    try {
      res = await this.request(b, creds, ENDPOINTSLICES_PATH);
      body = await this.body(res);
    } catch (e) {
      this.problem(`list through ${b.backend.name}: ${(e as Error).message}`);
      return this.retry(false);
    }
    if (res.statusCode !== 200) return this.refused(res.statusCode ?? 0, body, b.backend.name);
    let list: { metadata?: { resourceVersion?: string }; items?: { metadata?: { name?: string } }[] } | null;
    try {
      list = JSON.parse(body);
    } catch {
      this.problem(`${b.backend.name} answered the list with something that is not JSON`);
      return this.retry(false);
    }
    this.slices = new Map((Array.isArray(list?.items) ? list.items : []).filter((x) => x?.metadata?.name === KUBERNETES_SLICE).map((x) => [KUBERNETES_SLICE, x]));
    const rv = list?.metadata?.resourceVersion;
    this.state.resourceVersion = typeof rv === 'string' && /^\d{1,20}$/.test(rv) ? rv : undefined;
    this.failures = 0;
    this.state.problem = undefined;
    this.lastProblem = undefined;
    this.learned();
    return { kind: 'resume' };
  }

  /** One watch from the last resourceVersion, until it ends: resume, relist (410), or retry. */
  private async watch(): Promise<Outcome> {
    const creds = this.credentials();
    if (!creds) return this.retry(true);
    const b = this.backend(this.prev);
    if (!b) return this.retry(false, 'watch');
    this.prev = b;
    const seconds = Math.round(WATCH_MIN_S * (1 + (this.o.random ?? Math.random)()));
    const q = `&watch=1&allowWatchBookmarks=true&timeoutSeconds=${seconds}&resourceVersion=${encodeURIComponent(this.state.resourceVersion ?? '')}`;
    this.state.watches++;
    let res: IncomingMessage;
    try {
      res = await this.request(b, creds, ENDPOINTSLICES_PATH + q);
    } catch (e) {
      // As client-go's reflector: watch again from the same resourceVersion (through another backend); a new list only on 410.
      this.problem(`watch through ${b.backend.name}: ${(e as Error).message}`);
      return this.retry(false, 'watch');
    }
    if (res.statusCode === 410) {
      res.destroy();
      return { kind: 'relist' };
    }
    if (res.statusCode !== 200) return this.refused(res.statusCode ?? 0, await this.body(res).catch(() => ''), b.backend.name);
    res.socket.setTimeout(0);
    this.state.watching = true;
    return new Promise<Outcome>((resolve) => {
      let buf = '';
      const opened = Date.now();
      let last = opened;
      let events = 0;
      let done = false;
      const finish = (o: Outcome) => {
        if (done) return;
        done = true;
        clearInterval(guard);
        this.state.watching = false;
        res.destroy();
        // The backoff starts afresh after a watch that lived; not after one that ended soon.
        const lived = Date.now() - opened >= WATCH_CALM_MS;
        if (lived) this.failures = 0;
        // A watch that ended at once with nothing on it is made again after a pause, not in a tight loop.
        if (o.kind !== 'retry' && !events && Date.now() - opened < 5000 && !this.stopped) return resolve(this.retry(false, o.kind === 'relist' ? 'list' : 'watch'));
        resolve(o);
      };
      // Its backend down or gone from the pool (the pool's verdict), or silent too long: made again through another.
      const guard = setInterval(() => {
        if (this.stopped) finish({ kind: 'resume' });
        else if ((!b.up || this.o.pool.backends.get(b.id) !== b) && this.o.pool.candidates().some((x) => x !== b)) {
          // Moved at once after a watch that lived; after a short one (a flapping verdict), through the backoff.
          finish(Date.now() - opened >= WATCH_CALM_MS ? { kind: 'resume' } : this.retry(false, 'watch'));
        }
        else if (Date.now() - last > WATCH_SILENCE_MS) finish({ kind: 'resume' });
      }, 1000);
      guard.unref();
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        if (done) return;
        buf += chunk;
        if (buf.length > MAX_LINE_BYTES) {
          this.problem(`a watch event over ${MAX_LINE_BYTES / 1024 / 1024} MiB from ${b.backend.name}`);
          return finish({ kind: 'relist' });
        }
        let nl: number;
        while (!done && (nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (!line) continue;
          last = Date.now();
          events++;
          let e: { type?: unknown; object?: { code?: unknown; metadata?: { name?: unknown; resourceVersion?: unknown } } } | null;
          try {
            e = JSON.parse(line);
          } catch {
            e = null;
          }
          if (!e || typeof e !== 'object' || typeof e.type !== 'string' || !e.object || typeof e.object !== 'object') {
            this.problem(`${b.backend.name} sent a watch event that is not one`);
            return finish({ kind: 'relist' });
          }
          if (e.type === 'ERROR') return finish(e.object.code === 410 ? { kind: 'relist' } : this.retry(false, 'watch'));
          const rv = e.object.metadata?.resourceVersion;
          if (typeof rv === 'string' && /^\d{1,20}$/.test(rv)) this.state.resourceVersion = rv;
          if (e.type === 'BOOKMARK') continue;
          // Only the slice kube-apiserver writes for the kubernetes Service.
          if (e.object.metadata?.name !== KUBERNETES_SLICE) continue;
          if (e.type === 'DELETED') this.slices.delete(KUBERNETES_SLICE);
          else if (e.type === 'ADDED' || e.type === 'MODIFIED') this.slices.set(KUBERNETES_SLICE, e.object);
          else continue;
          this.learned();
        }
      });
      res.on('end', () => finish({ kind: 'resume' }));
      res.on('error', () => finish({ kind: 'resume' }));
      res.on('close', () => finish({ kind: 'resume' }));
    });
  }
}
