/**
 * kube-lb's data plane with real sockets on loopback: three TLS apiserver
 * stand-ins, the balancer in front, real requests and watches through it.
 * (No lab needed: this is the component alone.)
 */
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createCa, issueCertificate } from '../../src/lab/pki.js';
import { Checker } from '../../src/proxy/checker.js';
import { proxyConfigSchema } from '../../src/proxy/config.js';
import { PID_HEADER, readiness, waitReady } from '../../src/proxy/readiness.js';
import { Balancer, backendKey } from '../../src/proxy/server.js';

interface Standin {
  name: string;
  port: number;
  ready: boolean;
  server: https.Server;
}

let ca: { cert: string; key: string };
let caFile: string;
const standins: Standin[] = [];
const logs: string[] = [];
let lb: Balancer;
let checker: Checker;
let lbPort: number;

async function startStandin(name: string): Promise<Standin> {
  const leaf = await issueCertificate(ca, { commonName: name, dnsNames: ['localhost', 'kubernetes'], ipAddresses: ['127.0.0.1'], usage: 'server' });
  const s: Standin = { name, port: 0, ready: true, server: undefined as never };
  s.server = https.createServer({ cert: leaf.cert, key: leaf.key }, (req, res) => {
    if (req.url === '/readyz') return void res.writeHead(s.ready ? 200 : 500).end(s.ready ? 'ok' : 'not ready');
    if (req.url === '/watch') {
      res.writeHead(200);
      const t = setInterval(() => res.write(`${name}\n`), 100);
      res.on('close', () => clearInterval(t));
      return;
    }
    res.writeHead(200).end(name);
  });
  await new Promise<void>((r) => s.server.listen(0, '127.0.0.1', () => r()));
  s.port = (s.server.address() as net.AddressInfo).port;
  return s;
}

function config(backends: Standin[], extra: Record<string, unknown> = {}) {
  const parsed = proxyConfigSchema.parse({
    backends: backends.map((s) => ({ name: s.name, address: '127.0.0.1', port: s.port })),
    active: { interval: '100ms', timeout: '500ms', rise: 1, fall: 1, caFile, serverName: 'kubernetes' },
    ...extra,
  });
  // Port 0 (any free port) is what tests on loopback need and what a config file may not say.
  return { ...parsed, listen: '127.0.0.1:0', admin: '127.0.0.1:0' };
}

function get(p = '/version'): Promise<string> {
  return new Promise((resolve, reject) => {
    https
      .get({ host: '127.0.0.1', port: lbPort, path: p, ca: ca.cert, servername: 'kubernetes', agent: false }, (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve(body));
      })
      .on('error', reject);
  });
}

/** A watch through the balancer: which stand-in answers, and when it is closed. */
function watch(): Promise<{ who: string; closed: Promise<void>; stop: () => void }> {
  return new Promise((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', port: lbPort, path: '/watch', ca: ca.cert, servername: 'kubernetes', agent: false }, (res) => {
      res.once('data', (c: Buffer) => {
        const closed = new Promise<void>((r) => res.once('close', () => r()));
        resolve({ who: c.toString().trim().split('\n')[0]!, closed, stop: () => req.destroy() });
      });
    });
    req.on('error', reject);
  });
}

const until = async (f: () => boolean, ms = 3000) => {
  const end = Date.now() + ms;
  while (!f() && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  return f();
};

beforeAll(async () => {
  ca = await createCa('kube-lb test CA');
  caFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'kube-lb-')), 'ca.crt');
  fs.writeFileSync(caFile, ca.cert);
  for (const n of ['m1', 'm2', 'm3']) standins.push(await startStandin(n));
  lb = new Balancer(config(standins), (l) => logs.push(l));
  lbPort = (await lb.listen()).port;
  checker = new Checker(lb.pool);
  checker.start();
  expect(await until(() => [...lb.backends.values()].every((b) => b.up))).toBe(true);
});

// Each case starts from the same state, whatever ran before it (or whether it ran): every stand-in
// ready, the full backend list, every backend up and checked under the current config, no old logs.
beforeEach(async () => {
  for (const s of standins) s.ready = true;
  lb.reload(config(standins));
  checker.start();
  expect(await until(() => [...lb.backends.values()].every((b) => b.up) && lb.pool.judged())).toBe(true);
  logs.length = 0;
});

afterAll(async () => {
  checker.stop();
  await lb.stop(0);
  for (const s of standins) s.server.close();
});

describe('kube-lb on loopback', () => {
  it('forwards TLS to the apiservers and spreads new connections over all of them', async () => {
    const seen = new Set(await Promise.all(Array.from({ length: 9 }, () => get())));
    expect([...seen].sort()).toEqual(['m1', 'm2', 'm3']);
    expect(lb.metrics()).toMatch(/kube_lb_backend_up\{backend="m1",address="127\.0\.0\.1:\d+"\} 1/);
  });

  it('a backend whose /readyz turns red: within 3 s no new connection reaches it and its watch is closed', async () => {
    // Hold a watch on every backend, then fail m2.
    const watches = await Promise.all(Array.from({ length: 6 }, () => watch()));
    const onM2 = watches.find((w) => w.who === 'm2');
    expect(onM2).toBeDefined();
    const t0 = Date.now();
    standins[1]!.ready = false;
    await onM2!.closed;
    const closedAfter = Date.now() - t0;
    expect(closedAfter).toBeLessThan(3000);
    const answers = await Promise.all(Array.from({ length: 12 }, () => get()));
    expect(answers).not.toContain('m2');
    expect(logs.join('\n')).toMatch(/backend m2 .* is DOWN: its health check fails: HTTP 500/);
    for (const w of watches) w.stop();
    standins[1]!.ready = true;
    expect(await until(() => lb.backends.get(backendKey({ name: 'm2', address: '127.0.0.1', port: standins[1]!.port }))!.up)).toBe(true);
    expect(logs.join('\n')).toMatch(/backend m2 .* is UP: its health check passes/);
  });

  it('a reload with a changed backend list keeps the listener and the open connections to backends that stay', async () => {
    const watches = await Promise.all(Array.from({ length: 6 }, () => watch()));
    const onM1 = watches.find((w) => w.who === 'm1')!;
    const onM3 = watches.find((w) => w.who === 'm3')!;
    let m1Closed = false;
    void onM1.closed.then(() => (m1Closed = true));
    const t0 = Date.now();
    lb.reload({ ...config([standins[1]!, standins[2]!]), shutdownTimeout: 600 }); // m1 leaves
    checker.start();
    // A removed backend gets no new connection at once, and what was open may finish for
    // shutdownTimeout (a request in flight is not cut), then it is closed (the watch moves on).
    expect(new Set(await Promise.all(Array.from({ length: 6 }, () => get())))).toEqual(new Set(['m2', 'm3']));
    expect(m1Closed).toBe(false);
    await onM1.closed;
    expect(Date.now() - t0).toBeGreaterThanOrEqual(600);
    expect(logs.join('\n')).toMatch(/backend m1 .* removed: no new connections; its 2 open connection\(s\) closed in 600 ms/);
    let m3Closed = false;
    void onM3.closed.then(() => (m3Closed = true));
    await new Promise((r) => setTimeout(r, 300));
    expect(m3Closed).toBe(false);
    expect(new Set(await Promise.all(Array.from({ length: 6 }, () => get())))).toEqual(new Set(['m2', 'm3']));
    for (const w of watches) w.stop();
  });

  it('after a reload, /healthz?checked waits for a check under the new settings; plain health does not drop', async () => {
    expect(await until(() => lb.healthy(true))).toBe(true);
    lb.reload(config(standins));
    expect(lb.healthy()).toBe(true);
    expect(lb.healthy(true)).toBe(false);
    checker.start();
    expect(await until(() => lb.healthy(true))).toBe(true);
  });

  it('with every backend down it still tries them all (panic) and says so', async () => {
    for (const s of standins) s.ready = false;
    expect(await until(() => !lb.healthy())).toBe(true);
    expect(await get()).toMatch(/^m[123]$/);
    expect(logs.join('\n')).toMatch(/PANIC: no backend is healthy; trying all 3 of them/);
    for (const s of standins) s.ready = true;
    expect(await until(() => lb.healthy())).toBe(true);
  });

  it('past maxConnections a new client is refused and counted; those already open keep flowing', async () => {
    lb.reload({ ...config(standins), maxConnections: 3 });
    const held = await Promise.all(Array.from({ length: 3 }, () => watch()));
    await expect(get()).rejects.toThrow();
    expect(lb.metrics()).toMatch(/^kube_lb_refused_connections_total [1-9]/m);
    expect(logs.join('\n')).toMatch(/3 connections are open \(maxConnections\): refusing new clients/);
    // The held watches still stream.
    const more = await Promise.all(held.map((w) => new Promise<boolean>((r) => { const t = setTimeout(() => r(true), 300); void w.closed.then(() => { clearTimeout(t); r(false); }); })));
    expect(more).toEqual([true, true, true]);
    for (const w of held) w.stop();
    await until(() => lb.pool.open() === 0);
    expect(await get()).toMatch(/^m[123]$/);
  });

  it('a connect that fails moves on to the next backend before the client notices', async () => {
    const dead = net.createServer();
    await new Promise<void>((r) => dead.listen(0, '127.0.0.1', () => r()));
    const deadPort = (dead.address() as net.AddressInfo).port;
    await new Promise<void>((r) => dead.close(() => r()));
    const noChecks = config(standins, { active: { enabled: false } });
    noChecks.backends.unshift({ name: 'gone', address: '127.0.0.1', port: deadPort });
    lb.reload({ ...noChecks, balance: 'round_robin' });
    checker.start();
    const answers = await Promise.all(Array.from({ length: 8 }, () => get()));
    for (const a of answers) expect(a).toMatch(/^m[123]$/);
    expect(lb.metrics()).toMatch(/kube_lb_backend_connect_errors_total\{backend="gone",address="127\.0\.0\.1:\d+"\} [1-9]/);
  });

  it('is ready for systemd only while it holds the port and has checked every backend under its config', async () => {
    expect(readiness(lb, 'ready', undefined)).toBeUndefined();
    checker.stop();
    lb.reload(config(standins));
    expect(readiness(lb, 'ready', undefined)).toBe('not every backend has been checked yet');
    checker.start();
    expect(await until(() => readiness(lb, 'ready', undefined) === undefined)).toBe(true);
    const idle = new Balancer(config(standins), () => undefined);
    expect(readiness(idle, 'ready', undefined)).toMatch(/^not listening on 127\.0\.0\.1:0 yet$/);
    // A refused reload fails the verify question, not the start question.
    expect(readiness(lb, 'checked', 'bad.yaml: listen: ...')).toMatch(/^the last reload was refused: bad\.yaml/);
  });

  it('--wait-ready takes no answer from another process on the admin port as readiness', async () => {
    const other = http.createServer((_req, res) => res.writeHead(200, { [PID_HEADER]: '424242' }).end('ok\n'));
    await new Promise<void>((r) => other.listen(0, '127.0.0.1', () => r()));
    const admin = `127.0.0.1:${(other.address() as net.AddressInfo).port}`;
    const cfg = { ...config(standins), admin };
    const wrong = await waitReady(cfg, process.pid, 300);
    expect(wrong).toEqual({ ok: false, text: `pid ${process.pid} is not ready after 0 s: ${admin} is answered by pid 424242, not ${process.pid}` });
    expect((await waitReady(cfg, 424242, 300)).ok).toBe(true);
    other.close();
  });
});
