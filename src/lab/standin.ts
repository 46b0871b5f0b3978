/**
 * The lab's apiserver stand-in and nginx source mirror, run inside the lab's
 * images as `node standin.js apiserver` or `node standin.js mirror DIR`.
 * It imports only Node's own modules: the image holds this one file.
 *
 * The stand-in is not an apiserver. It serves a small slice of the Kubernetes API, enough for
 * kubectl and client-go's list-and-watch to work through the balancers, over HTTPS with HTTP/2
 * (and HTTP/1.1), like kube-apiserver:
 *   GET /healthz, /livez      "ok"
 *   GET /readyz               "ok", or 500 while made unready (or shutting down); while flooding,
 *                             200 and a body that never ends (for probes' size cap)
 *   GET /version              JSON naming this stand-in, so a client can tell who answered
 *   GET /api, /apis, /api/v1  discovery: the core group v1 with one resource, pods
 *   GET /api/v1/namespaces/NS/pods, /api/v1/pods, /api/v1/namespaces/NS/pods/NAME
 *                             list (limit/continue, resourceVersion, resourceVersionMatch), get,
 *                             and with ?watch=1 a watch (resourceVersion, allowWatchBookmarks,
 *                             timeoutSeconds); a Table when kubectl asks for one
 *   GET /watch                a lab probe, not Kubernetes: a BOOKMARK line a second
 * Every answer has an `x-standin` header naming the stand-in that served it.
 *
 * The pods' history: one event every TICK_MS, numbered from the Unix epoch; an event's number is
 * its resourceVersion, and what it does is a pure function of that number (see eventAt). Every
 * stand-in reads the same clock, so all of them serve one consistent history, as apiservers
 * sharing etcd do: a client that moves to another stand-in resumes from its resourceVersion
 * without a gap. A watch can resume from the last WINDOW events; older answers 410 Expired.
 *
 * control (plain HTTP :8080, reachable on the lab network only):
 *   POST /control/ready | /control/unready   flip /readyz
 *   POST /control/readyz-flood               /readyz answers 200 and an endless body (ready: undone)
 *   POST /control/anonymous-off | -on        refuse | serve requests without a client certificate
 *                                            signed by the lab CA: 401 on every path (/readyz and
 *                                            /livez too), as kube-apiserver --anonymous-auth=false
 *   POST /control/lag?ms=N                   the watch cache N ms behind the clock (0: in step)
 *   POST /control/crash | /control/recover   stop listening on :6443 (connections refused, as when
 *                                            kube-apiserver is gone and its host is up), and listen again
 *   GET  /control/state                      readiness and open connection counts
 *   POST /control/endpoints?set=A:P,...     answer that list (empty: none) as the kubernetes Service's
 *                                            endpoints; without set: its own view again
 *   GET  /control/lease                      200 while it holds its lease (serves the API, not shutting
 *                                            down): how peers keep the kubernetes Service's endpoints
 * On SIGTERM it shuts down like kube-apiserver: /readyz turns red at once and everything else is
 * served for --shutdown-delay MS (kube-apiserver's --shutdown-delay-duration); then it accepts no
 * new connection, sends GOAWAY on every HTTP/2 session, closes idle HTTP/1.1 connections (one that
 * has sent no request yet only once it is 5 s old, as Go's server) and ends every watch cleanly;
 * requests in flight get up to --drain MS to finish; then it exits.
 *
 * The watch cache: kube-apiserver serves watches and most lists from a cache that follows etcd a
 * little behind. With --cache-lag MS (or POST /control/lag?ms=N) a stand-in's cache is that far
 * behind the clock (its etcd): a watch streams events only as the cache reaches them, a list at
 * resourceVersion "0" sees the cache as it is, a list or get at a resourceVersion N the cache has not
 * reached waits up to 3 s for it, then answers 504 Too large resource version, as kube-apiserver's
 * cacher does (see readAt for which reads go to etcd instead).
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import path from 'node:path';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { pathToFileURL } from 'node:url';

// --- the history every stand-in serves ------------------------------------------------------

/** One event per tick: a watch's events come this often. */
export const TICK_MS = 250;
/** The pods: lab-pod-0 ... lab-pod-7, in namespace default. */
export const PODS = 8;
export const NAMESPACE = 'default';
/** A pod's events from its creation to its deletion: ADDED, LIFE - 2 × MODIFIED, DELETED (a minute). */
export const LIFE = 30;
/** How many past events a watch can resume from (10 minutes), as kube-apiserver's watch cache holds a window. */
export const WINDOW = 2400;
/** How far ahead of the clock (etcd, not the cache) a watch's resourceVersion may be before it is refused as too large. */
const FUTURE_SLACK = 12;
/** How long a read at a resourceVersion the watch cache has not reached waits for it: kube-apiserver's blockTimeout. */
export const FRESH_WAIT_MS = 3000;
/** How often such a read looks at the cache again. */
const FRESH_POLL_MS = 50;
/** With allowWatchBookmarks, a BOOKMARK this often. */
export const BOOKMARK_MS = 5000;
/** A watch without timeoutSeconds ends after between this and twice this, as kube-apiserver's --min-request-timeout. */
const MIN_REQUEST_TIMEOUT_S = 1800;
/** The longest timeoutSeconds honoured (a day; a timer cannot wait longer than 24.8 days). */
const MAX_WATCH_S = 86_400;

export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface Pod {
  kind: 'Pod';
  apiVersion: 'v1';
  metadata: {
    name: string;
    namespace: string;
    uid: string;
    resourceVersion: string;
    creationTimestamp: string;
    deletionTimestamp?: string;
    deletionGracePeriodSeconds?: number;
    labels: Record<string, string>;
    annotations: Record<string, string>;
  };
  spec: { containers: { name: string; image: string }[]; restartPolicy: string };
  status: {
    phase: string;
    conditions: { type: string; status: string }[];
    containerStatuses: { name: string; ready: boolean; restartCount: number; image: string; started: boolean }[];
  };
}

export interface WatchEvent {
  type: EventType;
  object: Pod;
}

/** The resourceVersion current at `ms` (epoch milliseconds): the events that have happened by then. */
export function rvAt(ms: number): number {
  return Math.floor(ms / TICK_MS);
}

const timestamp = (rv: number) => new Date(rv * TICK_MS).toISOString().replace(/\.\d{3}Z$/, 'Z');

function uid(name: string, life: number): string {
  const h = createHash('sha256').update(`${name}/${life}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/** Which pod event `rv` touches, and where that pod is in its life (the pods' lives are staggered). */
function place(rv: number): { index: number; phase: number; life: number } {
  const index = rv % PODS;
  const round = Math.floor(rv / PODS) + Math.floor((index * LIFE) / PODS);
  return { index, phase: round % LIFE, life: Math.floor(round / LIFE) };
}

/** The event whose resourceVersion is `rv` (every rv ≥ 1 has exactly one). */
export function eventAt(rv: number): WatchEvent {
  const { index, phase, life } = place(rv);
  const type: EventType = phase === 0 ? 'ADDED' : phase === LIFE - 1 ? 'DELETED' : 'MODIFIED';
  const name = `lab-pod-${index}`;
  const image = 'registry.k8s.io/pause:3.10';
  const pod: Pod = {
    kind: 'Pod',
    apiVersion: 'v1',
    metadata: {
      name,
      namespace: NAMESPACE,
      uid: uid(name, life),
      resourceVersion: String(rv),
      creationTimestamp: timestamp(rv - phase * PODS),
      labels: { app: 'lab-pod', 'pod-index': String(index) },
      annotations: { 'lab.k8s-ha.io/changes': String(phase) },
    },
    spec: { containers: [{ name: 'pause', image }], restartPolicy: 'Always' },
    status: {
      phase: type === 'DELETED' ? 'Succeeded' : 'Running',
      conditions: [{ type: 'Ready', status: type === 'DELETED' ? 'False' : 'True' }],
      containerStatuses: [{ name: 'pause', ready: type !== 'DELETED', restartCount: Math.floor(phase / 10), image, started: type !== 'DELETED' }],
    },
  };
  if (type === 'DELETED') {
    pod.metadata.deletionTimestamp = timestamp(rv);
    pod.metadata.deletionGracePeriodSeconds = 0;
  }
  return { type, object: pod };
}

/** The pods as they are at `rv`, in the order of their keys (by name), as a list returns them. */
export function podsAt(rv: number): Pod[] {
  const pods: Pod[] = [];
  for (let index = 0; index < PODS; index++) {
    const last = rv - (((rv - index) % PODS) + PODS) % PODS;
    if (last < 1) continue;
    const e = eventAt(last);
    if (e.type !== 'DELETED') pods.push(e.object);
  }
  return pods.sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : 1));
}

// --- the API ----------------------------------------------------------------------------------

type Req = http.IncomingMessage | http2.Http2ServerRequest;
type Res = http.ServerResponse | http2.Http2ServerResponse;
/** The two response types write alike; TypeScript cannot call a union of their overloads. */
const write = (res: Res, chunk: string) => (res as http.ServerResponse).write(chunk);

interface Answer {
  status: number;
  body: unknown;
}

function status(code: number, reason: string, message: string): Answer {
  return { status: code, body: { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, details: {}, code } };
}

const notFound = () => status(404, 'NotFound', 'the server could not find the requested resource');

const DISCOVERY = {
  '/api': (host: string) => ({
    kind: 'APIVersions',
    versions: ['v1'],
    serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: host }],
  }),
  '/apis': () => ({ kind: 'APIGroupList', apiVersion: 'v1', groups: [] }),
  '/api/v1': () => ({
    kind: 'APIResourceList',
    groupVersion: 'v1',
    resources: [
      { name: 'pods', singularName: '', namespaced: true, kind: 'Pod', verbs: ['get', 'list', 'watch'], shortNames: ['po'], categories: ['all'] },
    ],
  }),
} as const;

/** `/api/v1/pods`, `/api/v1/namespaces/NS/pods` or `/api/v1/namespaces/NS/pods/NAME`, else undefined. */
export function podsPath(pathname: string): { namespace?: string; name?: string } | undefined {
  if (pathname === '/api/v1/pods') return {};
  const m = /^\/api\/v1\/namespaces\/([a-z0-9-]+)\/pods(?:\/([a-z0-9.-]+))?\/?$/.exec(pathname);
  return m ? { namespace: m[1], ...(m[2] ? { name: m[2] } : {}) } : undefined;
}

const inNamespace = (ns: string | undefined) => ns === undefined || ns === NAMESPACE;

/** `?resourceVersion=`: undefined for "most recent" ('' and unset), else a number, or an error answer. */
function parseRv(q: URLSearchParams): number | undefined | Answer {
  const v = q.get('resourceVersion');
  if (v === null || v === '') return undefined;
  if (!/^\d+$/.test(v)) return status(400, 'BadRequest', `resourceVersion: Invalid value: "${v}": must be a number`);
  return Number(v);
}

/** Selectors are outside the slice the stand-in serves: refuse them rather than ignore them. */
function unsupported(q: URLSearchParams): Answer | undefined {
  for (const p of ['labelSelector', 'fieldSelector', 'sendInitialEvents']) {
    if (q.get(p)) return status(400, 'BadRequest', `${p} is not implemented by the k8s-ha lab's apiserver stand-in`);
  }
  return undefined;
}

/** As kube-apiserver words it: client-go recognises it by the cause, and lists again from "". */
/** A resourceVersion before the window: a watch or a list from it cannot be served consistently. */
function tooOld(rv: number, now: number): Answer {
  return status(410, 'Expired', `too old resource version: ${rv} (${now - WINDOW})`);
}

function tooLarge(rv: number, now: number): Answer {
  const a = status(504, 'Timeout', `Too large resource version: ${rv}, current: ${now}`);
  (a.body as { details: unknown }).details = { causes: [{ reason: 'ResourceVersionTooLarge', message: 'Too large resource version' }], retryAfterSeconds: 1 };
  return a;
}

interface ContinueToken {
  rv: number;
  after: string;
}

/** A list: at the current resourceVersion, or exactly at one still in the window; chunked by limit/continue. */
export function list(q: URLSearchParams, namespace: string | undefined, now: number): Answer {
  let at = now;
  let after = '';
  const cont = q.get('continue');
  if (cont && (q.get('resourceVersion') ?? '') !== '') {
    return status(400, 'BadRequest', 'specifying resource version is not allowed when using continue');
  }
  if (cont) {
    let token: ContinueToken;
    try {
      token = JSON.parse(Buffer.from(cont, 'base64url').toString('utf8'));
      if (!Number.isSafeInteger(token.rv) || typeof token.after !== 'string') throw new Error();
    } catch {
      return status(400, 'BadRequest', 'continue key is not valid');
    }
    if (token.rv < now - WINDOW) {
      return status(410, 'Expired', 'The provided continue parameter is too old to display a consistent list result. Start a new list without the continue parameter.');
    }
    at = token.rv;
    after = token.after;
  } else {
    const rv = parseRv(q);
    if (typeof rv === 'object') return rv;
    if (rv !== undefined && rv > now) return tooLarge(rv, now);
    const match = q.get('resourceVersionMatch') ?? '';
    if (match === 'Exact') {
      if (rv === undefined || rv === 0) return status(400, 'BadRequest', `resourceVersionMatch: Forbidden: resourceVersionMatch "Exact" is forbidden for resourceVersion "${rv ?? ''}"`);
      if (rv < now - WINDOW) return tooOld(rv, now);
      at = rv;
    } else if (match === 'NotOlderThan' && rv === undefined) {
      return status(400, 'BadRequest', 'resourceVersionMatch: Forbidden: resourceVersionMatch "NotOlderThan" is forbidden for resourceVersion ""');
    } else if (match !== '' && match !== 'NotOlderThan') {
      return status(400, 'BadRequest', `resourceVersionMatch: Unsupported value: "${match}"`);
    }
  }
  let items = inNamespace(namespace) ? podsAt(at).filter((p) => p.metadata.name > after) : [];
  const limit = Number(q.get('limit') ?? '0');
  const metadata: Record<string, unknown> = { resourceVersion: String(at) };
  if (Number.isSafeInteger(limit) && limit > 0 && items.length > limit) {
    metadata.remainingItemCount = items.length - limit;
    items = items.slice(0, limit);
    metadata.continue = Buffer.from(JSON.stringify({ rv: at, after: items.at(-1)!.metadata.name } satisfies ContinueToken)).toString('base64url');
  }
  return { status: 200, body: { kind: 'PodList', apiVersion: 'v1', metadata, items } };
}

/** kubectl asks for server-side printing: `Accept: application/json;as=Table;v=v1;g=meta.k8s.io,...`. */
export function wantsTable(accept: string | undefined): boolean {
  return /as=Table;v=v1;g=meta\.k8s\.io/.test(accept ?? '');
}

/** How long ago, as kubectl prints it (apimachinery's HumanDuration): 45s, 3m12s, 125m, 4h30m, 9h, 3d5h, 20d. */
export function age(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const both = (a: number, x: string, b: number, y: string) => `${a}${x}${b ? `${b}${y}` : ''}`;
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 10) return both(m, 'm', s % 60, 's');
  if (m < 180) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 8) return both(h, 'h', m % 60, 'm');
  if (h < 48) return `${h}h`;
  if (h < 192) return both(Math.floor(h / 24), 'd', h % 24, 'h');
  return `${Math.floor(h / 24)}d`;
}

const TABLE_COLUMNS = [
  { name: 'Name', type: 'string', format: 'name', description: 'Name of the pod', priority: 0 },
  { name: 'Ready', type: 'string', format: '', description: 'Ready containers', priority: 0 },
  { name: 'Status', type: 'string', format: '', description: 'The pod phase', priority: 0 },
  { name: 'Restarts', type: 'integer', format: '', description: 'Container restarts', priority: 0 },
  { name: 'Age', type: 'string', format: '', description: 'Time since creation', priority: 0 },
];

/** Pods as a meta.k8s.io/v1 Table; `includeObject`: None, Metadata (the default) or Object. */
export function table(pods: Pod[], meta: Record<string, unknown>, includeObject: string | null, nowMs: number): unknown {
  return {
    kind: 'Table',
    apiVersion: 'meta.k8s.io/v1',
    metadata: meta,
    columnDefinitions: TABLE_COLUMNS,
    rows: pods.map((p) => {
      const c = p.status.containerStatuses[0]!;
      const deleting = p.metadata.deletionTimestamp !== undefined;
      const row: Record<string, unknown> = {
        cells: [p.metadata.name, `${c.ready ? 1 : 0}/1`, deleting ? 'Terminating' : p.status.phase, c.restartCount, age((nowMs - Date.parse(p.metadata.creationTimestamp)) / 1000)],
      };
      if (includeObject === 'Object') row.object = p;
      else if (includeObject !== 'None') row.object = { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: p.metadata };
      return row;
    }),
  };
}

function bookmark(rv: number): unknown {
  return { type: 'BOOKMARK', object: { kind: 'Pod', apiVersion: 'v1', metadata: { resourceVersion: String(rv), creationTimestamp: null }, spec: { containers: null }, status: {} } };
}

/**
 * What a watch sends first: the events after `from` (or, with no resourceVersion, the pods as ADDED), else an ERROR.
 * `now` is the watch cache's resourceVersion, `clock` etcd's (the clock's; the same without a cache lag). As
 * kube-apiserver's cacher, a watch from a resourceVersion the cache has not reached yet is not refused and does not
 * wait: it starts at once, and its events come as the cache reaches them (only a watch asking for sendInitialEvents
 * waits for the cache, which the stand-in refuses).
 */
export function watchStart(q: URLSearchParams, namespace: string | undefined, now: number, clock = now): { events: unknown[]; from: number; end?: boolean } | Answer {
  const rv = parseRv(q);
  if (typeof rv === 'object') return rv;
  const error = (a: Answer) => ({ events: [{ type: 'ERROR', object: a.body }], from: now, end: true });
  if (rv === undefined || rv === 0) {
    // "Most recent" and "any": the state now, as synthetic ADDED events, then what follows.
    const pods = inNamespace(namespace) ? podsAt(now) : [];
    return { events: pods.map((object) => ({ type: 'ADDED', object })), from: now };
  }
  // As kube-apiserver's watch cache answers: a 200 stream whose one event is the error.
  if (rv < now - WINDOW) return error(tooOld(rv, now));
  // Not kube-apiserver's (its watch would wait for ever): a resourceVersion etcd has not had is a client's mistake.
  if (rv > clock + FUTURE_SLACK) return error(tooLarge(rv, clock));
  return { events: [], from: rv };
}

/** The events of (from, to] a watch of `namespace` sees. */
function eventsBetween(from: number, to: number, namespace: string | undefined): WatchEvent[] {
  const out: WatchEvent[] = [];
  if (!inNamespace(namespace)) return out;
  for (let rv = from + 1; rv <= to; rv++) out.push(eventAt(rv));
  return out;
}

interface Watcher {
  res: Res;
  namespace?: string;
  /** The resourceVersion it started from. */
  from: number;
  /** The last resourceVersion sent. */
  at: number;
  bookmarks: boolean;
  table: boolean;
  nextBookmark: number;
}

export interface StandinOptions {
  name: string;
  pkiDir: string;
  port: number;
  controlPort: number;
  host?: string;
  /** On SIGTERM, how long /readyz is red while everything else is served (kube-apiserver's --shutdown-delay-duration). */
  shutdownDelayMs: number;
  /** Then, how long in-flight requests may take to finish before the rest is cut (kube-apiserver's is 60 s); default 10 s. */
  drainMs?: number;
  /** How far the watch cache is behind etcd (the clock), in ms; default 0. `POST /control/lag?ms=N` changes it. */
  cacheLagMs?: number;
  /**
   * The `kubernetes` Service's endpoints, as kube-apiserver's endpoint reconciler keeps them: this
   * stand-in's own address while it is ready, and each peer's while its /readyz answered 200 within
   * the last ENDPOINT_TTL_MS (asked every second, over TLS verified by the lab CA).
   */
  self?: { address: string; port: number };
  peers?: { address: string; port: number }[];
  /** With allowWatchBookmarks, a BOOKMARK this often; default BOOKMARK_MS. */
  bookmarkMs?: number;
  log?: (message: string) => void;
}

/** How long a peer that stopped answering ready stays in the endpoints (kube-apiserver's lease: 15 s, here shorter). */
export const ENDPOINT_TTL_MS = 5000;
/** Go's http.Server.Shutdown: a connection that has sent no request counts as idle once this old. */
const NEW_CONN_IDLE_MS = 5000;

/** The `kubernetes` Service's EndpointSliceList and Endpoints for these apiservers, at resourceVersion `rv`. */
export function kubernetesEndpoints(apiservers: readonly { address: string; port: number }[], rv: number): { slices: unknown; endpoints: unknown } {
  const port = apiservers[0]?.port ?? 6443;
  const v6 = apiservers.some((a) => net.isIPv6(a.address));
  const meta = { name: 'kubernetes', namespace: 'default', resourceVersion: String(rv), labels: { 'kubernetes.io/service-name': 'kubernetes', 'endpointslice.kubernetes.io/managed-by': 'endpointslicemirroring-controller.k8s.io' } };
  return {
    slices: {
      kind: 'EndpointSliceList',
      apiVersion: 'discovery.k8s.io/v1',
      metadata: { resourceVersion: String(rv) },
      items: [
        {
          metadata: meta,
          addressType: v6 ? 'IPv6' : 'IPv4',
          endpoints: apiservers.map((a) => ({ addresses: [a.address], conditions: { ready: true } })),
          ports: [{ name: 'https', port, protocol: 'TCP' }],
        },
      ],
    },
    endpoints: {
      kind: 'Endpoints',
      apiVersion: 'v1',
      metadata: { name: 'kubernetes', namespace: 'default', resourceVersion: String(rv) },
      subsets: apiservers.length ? [{ addresses: apiservers.map((a) => ({ ip: a.address })), ports: [{ name: 'https', port, protocol: 'TCP' }] }] : [],
    },
  };
}

export interface Standin {
  api: http2.Http2SecureServer;
  control: http.Server;
  /** Close every port and connection at once. */
  close: () => void;
  /**
   * As kube-apiserver on SIGTERM: /readyz red at once, everything else served shutdownDelayMs more; then no new
   * connections, GOAWAY on every HTTP/2 session, idle HTTP/1.1 connections closed, watches ended; in-flight
   * requests finish within drainMs; then every connection is closed. Resolves then.
   */
  terminate: () => Promise<void>;
  /** Set the watch cache's lag (ms behind the clock). Raising it stalls the cache: it never goes back. */
  setCacheLag: (ms: number) => void;
}

/** How long a watch runs: its timeoutSeconds (at most MAX_WATCH_S), else kube-apiserver's 1 to 2 x --min-request-timeout. */
function watchSeconds(q: URLSearchParams): number {
  const asked = Number(q.get('timeoutSeconds') ?? '');
  return Number.isFinite(asked) && asked > 0 ? Math.min(asked, MAX_WATCH_S) : MIN_REQUEST_TIMEOUT_S * (1 + Math.random());
}

export function serveApiserver(o: StandinOptions): Standin {
  const { name } = o;
  const bookmarkMs = o.bookmarkMs ?? BOOKMARK_MS;
  const drainMs = o.drainMs ?? 10_000;
  const log = o.log ?? ((message: string) => process.stdout.write(`${new Date().toISOString()} ${name} ${message}\n`));
  let ready = true;
  /** /readyz answers 200 and a body that never ends: no health answer, for the probes' size cap. */
  let flood = false;
  /** Off: kube-apiserver with --anonymous-auth=false, every request needs a client certificate of the lab CA. */
  let anonymous = true;
  /** SIGTERM came: /readyz is red. */
  let shuttingDown = false;
  /** The shutdown delay is over: no new connections, in-flight requests finish. */
  let draining = false;
  let requests = 0;
  let lagMs = o.cacheLagMs ?? 0;
  /** The newest resourceVersion the watch cache has: it never goes back, so raising the lag stalls it. */
  let cacheRv = 0;
  const cacheNow = () => (cacheRv = Math.max(cacheRv, rvAt(Date.now() - lagMs)));
  const sockets = new Set<Socket>();
  const tlsSockets = new Set<TLSSocket>();
  const sessions = new Set<http2.ServerHttp2Session>();
  const watchers = new Set<Watcher>();
  const probes = new Set<Res>();
  /** Requests being answered, watches and probes aside: what the drain waits for. */
  const inflight = new Set<Res>();
  /** HTTP/1.1 connections with a request being answered: closed once it is, while draining. */
  const busy = new Map<TLSSocket, number>();
  /**
   * HTTP/1.1 connections that have sent no request yet, and when they came. Go's Shutdown counts
   * such a connection idle (and closes it) only once it is NEW_CONN_IDLE_MS old: one accepted just
   * before the listener closed still has its request answered.
   */
  const unasked = new Map<TLSSocket, number>();

  /**
   * When each peer last held its lease: kube-apiserver's lease endpoint reconciler names every apiserver
   * whose lease is current, ready or not, and an apiserver gives up its lease as its shutdown starts. A
   * peer holds it while its control port's /control/lease answers 200 (listening on the API port, not
   * shutting down), asked every second; one silent, refused or shutting down drops out after ENDPOINT_TTL_MS.
   */
  const peerLeaseAt = new Map<string, number>();
  const peerKey = (a: { address: string; port: number }) => `${a.address} ${a.port}`;
  const checkPeers = () => {
    for (const peer of o.peers ?? []) {
      const req = http.get({ host: peer.address, port: o.controlPort, path: '/control/lease', timeout: 900, agent: false }, (res) => {
        if (res.statusCode === 200) peerLeaseAt.set(peerKey(peer), Date.now());
        else peerLeaseAt.delete(peerKey(peer));
        res.resume();
      });
      req.on('timeout', () => req.destroy());
      req.on('error', () => {});
    }
  };
  const peerTimer = o.peers?.length ? setInterval(checkPeers, 1000) : undefined;
  peerTimer?.unref();
  /** This stand-in holds its lease: it serves the API and is not shutting down. */
  const leased = () => api.listening && !shuttingDown;
  /** Set by POST /control/endpoints: what this stand-in answers instead, a cluster gone odd (empty, another cluster's). */
  let endpointsOverride: { address: string; port: number }[] | undefined;
  /** The apiservers the `kubernetes` Service names now. */
  const apiservers = () => {
    if (endpointsOverride) return endpointsOverride;
    const now = Date.now();
    return [
      ...(o.self && leased() ? [o.self] : []),
      ...(o.peers ?? []).filter((p) => now - (peerLeaseAt.get(peerKey(p)) ?? -Infinity) < ENDPOINT_TTL_MS),
    ].sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0));
  };

  /**
   * The endpoints' own resourceVersion: the clock's when the set last changed (never going back), so a
   * list and a watch agree, and a watch from an older one gets the change at once. Watched every 250 ms.
   */
  let epKey = '';
  let epVersion = 0;
  const epWatchers = new Set<{ res: Res; bookmarks: boolean; nextBookmark: number }>();
  const endpointsNow = () => {
    const set = apiservers();
    const key = set.map((a) => `${a.address}:${a.port}`).join(',');
    if (key !== epKey) {
      epKey = key;
      epVersion = Math.max(epVersion + 1, rvAt(Date.now()));
      const slice = (kubernetesEndpoints(set, epVersion).slices as { items: unknown[] }).items[0];
      for (const w of epWatchers) write(w.res, JSON.stringify({ type: 'MODIFIED', object: slice }) + '\n');
    }
    return { set, rv: epVersion };
  };
  const epTimer = setInterval(() => {
    const { rv } = endpointsNow();
    const now = Date.now();
    for (const w of epWatchers) {
      if (!w.bookmarks || now < w.nextBookmark) continue;
      w.nextBookmark = now + bookmarkMs;
      write(w.res, JSON.stringify({ type: 'BOOKMARK', object: { kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1', metadata: { resourceVersion: String(rv) } } }) + '\n');
    }
  }, 250);
  epTimer.unref();
  /** A watch of the kubernetes Service's EndpointSlices: the slice now when resourceVersion is older (or none), then each change. */
  const watchEndpoints = (res: Res, q: URLSearchParams) => {
    const { set, rv } = endpointsNow();
    const from = q.get('resourceVersion') ?? '';
    res.writeHead(200, { 'content-type': 'application/json', 'x-standin': name });
    if ('flushHeaders' in res) res.flushHeaders();
    if (from === '' || from === '0' || Number(from) < rv) {
      const slice = (kubernetesEndpoints(set, rv).slices as { items: unknown[] }).items[0];
      write(res, JSON.stringify({ type: from === '' || from === '0' ? 'ADDED' : 'MODIFIED', object: slice }) + '\n');
    }
    const w = { res, bookmarks: q.get('allowWatchBookmarks') === 'true', nextBookmark: Date.now() + bookmarkMs };
    epWatchers.add(w);
    inflight.delete(res);
    const seconds = watchSeconds(q);
    const timer = setTimeout(() => {
      epWatchers.delete(w);
      res.end();
    }, seconds * 1000);
    res.on('close', () => {
      clearTimeout(timer);
      epWatchers.delete(w);
    });
  };

  const send = (res: Res, a: Answer) => {
    res.writeHead(a.status, { 'content-type': 'application/json', 'x-standin': name });
    res.end(JSON.stringify(a.body));
  };
  const line = (w: Watcher, e: unknown) => {
    if (w.res.writableEnded || w.res.destroyed) return;
    const ev = e as { type: string; object: Pod };
    const object = w.table && ev.type !== 'BOOKMARK' && ev.type !== 'ERROR' ? table([ev.object], { resourceVersion: ev.object.metadata.resourceVersion }, null, Date.now()) : ev.object;
    write(w.res, JSON.stringify({ type: ev.type, object }) + '\n');
  };

  /**
   * The cache's resourceVersion once it has reached `rv`, polling it; undefined after FRESH_WAIT_MS, or when
   * the client has gone. As kube-apiserver's waitUntilFreshAndBlock.
   */
  const fresh = async (rv: number, res: Res): Promise<number | undefined> => {
    const deadline = Date.now() + FRESH_WAIT_MS;
    for (;;) {
      const now = cacheNow();
      if (now >= rv) return now;
      if (Date.now() >= deadline || res.destroyed) return undefined;
      await new Promise((r) => setTimeout(r, FRESH_POLL_MS));
    }
  };

  /** Send a watch the events up to `now` (the cache's) it has not had. */
  const catchUp = (w: Watcher, now: number) => {
    for (const e of eventsBetween(w.at, now, w.namespace)) line(w, e);
    w.at = Math.max(w.at, now);
  };
  // One clock for every watch, just after each tick: each watch gets what the cache has and it has not had.
  let ticker: NodeJS.Timeout | undefined;
  const nextTick = () => setTimeout(tick, TICK_MS - ((Date.now() - lagMs) % TICK_MS) + 1);
  const tick = () => {
    const nowMs = Date.now();
    const cache = cacheNow();
    for (const w of watchers) {
      catchUp(w, cache);
      // As the cacher's: a bookmark only once the cache is past where the watch started (none would go back).
      if (w.bookmarks && w.at === cache && cache > w.from && nowMs >= w.nextBookmark) {
        line(w, bookmark(w.at));
        w.nextBookmark = nowMs + bookmarkMs;
      }
    }
    ticker = watchers.size ? nextTick() : undefined;
  };

  const watch = (req: Req, res: Res, q: URLSearchParams, namespace: string | undefined) => {
    const now = cacheNow();
    const start = watchStart(q, namespace, now, rvAt(Date.now()));
    if ('status' in start) return send(res, start);
    res.writeHead(200, { 'content-type': 'application/json', 'x-standin': name });
    // An HTTP/1.1 client waits for the headers: send them now, not with the first event.
    if ('flushHeaders' in res) res.flushHeaders();
    const w: Watcher = {
      res,
      ...(namespace ? { namespace } : {}),
      from: start.from,
      at: start.from,
      bookmarks: q.get('allowWatchBookmarks') === 'true',
      table: wantsTable(req.headers.accept),
      nextBookmark: Date.now() + bookmarkMs,
    };
    for (const e of start.events) line(w, e);
    if (start.end) return void res.end();
    catchUp(w, now);
    watchers.add(w);
    // Not waited for by the drain: it ends watches when it begins.
    inflight.delete(res);
    ticker ??= nextTick();
    const seconds = watchSeconds(q);
    const timer = setTimeout(() => {
      // Out of the ticker first: nothing may be written after the end.
      watchers.delete(w);
      res.end();
    }, seconds * 1000);
    res.on('close', () => {
      clearTimeout(timer);
      watchers.delete(w);
    });
  };

  const probe = (res: Res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'x-standin': name });
    probes.add(res);
    inflight.delete(res);
    let seq = 0;
    const beat = () => {
      seq++;
      write(res, JSON.stringify({ type: 'BOOKMARK', object: { standin: name, seq } }) + '\n');
    };
    beat();
    const timer = setInterval(beat, 1000);
    res.on('close', () => {
      clearInterval(timer);
      probes.delete(res);
    });
  };

  /**
   * Where kube-apiserver reads a list or a get from (the cacher's rules): etcd (here the clock) for a continue,
   * resourceVersionMatch=Exact, or a limit with a resourceVersion other than "0"; the cache as it is for "0";
   * the cache once it has reached N for N (else 504 Too large resource version after FRESH_WAIT_MS); a get with
   * none from etcd; a list with none is a consistent read: the cache once it has reached etcd's resourceVersion
   * (ConsistentListFromCache), else etcd after FRESH_WAIT_MS.
   */
  const readAt = async (q: URLSearchParams, res: Res, single: boolean): Promise<{ now: number } | Answer | undefined> => {
    const v = q.get('resourceVersion') ?? '';
    const clock = rvAt(Date.now());
    const limit = Number(q.get('limit') ?? '0');
    if (!single && (q.get('continue') || q.get('resourceVersionMatch') === 'Exact' || (limit > 0 && v !== '0'))) return { now: clock };
    // A get with no resourceVersion, and a resourceVersion that is not one (list() says so), go to etcd.
    if ((single && v === '') || (!/^\d+$/.test(v) && v !== '')) return { now: clock };
    if (v === '0') return { now: cacheNow() };
    const wanted = v === '' ? clock : Number(v);
    const at = await fresh(wanted, res);
    if (res.destroyed) return undefined;
    if (at !== undefined) return { now: at };
    return v === '' ? { now: rvAt(Date.now()) } : tooLarge(wanted, cacheNow());
  };

  const pods = async (req: Req, res: Res, q: URLSearchParams, target: { namespace?: string; name?: string }) => {
    const watching = q.get('watch') === '1' || q.get('watch') === 'true';
    if (target.name && watching) return send(res, status(400, 'BadRequest', 'watch a single pod with fieldSelector, which the stand-in does not implement'));
    if (watching) return watch(req, res, q, target.namespace);
    const at = await readAt(q, res, !!target.name);
    if (!at) return;
    if ('status' in at) return send(res, at);
    const nowMs = Date.now();
    if (target.name) {
      const pod = inNamespace(target.namespace) ? podsAt(at.now).find((x) => x.metadata.name === target.name) : undefined;
      if (!pod) return send(res, status(404, 'NotFound', `pods "${target.name}" not found`));
      return send(res, wantsTable(req.headers.accept) ? { status: 200, body: table([pod], { resourceVersion: String(at.now) }, q.get('includeObject'), nowMs) } : { status: 200, body: pod });
    }
    const answer = list(q, target.namespace, at.now);
    if (answer.status === 200 && wantsTable(req.headers.accept)) {
      const l = answer.body as { metadata: Record<string, unknown>; items: Pod[] };
      return send(res, { status: 200, body: table(l.items, l.metadata, q.get('includeObject'), nowMs) });
    }
    send(res, answer);
  };

  const handle = (req: Req, res: Res) => {
    requests++;
    const url = new URL(req.url ?? '/', 'https://standin');
    const q = url.searchParams;
    const text = (code: number, body: string) => {
      res.writeHead(code, { 'content-type': 'text/plain; charset=utf-8', 'x-standin': name });
      res.end(body);
    };
    const p = url.pathname;
    // Authentication comes first, before any path: kube-apiserver without anonymous auth answers 401 to
    // /readyz, /livez and /healthz alike. `authorized`: a certificate verified against the lab CA, and
    // one there at all: a resumed TLS session of a client that sent none says authorized too.
    const peer = req.socket as TLSSocket;
    if (!anonymous && !(peer.authorized && peer.getPeerCertificate()?.raw)) return send(res, status(401, 'Unauthorized', 'Unauthorized'));
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      return send(res, status(405, 'MethodNotAllowed', `the server does not allow this method on the requested resource (the k8s-ha lab's apiserver stand-in only reads)`));
    }
    if (p === '/healthz' || p === '/livez') return text(200, 'ok');
    if (p === '/readyz') {
      if (shuttingDown) return text(500, '[+]ping ok\n[+]etcd ok\n[-]shutdown failed: reason withheld\nreadyz check failed');
      if (flood) return endless(res);
      return ready ? text(200, 'ok') : text(500, '[-]etcd failed: reason withheld\nreadyz check failed');
    }
    if (p === '/version') {
      return send(res, { status: 200, body: { major: '1', minor: '31', gitVersion: 'v1.31.0-k8s-ha-lab', platform: 'linux/amd64', standin: name } });
    }
    if (p === '/watch') return probe(res);
    if (Object.hasOwn(DISCOVERY, p)) return send(res, { status: 200, body: DISCOVERY[p as keyof typeof DISCOVERY](String(req.headers.host ?? req.headers[':authority'] ?? '')) });
    if (p === '/apis/discovery.k8s.io/v1/namespaces/default/endpointslices' || p === '/api/v1/namespaces/default/endpoints/kubernetes') {
      // RBAC as a cluster has it: kube-proxy's and an admin's identities may list these; nobody
      // anonymous may, nor the health checks' identity (allowed only get on /readyz and /livez).
      const slices = p.startsWith('/apis/');
      const user = peer.authorized ? peer.getPeerCertificate()?.subject?.CN : undefined;
      if (!user || user === 'k8s-ha-health') {
        const what = slices ? 'endpointslices' : 'endpoints';
        const group = slices ? 'discovery.k8s.io' : '';
        return send(res, status(403, 'Forbidden', `${what}${group ? `.${group}` : ''}${slices ? '' : ' "kubernetes"'} is forbidden: User "${user ?? 'system:anonymous'}" cannot ${slices ? 'list' : 'get'} resource "${what}" in API group "${group}" in the namespace "default"`));
      }
      const sel = q.get('labelSelector');
      const other = !!sel && sel !== 'kubernetes.io/service-name=kubernetes';
      if (slices && !other && (q.get('watch') === '1' || q.get('watch') === 'true')) return watchEndpoints(res, q);
      const now = endpointsNow();
      const e = kubernetesEndpoints(now.set, now.rv);
      if (p.endsWith('/kubernetes')) return send(res, { status: 200, body: e.endpoints });
      // Only the kubernetes Service's slices live here: another selector lists none.
      if (other) return send(res, { status: 200, body: { ...(e.slices as object), items: [] } });
      return send(res, { status: 200, body: e.slices });
    }
    const target = podsPath(p);
    if (!target) return p.startsWith('/api') ? send(res, notFound()) : text(404, '404 page not found');
    const refused = unsupported(q);
    if (refused) return send(res, refused);
    pods(req, res, q, target).catch((e: Error) => {
      if (!res.headersSent) send(res, status(500, 'InternalError', e.message));
      else res.destroy();
    });
  };

  /** 200 and 16 KiB after 16 KiB for as long as the client reads: what a probe must stop reading. */
  const endless = (res: Res) => {
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'x-standin': name });
    const chunk = Buffer.alloc(16 * 1024, '[+]ok\n');
    // Either protocol's response is a writable stream with backpressure; the union's overloads are not callable as one.
    const out = res as unknown as NodeJS.WritableStream & { destroyed: boolean };
    const more = () => {
      while (!out.destroyed && out.write(chunk));
    };
    res.on('drain', more);
    more();
  };

  /** Track what the drain waits for, then answer. */
  const serve = (req: Req, res: Res) => {
    const h1 = req.httpVersion !== '2.0' ? (req.socket as TLSSocket) : undefined;
    if (h1) unasked.delete(h1);
    inflight.add(res);
    if (h1) busy.set(h1, (busy.get(h1) ?? 0) + 1);
    let done = false;
    const finished = () => {
      if (done) return;
      done = true;
      inflight.delete(res);
      if (!h1) return;
      const n = (busy.get(h1) ?? 1) - 1;
      if (n > 0) busy.set(h1, n);
      else {
        busy.delete(h1);
        // As Go's http.Server.Shutdown: a connection that has become idle is closed.
        if (draining) h1.end();
      }
    };
    res.on('finish', finished);
    res.on('close', finished);
    handle(req, res);
  };

  const api = http2.createSecureServer(
    {
      cert: fs.readFileSync(path.join(o.pkiDir, 'tls.crt')),
      key: fs.readFileSync(path.join(o.pkiDir, 'tls.key')),
      ca: fs.readFileSync(path.join(o.pkiDir, 'ca.crt')),
      // HTTP/2 for clients that offer it (client-go does), HTTP/1.1 for the rest, as kube-apiserver.
      allowHTTP1: true,
      // Accept a client certificate when one is offered, as kube-apiserver does; never demand one.
      requestCert: true,
      rejectUnauthorized: false,
    },
    serve,
  );
  api.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  api.on('secureConnection', (s: TLSSocket) => {
    tlsSockets.add(s);
    if (s.alpnProtocol !== 'h2') unasked.set(s, Date.now());
    s.on('close', () => {
      tlsSockets.delete(s);
      unasked.delete(s);
    });
  });
  api.on('session', (s: http2.ServerHttp2Session) => {
    sessions.add(s);
    s.on('close', () => sessions.delete(s));
  });
  api.on('tlsClientError', () => {
    /* port probes and aborted handshakes are normal here */
  });
  api.on('sessionError', () => {
    /* a client gone mid-stream */
  });
  // No host: Node binds `::` with IPV6_V6ONLY off, which takes IPv4 too (as kube-apiserver's
  // --bind-address 0.0.0.0 does on a dual-stack host), or 0.0.0.0 where the host has no IPv6.
  const host = o.host;
  // The port bound (o.port may be 0), which a test reads from this line.
  api.listen(o.port, host, () => log(`apiserver stand-in listening on :${(api.address() as { port: number }).port}${lagMs ? `, its watch cache ${lagMs} ms behind` : ''}`));

  const setCacheLag = (ms: number) => {
    lagMs = ms;
    // The ticker follows the cache's ticks: start the next one on the new lag.
    if (ticker) {
      clearTimeout(ticker);
      ticker = nextTick();
    }
  };

  const control = http.createServer((req, res) => {
    const reply = (code: number, body: unknown) => {
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    const url = new URL(req.url ?? '/', 'http://control');
    if (req.method === 'POST' && req.url === '/control/ready') {
      ready = true;
      flood = false;
      log('made ready');
    } else if (req.method === 'POST' && req.url === '/control/readyz-flood') {
      flood = true;
      log('flooding: /readyz answers 200 and a body that never ends');
    } else if (req.method === 'POST' && req.url === '/control/unready') {
      ready = false;
      log('made unready');
    } else if (req.method === 'POST' && (req.url === '/control/anonymous-off' || req.url === '/control/anonymous-on')) {
      anonymous = req.url === '/control/anonymous-on';
      log(anonymous ? 'serving anonymous requests' : 'refusing anonymous requests (401)');
    } else if (req.method === 'POST' && url.pathname === '/control/lag') {
      const ms = url.searchParams.get('ms') ?? '';
      if (!/^\d{1,7}$/.test(ms)) return reply(400, { error: `lag: ms must be a whole number of milliseconds (0 to 9999999), got "${ms}"` });
      setCacheLag(Number(ms));
      log(Number(ms) ? `watch cache ${ms} ms behind` : 'watch cache in step');
    } else if (req.method === 'POST' && req.url === '/control/crash') {
      if (api.listening) api.close();
      for (const s of sockets) s.destroy();
      log(`crashed: not listening on :${o.port}`);
    } else if (req.method === 'POST' && req.url === '/control/recover') {
      if (!api.listening) api.listen(o.port, host, () => log(`recovered: listening on :${o.port}`));
    } else if (req.method === 'POST' && url.pathname === '/control/endpoints') {
      // ?set=ADDRESS:PORT,... (empty: none) answers that list for the kubernetes Service; no set: its own view again.
      const set = url.searchParams.get('set');
      try {
        endpointsOverride = set === null ? undefined : set.split(',').filter(Boolean).map(hostPort);
      } catch (e) {
        return reply(400, { error: (e as Error).message });
      }
      log(endpointsOverride ? `the kubernetes Service's endpoints answered as: ${set || 'none'}` : "the kubernetes Service's endpoints its own view again");
    } else if (req.method === 'GET' && req.url === '/control/lease') {
      // Peers ask it for the kubernetes Service's endpoints (see apiservers()).
      return reply(leased() ? 200 : 503, { leased: leased() });
    } else if (!(req.method === 'GET' && req.url === '/control/state')) {
      return reply(404, { error: 'POST /control/ready, /control/unready, /control/readyz-flood, /control/anonymous-off, /control/anonymous-on, /control/lag?ms=N, /control/crash, /control/recover, /control/endpoints[?set=A:P,...] or GET /control/state, /control/lease' });
    }
    reply(200, {
      name,
      ready: ready && !flood && !shuttingDown,
      anonymous,
      cacheLagMs: lagMs,
      cacheResourceVersion: cacheNow(),
      connections: sockets.size,
      watches: watchers.size + probes.size,
      requests,
    });
  });
  control.listen(o.controlPort, host);

  const close = () => {
    if (ticker) clearTimeout(ticker);
    if (peerTimer) clearInterval(peerTimer);
    clearInterval(epTimer);
    if (api.listening) api.close();
    control.close();
    control.closeAllConnections();
    for (const s of sockets) s.destroy();
  };

  /** After the delay: no new connections, GOAWAY, idle HTTP/1.1 closed, watches ended. */
  const drain = () => {
    draining = true;
    if (api.listening) api.close();
    // session.close(): GOAWAY now, the session ends once its open streams have.
    for (const s of sessions) if (!s.closed) s.close();
    for (const s of tlsSockets) if (s.alpnProtocol !== 'h2' && !busy.has(s) && !unasked.has(s)) s.end();
    // kube-apiserver ends its watches on shutdown (the cacher terminates its watchers): a clean end of stream.
    for (const w of watchers) {
      watchers.delete(w);
      w.res.end();
    }
    for (const r of probes) r.end();
    for (const w of epWatchers) w.res.end();
    epWatchers.clear();
  };

  let terminated: Promise<void> | undefined;
  const terminate = () =>
    (terminated ??= new Promise<void>((resolve) => {
      shuttingDown = true;
      log(`SIGTERM: /readyz is red, serving ${o.shutdownDelayMs} ms more`);
      setTimeout(() => {
        drain();
        log(`not accepting connections; waiting up to ${drainMs} ms for ${inflight.size} requests in flight`);
        const deadline = Date.now() + drainMs;
        const poll = () => {
          for (const [s, at] of unasked) {
            if (Date.now() - at < NEW_CONN_IDLE_MS) continue;
            unasked.delete(s);
            s.end();
          }
          if ((inflight.size || unasked.size) && Date.now() < deadline) return void setTimeout(poll, FRESH_POLL_MS);
          if (inflight.size) log(`${inflight.size} requests still in flight after ${drainMs} ms: cut`);
          close();
          log('stopped');
          resolve();
        };
        poll();
      }, o.shutdownDelayMs);
    }));
  return { api, control, close, terminate, setCacheLag };
}

function serveMirror(root: string): void {
  const log = (message: string) => process.stdout.write(`${new Date().toISOString()} mirror ${message}\n`);
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://mirror');
    const rel = path.posix.normalize(decodeURIComponent(url.pathname)).replace(/^\/+/, '');
    const file = path.join(root, rel);
    if (rel.startsWith('..') || !file.startsWith(root)) {
      res.writeHead(400).end('bad path\n');
      return;
    }
    fs.stat(file, (err, st) => {
      if (err || !st.isFile()) {
        res.writeHead(404, { 'content-type': 'text/plain' }).end(`not found: /${rel}\n`);
        log(`${req.method} /${rel} 404`);
        return;
      }
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': st.size });
      log(`${req.method} /${rel} 200 ${st.size}`);
      if (req.method === 'HEAD') return void res.end();
      fs.createReadStream(file).pipe(res);
    });
  });
  // IPv4 and IPv6 alike (see the apiserver's listen).
  server.listen(80, () => log(`mirror serving ${root} on :80`));
  process.on('SIGTERM', () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}

// Run as a program (in the lab's images), not when imported (unit tests import the history and the API).
/** ADDRESS:PORT, an IPv6 address in brackets. */
export function hostPort(text: string): { address: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(text.trim());
  if (!m) throw new Error(`not ADDRESS:PORT: ${text}`);
  return { address: m[1] ?? m[2]!, port: Number(m[3]) };
}

const USAGE = 'usage: standin.js apiserver [--cache-lag MS] [--shutdown-delay MS] [--drain MS] | standin.js mirror DIR\n';

/**
 * The apiserver's settings: `--cache-lag MS` (else STANDIN_CACHE_LAG_MS, else 0), `--shutdown-delay MS`
 * (STANDIN_SHUTDOWN_DELAY_MS, 0), `--drain MS` (STANDIN_DRAIN_MS, 10000); whole milliseconds, else an error.
 */
export function apiserverSettings(args: string[], env: NodeJS.ProcessEnv): { cacheLagMs: number; shutdownDelayMs: number; drainMs: number } {
  const flags: Record<string, [string, string]> = {
    '--cache-lag': ['STANDIN_CACHE_LAG_MS', '0'],
    '--shutdown-delay': ['STANDIN_SHUTDOWN_DELAY_MS', '0'],
    '--drain': ['STANDIN_DRAIN_MS', '10000'],
  };
  const given: Record<string, string> = {};
  for (let i = 0; i < args.length; i += 2) {
    const [flag, value] = [args[i]!, args[i + 1]];
    if (!Object.hasOwn(flags, flag) || value === undefined) throw new Error(`unknown argument or missing value: ${flag}`);
    given[flag] = value;
  }
  const ms = (flag: string) => {
    const [envName, fallback] = flags[flag]!;
    const v = given[flag] ?? env[envName] ?? fallback;
    if (!/^\d{1,7}$/.test(v)) throw new Error(`${flag} (or ${envName}) must be a whole number of milliseconds, got "${v}"`);
    return Number(v);
  };
  return { cacheLagMs: ms('--cache-lag'), shutdownDelayMs: ms('--shutdown-delay'), drainMs: ms('--drain') };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const mode = process.argv[2];
  if (mode === 'apiserver') {
    let settings: ReturnType<typeof apiserverSettings>;
    try {
      settings = apiserverSettings(process.argv.slice(3), process.env);
    } catch (e) {
      process.stderr.write(`standin.js: ${(e as Error).message}\n${USAGE}`);
      process.exit(2);
    }
    const standin = serveApiserver({
      name: process.env.STANDIN_NAME ?? 'standin',
      pkiDir: process.env.STANDIN_PKI_DIR ?? '/etc/k8s-ha-lab/pki',
      port: Number(process.env.STANDIN_PORT ?? '6443'),
      controlPort: Number(process.env.STANDIN_CONTROL_PORT ?? '8080'),
      ...(process.env.STANDIN_HOST ? { host: process.env.STANDIN_HOST } : {}),
      // The endpoint reconciler's view: STANDIN_SELF=ADDRESS:PORT, STANDIN_PEERS=ADDRESS:PORT,... (IPv6 in brackets).
      ...(process.env.STANDIN_SELF ? { self: hostPort(process.env.STANDIN_SELF) } : {}),
      ...(process.env.STANDIN_PEERS ? { peers: process.env.STANDIN_PEERS.split(',').filter(Boolean).map(hostPort) } : {}),
      ...settings,
    });
    process.on('SIGTERM', () => void standin.terminate().then(() => process.exit(0)));
  } else if (mode === 'mirror') serveMirror(path.resolve(process.argv[3] ?? '/srv/mirror'));
  else {
    process.stderr.write(USAGE);
    process.exit(2);
  }
}
