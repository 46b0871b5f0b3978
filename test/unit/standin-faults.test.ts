/**
 * The two ways a real kube-apiserver is harder on clients than a stand-in used to be: its watch cache
 * follows etcd a little behind (a stand-in with a cache lag), and its shutdown sequence on SIGTERM
 * (/readyz red, a delay, then GOAWAY, watches ended, in-flight requests drained, exit). The lag on a
 * stand-in on loopback; the shutdown on one run as a program, as systemd runs it, and sent SIGTERM.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { transformSync } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { httpsGet, ProbeOversized } from '../../src/connect/https-probe.js';
import { createCa, issueCertificate } from '../../src/lab/pki.js';
import { apiserverSettings, eventAt, podsAt, rvAt, serveApiserver, TICK_MS, type Pod, type Standin } from '../../src/lab/standin.js';

const PODS_PATH = '/api/v1/namespaces/default/pods';
const LAG = 2000;

async function pkiDir(): Promise<{ dir: string; caPem: string }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-standin-faults-'));
  const ca = await createCa('standin faults test CA');
  const leaf = await issueCertificate(ca, { commonName: 'standin', dnsNames: ['kubernetes'], ipAddresses: ['127.0.0.1'], usage: 'server' });
  fs.writeFileSync(path.join(dir, 'ca.crt'), ca.cert);
  fs.writeFileSync(path.join(dir, 'tls.crt'), leaf.cert);
  fs.writeFileSync(path.join(dir, 'tls.key'), leaf.key);
  return { dir, caPem: ca.cert };
}

interface Got {
  status: number;
  body: string;
  /** Each line of the body and when it came (ms since the epoch). */
  lines: { text: string; at: number }[];
  startedAt: number;
  endedAt: number;
}

/** GET over an HTTP/2 session (a new one unless given): status, body, and when each line came, until the stream ends. */
function get(port: number, caPem: string, pathname: string, session?: http2.ClientHttp2Session): Promise<Got> {
  return new Promise((resolve, reject) => {
    const startedAt = Date.now();
    const s = session ?? http2.connect(`https://127.0.0.1:${port}`, { ca: caPem, servername: 'kubernetes' });
    if (!session) s.on('error', reject);
    const req = s.request({ ':path': pathname, accept: 'application/json' });
    let status = 0;
    let body = '';
    let buf = '';
    const lines: Got['lines'] = [];
    req.on('response', (h) => (status = Number(h[':status'])));
    req.setEncoding('utf8');
    req.on('data', (d: string) => {
      const at = Date.now();
      body += d;
      buf += d;
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        if (buf.slice(0, i)) lines.push({ text: buf.slice(0, i), at });
        buf = buf.slice(i + 1);
      }
    });
    req.on('error', reject);
    req.on('end', () => {
      if (buf) lines.push({ text: buf, at: Date.now() });
      if (!session) s.close();
      resolve({ status, body, lines, startedAt, endedAt: Date.now() });
    });
    req.end();
  });
}

type Event = { type: string; object: Pod & { code?: number; reason?: string; details?: { causes?: { reason: string }[] } } };
const events = (g: Got) => g.lines.map((l) => ({ ...(JSON.parse(l.text) as Event), at: l.at }));

function post(port: number, p: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: p }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('a stand-in whose watch cache is behind etcd (--cache-lag)', () => {
  let pki: { dir: string; caPem: string };
  let standin: Standin;
  let port: number;
  let controlPort: number;

  beforeAll(async () => {
    pki = await pkiDir();
    standin = serveApiserver({ name: 'lagging', pkiDir: pki.dir, port: 0, controlPort: 0, host: '127.0.0.1', shutdownDelayMs: 0, cacheLagMs: LAG, bookmarkMs: 600, log: () => {} });
    await new Promise((r) => (standin.api.listening ? r(undefined) : standin.api.once('listening', r)));
    await new Promise((r) => (standin.control.listening ? r(undefined) : standin.control.once('listening', r)));
    port = (standin.api.address() as { port: number }).port;
    controlPort = (standin.control.address() as { port: number }).port;
  });
  afterAll(() => {
    standin.close();
    fs.rmSync(pki.dir, { recursive: true, force: true });
  });

  it('a list at the clock\'s resourceVersion waits for the cache to reach it, then answers the history there', async () => {
    const rv = rvAt(Date.now());
    const r = await get(port, pki.caPem, `${PODS_PATH}?resourceVersion=${rv}`);
    expect(r.status).toBe(200);
    const l = JSON.parse(r.body) as { metadata: { resourceVersion: string }; items: Pod[] };
    const at = Number(l.metadata.resourceVersion);
    expect(at).toBeGreaterThanOrEqual(rv);
    expect(l.items).toEqual(podsAt(at));
    // The cache had rv only LAG after the clock did.
    expect(r.endedAt).toBeGreaterThanOrEqual(rv * TICK_MS + LAG);
  });

  it('a list at resourceVersion "0" gets the cache as it is, LAG behind the clock', async () => {
    const r = await get(port, pki.caPem, `${PODS_PATH}?resourceVersion=0`);
    const l = JSON.parse(r.body) as { metadata: { resourceVersion: string }; items: Pod[] };
    const at = Number(l.metadata.resourceVersion);
    expect(at).toBeLessThanOrEqual(rvAt(r.endedAt - LAG));
    expect(l.items).toEqual(podsAt(at));
  });

  it('a list or a get 5 s ahead of the cache waits, then gets 504 Too large resource version (ResourceVersionTooLarge), as from kube-apiserver', async () => {
    const rv = rvAt(Date.now() - LAG) + 5000 / TICK_MS;
    const [l, g] = await Promise.all([get(port, pki.caPem, `${PODS_PATH}?resourceVersion=${rv}`), get(port, pki.caPem, `${PODS_PATH}/lab-pod-1?resourceVersion=${rv}`)]);
    for (const r of [l, g]) {
      expect(r.status).toBe(504);
      expect(JSON.parse(r.body)).toMatchObject({
        kind: 'Status',
        code: 504,
        reason: 'Timeout',
        message: expect.stringMatching(new RegExp(`^Too large resource version: ${rv}, current: \\d+$`)),
        details: { causes: [{ reason: 'ResourceVersionTooLarge' }] },
      });
      expect(r.endedAt - r.startedAt).toBeGreaterThanOrEqual(2500);
    }
  });

  it('a watch from an older resourceVersion replays the history up to the cache, then each event as the cache reaches it', async () => {
    const from = rvAt(Date.now()) - 40;
    const w = await get(port, pki.caPem, `${PODS_PATH}?watch=1&resourceVersion=${from}&allowWatchBookmarks=true&timeoutSeconds=3`);
    expect(w.status).toBe(200);
    const all = events(w);
    const changes = all.filter((e) => e.type !== 'BOOKMARK');
    // About 32 at once (the cache is 8 events behind), then a dozen more in 3 s.
    expect(changes.length).toBeGreaterThan(36);
    expect(changes.map(({ type, object }) => ({ type, object }))).toEqual(changes.map((_, i) => eventAt(from + 1 + i)));
    for (const e of changes) expect(e.at).toBeGreaterThanOrEqual(Number(e.object.metadata.resourceVersion) * TICK_MS + LAG);
    for (const b of all.filter((e) => e.type === 'BOOKMARK')) {
      const before = all.slice(0, all.indexOf(b)).filter((e) => e.type !== 'BOOKMARK').at(-1)!;
      expect(b.object.metadata.resourceVersion).toBe(before.object.metadata.resourceVersion);
    }
  });

  it('a watch 5 s ahead of the cache starts at once, as kube-apiserver\'s cacher starts it (no ERROR): its events begin after its resourceVersion, when the cache gets there', async () => {
    const from = rvAt(Date.now() - LAG) + 5000 / TICK_MS;
    const w = await get(port, pki.caPem, `${PODS_PATH}?watch=1&resourceVersion=${from}&allowWatchBookmarks=true&timeoutSeconds=6`);
    expect(w.status).toBe(200);
    const all = events(w);
    expect(all.filter((e) => e.type === 'ERROR')).toEqual([]);
    const changes = all.filter((e) => e.type !== 'BOOKMARK');
    expect(changes.length).toBeGreaterThanOrEqual(1);
    expect(changes.map(({ type, object }) => ({ type, object }))).toEqual(changes.map((_, i) => eventAt(from + 1 + i)));
    for (const e of changes) expect(e.at).toBeGreaterThanOrEqual(Number(e.object.metadata.resourceVersion) * TICK_MS + LAG);
    // No bookmark goes back before the resourceVersion the watch asked for.
    for (const b of all.filter((e) => e.type === 'BOOKMARK')) expect(Number(b.object.metadata.resourceVersion)).toBeGreaterThan(from);
   }, 10_000);

  it('lag MS on the control port sets the lag; raising it stalls the cache, which never goes back; a bad value is refused', async () => {
    const state = async () => JSON.parse((await post(controlPort, '/control/lag?ms=' + LAG)).body) as { cacheLagMs: number; cacheResourceVersion: number };
    expect((await post(controlPort, '/control/lag?ms=0')).status).toBe(200);
    const inStep = rvAt(Date.now());
    const s = await state();
    expect(s.cacheLagMs).toBe(LAG);
    expect(s.cacheResourceVersion).toBeGreaterThanOrEqual(inStep);
    const r = await post(controlPort, '/control/lag?ms=soon');
    expect(r.status).toBe(400);
    expect(r.body).toMatch(/whole number of milliseconds/);
  });
});

describe('the stand-in\'s settings', () => {
  it('from arguments, else the environment, else the defaults; anything but whole milliseconds is an error', () => {
    expect(apiserverSettings([], {})).toEqual({ cacheLagMs: 0, shutdownDelayMs: 0, drainMs: 10000 });
    expect(apiserverSettings(['--cache-lag', '1500', '--drain', '3000'], { STANDIN_CACHE_LAG_MS: '9', STANDIN_SHUTDOWN_DELAY_MS: '5000' })).toEqual({
      cacheLagMs: 1500,
      shutdownDelayMs: 5000,
      drainMs: 3000,
    });
    expect(() => apiserverSettings(['--cache-lag', '-1'], {})).toThrow(/--cache-lag \(or STANDIN_CACHE_LAG_MS\) must be a whole number/);
    expect(() => apiserverSettings(['--lag', '1'], {})).toThrow(/unknown argument/);
  });
});

describe('SIGTERM: kube-apiserver\'s shutdown sequence', () => {
  const DELAY = 2000;
  const DRAIN = 3000;
  let pki: { dir: string; caPem: string };
  let child: ChildProcess;
  let port: number;
  let exited: Promise<{ code: number | null; at: number }>;

  beforeAll(async () => {
    pki = await pkiDir();
    // The program as the lab's image holds it: one file of plain JavaScript with only Node's imports.
    const js = transformSync(fs.readFileSync(new URL('../../src/lab/standin.ts', import.meta.url), 'utf8'), { loader: 'ts', format: 'esm' }).code;
    const program = path.join(pki.dir, 'standin.mjs');
    fs.writeFileSync(program, js);
    child = spawn(process.execPath, [program, 'apiserver', '--shutdown-delay', String(DELAY), '--drain', String(DRAIN)], {
      env: { ...process.env, STANDIN_NAME: 'stopping', STANDIN_PKI_DIR: pki.dir, STANDIN_PORT: '0', STANDIN_CONTROL_PORT: '0', STANDIN_HOST: '127.0.0.1' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    exited = new Promise((resolve) => child.on('exit', (code) => resolve({ code, at: Date.now() })));
    port = await new Promise<number>((resolve, reject) => {
      let out = '';
      child.stdout!.setEncoding('utf8');
      child.stdout!.on('data', (d: string) => {
        out += d;
        const m = /listening on :(\d+)/.exec(out);
        if (m) resolve(Number(m[1]));
      });
      child.on('exit', () => reject(new Error(`the stand-in exited: ${out}`)));
    });
  });
  afterAll(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
    fs.rmSync(pki.dir, { recursive: true, force: true });
  });

  it('/readyz red at once while the API is served through the delay; then GOAWAY, watches ended, in-flight requests finished, new connections refused, exit', async () => {
    const open = http2.connect(`https://127.0.0.1:${port}`, { ca: pki.caPem, servername: 'kubernetes' });
    open.on('error', () => {});
    let goawayAt: number | undefined;
    open.on('goaway', () => (goawayAt = Date.now()));
    const watch = get(port, pki.caPem, `${PODS_PATH}?watch=1&allowWatchBookmarks=true`, open);
    await new Promise((r) => setTimeout(r, 300));

    const termAt = Date.now();
    child.kill('SIGTERM');
    // In flight across the end of the delay: a list the cache answers 2.5 s from now, on the session that gets GOAWAY.
    const slow = get(port, pki.caPem, `${PODS_PATH}?resourceVersion=${rvAt(Date.now()) + 10}`, open);
    await new Promise((r) => setTimeout(r, 200));

    const readyz = await get(port, pki.caPem, '/readyz');
    expect(readyz.status).toBe(500);
    expect(readyz.body).toMatch(/\[-\]shutdown failed/);
    const api = await get(port, pki.caPem, '/api');
    expect(api.status).toBe(200);
    const l = await get(port, pki.caPem, PODS_PATH);
    expect(l.status).toBe(200);
    expect(JSON.parse(l.body).kind).toBe('PodList');
    // All of that while the delay runs.
    expect(goawayAt).toBeUndefined();

    const w = await watch;
    expect(w.status).toBe(200);
    expect(w.endedAt).toBeGreaterThanOrEqual(termAt + DELAY);
    expect(events(w).filter((e) => e.type === 'ERROR')).toEqual([]);
    expect(goawayAt).toBeGreaterThanOrEqual(termAt + DELAY);

    const refused = await new Promise<string>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => resolve('connected'));
      s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    });
    expect(refused).toBe('ECONNREFUSED');

    const s = await slow;
    expect(s.status).toBe(200);
    expect(JSON.parse(s.body).kind).toBe('PodList');
    expect(s.endedAt).toBeGreaterThan(goawayAt!);

    const exit = await exited;
    expect(exit.code).toBe(0);
    expect(exit.at - termAt).toBeLessThan(DELAY + DRAIN + 2000);
    open.destroy();
  }, 20_000);
});

describe('a stand-in whose /readyz floods (lab master NAME readyz-flood)', () => {
  it('answers 200 and a body that never ends: the probe stops past 64 KiB and says so; ready puts it back', async () => {
    const pki = await pkiDir();
    const standin = serveApiserver({ name: 'flooding', pkiDir: pki.dir, port: 0, controlPort: 0, host: '127.0.0.1', shutdownDelayMs: 0, log: () => {} });
    try {
      await new Promise((r) => (standin.api.listening ? r(undefined) : standin.api.once('listening', r)));
      await new Promise((r) => (standin.control.listening ? r(undefined) : standin.control.once('listening', r)));
      const port = (standin.api.address() as { port: number }).port;
      const controlPort = (standin.control.address() as { port: number }).port;
      const probe = () => httpsGet({ address: '127.0.0.1', port }, { path: '/readyz', ca: pki.caPem, servername: 'kubernetes', timeoutMs: 5000 });
      expect((await post(controlPort, '/control/readyz-flood')).status).toBe(200);
      await expect(probe()).rejects.toThrow(ProbeOversized);
      await expect(probe()).rejects.toThrow(/^GET \/readyz answered HTTP 200 from standin with more than 64 KiB/);
      expect((await post(controlPort, '/control/ready')).status).toBe(200);
      expect(await probe()).toMatchObject({ status: 200, body: 'ok' });
    } finally {
      standin.close();
      fs.rmSync(pki.dir, { recursive: true, force: true });
    }
  });
});
