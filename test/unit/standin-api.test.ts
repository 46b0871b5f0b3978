/**
 * The apiserver stand-in's slice of the Kubernetes API: its history as plain data (a list at any
 * resourceVersion is what the watch events since an earlier list make of it), the list and watch
 * rules client-go relies on, and the server itself on loopback over HTTP/2, as client-go speaks.
 */
import fs from 'node:fs';
import http2 from 'node:http2';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCa, issueCertificate } from '../../src/lab/pki.js';
import { freeLoopbackPort } from '../helpers/ports.js';
import { ENDPOINTS_PATH, ENDPOINTSLICES_PATH, fromEndpoints, fromEndpointSlices } from '../../src/cluster/control-plane.js';
import {
  age,
  eventAt,
  LIFE,
  list,
  podsAt,
  ENDPOINT_TTL_MS,
  podsPath,
  PODS,
  rvAt,
  serveApiserver,
  TICK_MS,
  watchStart,
  WINDOW,
  type Pod,
  type Standin,
} from '../../src/lab/standin.js';

const NOW = rvAt(Date.parse('2026-12-02T12:00:00Z'));
const q = (s: string) => new URLSearchParams(s);
const names = (pods: Pod[]) => pods.map((p) => p.metadata.name);

describe('the history every stand-in serves', () => {
  it('a list at a later resourceVersion is the earlier list with the watch events between applied', () => {
    const state = new Map(podsAt(NOW).map((p) => [p.metadata.name, p]));
    for (let rv = NOW + 1; rv <= NOW + 3 * LIFE * PODS; rv++) {
      const e = eventAt(rv);
      expect(e.object.metadata.resourceVersion).toBe(String(rv));
      if (e.type === 'ADDED') expect(state.has(e.object.metadata.name)).toBe(false);
      else expect(state.get(e.object.metadata.name)?.metadata.uid).toBe(e.object.metadata.uid);
      if (e.type === 'DELETED') state.delete(e.object.metadata.name);
      else state.set(e.object.metadata.name, e.object);
      if (rv % 37 === 0) {
        expect(podsAt(rv)).toEqual([...state.values()].sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : 1)));
      }
    }
  });

  it('each pod lives ADDED, MODIFIED..., DELETED, and comes back with a new uid; the pods never all go at once', () => {
    const lives = new Map<string, string[]>();
    const uids = new Set<string>();
    for (let rv = NOW; rv < NOW + 2 * LIFE * PODS; rv++) {
      expect(podsAt(rv).length).toBeGreaterThanOrEqual(PODS - 1);
      const e = eventAt(rv);
      if (e.object.metadata.name !== 'lab-pod-3') continue;
      const uid = e.object.metadata.uid;
      uids.add(uid);
      lives.set(uid, [...(lives.get(uid) ?? []), e.type]);
    }
    const whole = [...lives.values()].filter((types) => types[0] === 'ADDED' && types.at(-1) === 'DELETED');
    expect(whole.length).toBeGreaterThanOrEqual(1);
    expect(whole[0]).toEqual(['ADDED', ...Array(LIFE - 2).fill('MODIFIED'), 'DELETED']);
    expect(uids.size).toBeGreaterThanOrEqual(2);
  });

  it('resourceVersions follow the clock: one event every tick', () => {
    expect(rvAt(Date.parse('2026-12-02T12:00:01Z')) - NOW).toBe(1000 / TICK_MS);
  });
});

describe('list', () => {
  it('answers a PodList at the current resourceVersion', () => {
    const a = list(q(''), 'default', NOW);
    expect(a.status).toBe(200);
    const body = a.body as { kind: string; metadata: { resourceVersion: string }; items: Pod[] };
    expect(body.kind).toBe('PodList');
    expect(body.metadata.resourceVersion).toBe(String(NOW));
    expect(body.items).toEqual(podsAt(NOW));
    expect((list(q(''), 'kube-system', NOW).body as { items: Pod[] }).items).toEqual([]);
  });

  it('limit and continue page one consistent snapshot, even while the clock moves on', () => {
    const pages: Pod[] = [];
    let token = '';
    let now = NOW;
    for (let i = 0; i < 10; i++) {
      const a = list(q(`limit=3${token ? `&continue=${token}` : ''}`), 'default', now);
      expect(a.status).toBe(200);
      const body = a.body as { metadata: { continue?: string; resourceVersion: string }; items: Pod[] };
      expect(body.metadata.resourceVersion).toBe(String(NOW));
      pages.push(...body.items);
      if (!body.metadata.continue) break;
      token = body.metadata.continue;
      now += 40;
    }
    expect(names(pages)).toEqual(names(podsAt(NOW)));
    expect(list(q(`limit=3&continue=${token}`), 'default', NOW + WINDOW + 1).status).toBe(410);
    expect(list(q('continue=nonsense'), 'default', NOW).status).toBe(400);
  });

  it('resourceVersion and resourceVersionMatch: Exact in the window, 410 Expired before it, 504 ahead of the clock', () => {
    const exact = list(q(`resourceVersion=${NOW - 100}&resourceVersionMatch=Exact`), 'default', NOW);
    expect((exact.body as { items: Pod[] }).items).toEqual(podsAt(NOW - 100));
    const old = list(q(`resourceVersion=${NOW - WINDOW - 1}&resourceVersionMatch=Exact`), 'default', NOW);
    expect(old.status).toBe(410);
    expect(old.body).toMatchObject({ kind: 'Status', reason: 'Expired', code: 410 });
    expect((list(q(`resourceVersion=${NOW - 100}`), 'default', NOW).body as { metadata: { resourceVersion: string } }).metadata.resourceVersion).toBe(String(NOW));
    expect(list(q(`resourceVersion=${NOW + 1}`), 'default', NOW).status).toBe(504);
    expect(list(q('resourceVersion=abc'), 'default', NOW).status).toBe(400);
    expect(list(q('resourceVersionMatch=Exact'), 'default', NOW).status).toBe(400);
  });
});

describe('watch', () => {
  it('from a resourceVersion: nothing to replay, the events after it follow', () => {
    expect(watchStart(q(`resourceVersion=${NOW - 5}`), 'default', NOW)).toEqual({ events: [], from: NOW - 5 });
  });

  it('without one: the pods now, as ADDED', () => {
    const w = watchStart(q(''), 'default', NOW) as { events: { type: string; object: Pod }[]; from: number };
    expect(w.from).toBe(NOW);
    expect(w.events.map((e) => e.type)).toEqual(podsAt(NOW).map(() => 'ADDED'));
    expect(w.events.map((e) => e.object)).toEqual(podsAt(NOW));
  });

  it('too old: one ERROR event carrying a 410 Expired Status, and the stream ends (as the watch cache answers)', () => {
    const w = watchStart(q(`resourceVersion=${NOW - WINDOW - 1}`), 'default', NOW) as { events: unknown[]; end?: boolean };
    expect(w.end).toBe(true);
    expect(w.events).toEqual([
      { type: 'ERROR', object: expect.objectContaining({ kind: 'Status', status: 'Failure', reason: 'Expired', code: 410 }) },
    ]);
  });
});

describe('paths and printing', () => {
  it('knows the pods paths, and nothing else', () => {
    expect(podsPath('/api/v1/pods')).toEqual({});
    expect(podsPath('/api/v1/namespaces/default/pods')).toEqual({ namespace: 'default' });
    expect(podsPath('/api/v1/namespaces/default/pods/lab-pod-1')).toEqual({ namespace: 'default', name: 'lab-pod-1' });
    expect(podsPath('/api/v1/namespaces/default/configmaps')).toBeUndefined();
  });

  it('prints ages as kubectl does', () => {
    const h = 3600;
    expect([5, 119, 125, 600, 2 * h + 300, 4.5 * h, 9 * h, 77 * h, 20 * 24 * h].map(age)).toEqual(['5s', '119s', '2m5s', '10m', '125m', '4h30m', '9h', '3d5h', '20d']);
  });
});

describe('the stand-in on loopback, over HTTP/2', () => {
  let dir: string;
  let standin: Standin;
  let caPem: string;
  let port: number;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-standin-'));
    const ca = await createCa('standin test CA');
    const leaf = await issueCertificate(ca, { commonName: 'standin', dnsNames: ['kubernetes'], ipAddresses: ['127.0.0.1'], usage: 'server' });
    fs.writeFileSync(path.join(dir, 'ca.crt'), ca.cert);
    fs.writeFileSync(path.join(dir, 'tls.crt'), leaf.cert);
    fs.writeFileSync(path.join(dir, 'tls.key'), leaf.key);
    caPem = ca.cert;
    standin = serveApiserver({ name: 'loopback-1', pkiDir: dir, port: 0, controlPort: 0, host: '127.0.0.1', shutdownDelayMs: 0, bookmarkMs: 600, log: () => {} });
    await new Promise((r) => (standin.api.listening ? r(undefined) : standin.api.once('listening', r)));
    port = (standin.api.address() as { port: number }).port;
  });
  afterAll(() => {
    standin.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** GET over one HTTP/2 session: status, headers and the body's lines as they come, until the stream ends. */
  function get(pathname: string, accept = 'application/json'): Promise<{ status: number; standin: string; lines: string[]; endedAfterMs: number }> {
    return new Promise((resolve, reject) => {
      const t0 = Date.now();
      const session = http2.connect(`https://127.0.0.1:${port}`, { ca: caPem, servername: 'kubernetes' });
      session.on('error', reject);
      const req = session.request({ ':path': pathname, accept });
      let head: http2.IncomingHttpHeaders = {};
      let body = '';
      req.on('response', (h) => (head = h));
      req.setEncoding('utf8');
      req.on('data', (d: string) => (body += d));
      req.on('end', () => {
        session.close();
        resolve({ status: Number(head[':status']), standin: String(head['x-standin']), lines: body.split('\n').filter(Boolean), endedAfterMs: Date.now() - t0 });
      });
      req.end();
    });
  }

  it('discovery names the core group and its one resource, pods', async () => {
    const api = await get('/api');
    expect(JSON.parse(api.lines[0]!)).toMatchObject({ kind: 'APIVersions', versions: ['v1'] });
    expect(JSON.parse((await get('/apis')).lines[0]!)).toEqual({ kind: 'APIGroupList', apiVersion: 'v1', groups: [] });
    const v1 = JSON.parse((await get('/api/v1')).lines[0]!);
    expect(v1.resources.map((r: { name: string; verbs: string[] }) => [r.name, r.verbs])).toEqual([['pods', ['get', 'list', 'watch']]]);
    expect(api.standin).toBe('loopback-1');
  });

  it('a watch from a list streams every event after it, each once and in order, then ends at timeoutSeconds', async () => {
    const l = JSON.parse((await get('/api/v1/namespaces/default/pods')).lines[0]!);
    const from = Number(l.metadata.resourceVersion);
    const w = await get(`/api/v1/namespaces/default/pods?watch=1&resourceVersion=${from}&allowWatchBookmarks=true&timeoutSeconds=2`);
    expect(w.status).toBe(200);
    expect(w.endedAfterMs).toBeGreaterThanOrEqual(1900);
    const events = w.lines.map((x) => JSON.parse(x) as { type: string; object: Pod }).filter((e) => e.type !== 'BOOKMARK');
    const rvs = events.map((e) => Number(e.object.metadata.resourceVersion));
    expect(rvs.length).toBeGreaterThanOrEqual(4);
    expect(rvs).toEqual(rvs.map((_, i) => from + 1 + i));
    expect(events).toEqual(rvs.map((rv) => eventAt(rv)));
  });

  it('a watch from an older resourceVersion first replays what it missed, at once; bookmarks carry the resourceVersion on', async () => {
    const from = rvAt(Date.now()) - 40;
    const w = await get(`/api/v1/namespaces/default/pods?watch=true&resourceVersion=${from}&allowWatchBookmarks=true&timeoutSeconds=2`);
    const events = w.lines.map((x) => JSON.parse(x) as { type: string; object: Pod });
    const changes = events.filter((e) => e.type !== 'BOOKMARK');
    expect(changes.slice(0, 40)).toEqual(Array.from({ length: 40 }, (_, i) => eventAt(from + 1 + i)));
    const bookmarks = events.filter((e) => e.type === 'BOOKMARK');
    expect(bookmarks.length).toBeGreaterThanOrEqual(2);
    for (const b of bookmarks) {
      // A bookmark names the newest resourceVersion sent before it.
      const before = events.slice(0, events.indexOf(b)).filter((e) => e.type !== 'BOOKMARK').at(-1)!;
      expect(b.object.metadata.resourceVersion).toBe(before.object.metadata.resourceVersion);
    }
  });

  it('a watch too old gets a 200 stream with one ERROR event, 410 Expired, over HTTP/2', async () => {
    const w = await get('/api/v1/namespaces/default/pods?watch=1&resourceVersion=5');
    expect(w.status).toBe(200);
    expect(w.lines.map((l) => JSON.parse(l))).toEqual([{ type: 'ERROR', object: expect.objectContaining({ kind: 'Status', code: 410, reason: 'Expired' }) }]);
  });

  it('kubectl asking for a Table gets one: NAME READY STATUS RESTARTS AGE', async () => {
    const t = JSON.parse((await get('/api/v1/namespaces/default/pods', 'application/json;as=Table;v=v1;g=meta.k8s.io,application/json')).lines[0]!);
    expect(t.kind).toBe('Table');
    expect(t.columnDefinitions.map((c: { name: string }) => c.name)).toEqual(['Name', 'Ready', 'Status', 'Restarts', 'Age']);
    expect(t.rows.map((r: { cells: unknown[] }) => r.cells[0])).toEqual(names(podsAt(Number(t.metadata.resourceVersion))));
  });

  it('what it does not implement it refuses, saying so, rather than ignoring', async () => {
    const sel = await get('/api/v1/namespaces/default/pods?labelSelector=app%3Dx');
    expect(sel.status).toBe(400);
    expect(JSON.parse(sel.lines[0]!).message).toMatch(/labelSelector is not implemented/);
    expect((await get('/api/v1/namespaces/default/configmaps')).status).toBe(404);
  });
});

describe("the kubernetes Service's endpoints, as the stand-ins keep them", () => {
  let dir: string;
  const standins: Standin[] = [];
  let caPem: string;
  let client: { cert: string; key: string };
  let port = 0;
  let controlPort = 0;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-standin-ep-'));
    const ca = await createCa('standin test CA');
    const leaf = await issueCertificate(ca, { commonName: 'standin', dnsNames: ['kubernetes'], ipAddresses: ['127.0.0.1', '127.0.0.2'], usage: 'server' });
    fs.writeFileSync(path.join(dir, 'ca.crt'), ca.cert);
    fs.writeFileSync(path.join(dir, 'tls.crt'), leaf.cert);
    fs.writeFileSync(path.join(dir, 'tls.key'), leaf.key);
    caPem = ca.cert;
    client = await issueCertificate(ca, { commonName: 'lab-admin', dnsNames: [], ipAddresses: [], usage: 'client' });
    // Two apiservers on one port (and one control port), on two loopback addresses, each the other's peer.
    port = await freeLoopbackPort();
    controlPort = await freeLoopbackPort();
    for (const [i, address] of ['127.0.0.1', '127.0.0.2'].entries()) {
      const other = i === 0 ? '127.0.0.2' : '127.0.0.1';
      const s = serveApiserver({ name: `ep-${i + 1}`, pkiDir: dir, port, controlPort, host: address, shutdownDelayMs: 0, self: { address, port }, peers: [{ address: other, port }], log: () => {} });
      await new Promise((r) => (s.api.listening ? r(undefined) : s.api.once('listening', r)));
      standins.push(s);
    }
  });
  afterAll(() => {
    standins.forEach((s) => s.close());
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const ask = (address: string, pathname: string, as: { cert: string; key: string } | null = client) =>
    new Promise<unknown>((resolve, reject) => {
      const session = http2.connect(`https://${address}:${port}`, { ca: caPem, ...(as ?? {}) });
      session.on('error', reject);
      const req = session.request({ ':path': pathname });
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (d: string) => (body += d));
      req.on('end', () => {
        session.close();
        resolve(JSON.parse(body));
      });
      req.end();
    });
  const named = async (address: string) => fromEndpointSlices(await ask(address, ENDPOINTSLICES_PATH)).map((a) => `${a.address}:${a.port}`);

  it('every apiserver that is up, in the EndpointSlices and the Endpoints object alike; one gone drops out within the lease', async () => {
    const both = [`127.0.0.1:${port}`, `127.0.0.2:${port}`];
    // Each has asked the other within a second or two.
    let seen: string[] = [];
    for (let i = 0; i < 40 && seen.length < 2; i++) seen = await new Promise((r) => setTimeout(r, 100)).then(() => named('127.0.0.1'));
    expect(seen).toEqual(both);
    expect(await named('127.0.0.2')).toEqual(both);
    expect(fromEndpoints(await ask('127.0.0.1', ENDPOINTS_PATH)).map((a) => `${a.address}:${a.port}`)).toEqual(both);
    // Another Service's slices are not the stand-in's to serve.
    expect(await ask('127.0.0.1', '/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dother')).toMatchObject({ items: [] });
    // RBAC as a cluster has it: nobody anonymous lists them.
    expect(await ask('127.0.0.1', ENDPOINTSLICES_PATH, null)).toMatchObject({ code: 403, message: expect.stringContaining('User "system:anonymous" cannot list resource "endpointslices"') });
    // The second goes away: the first stops naming it once its last ready answer is ENDPOINT_TTL_MS old.
    const gone = Date.now();
    standins[1]!.close();
    while ((await named('127.0.0.1')).length > 1 && Date.now() - gone < ENDPOINT_TTL_MS + 3000) await new Promise((r) => setTimeout(r, 200));
    expect(await named('127.0.0.1')).toEqual([`127.0.0.1:${port}`]);
    expect(Date.now() - gone).toBeLessThanOrEqual(ENDPOINT_TTL_MS + 3000);
  }, 20_000);
});
