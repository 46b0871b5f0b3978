/**
 * kube-lb's data plane with real sockets on loopback: three TLS apiserver stand-ins, and kube-lb in
 * front run as it ships, a process on the pinned Bun runtime (its data path is Bun's own sockets),
 * reloaded by SIGHUP and read through its admin port and its log lines; real requests and watches
 * through it. The pool's and readiness's logic is also driven in this process where no byte moves.
 * (No lab needed: this is the component alone.)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { pinnedBun } from '../../src/build/kube-lb.js';
import { createCa, issueCertificate } from '../../src/lab/pki.js';
import { Checker } from '../../src/proxy/checker.js';
import { proxyConfigSchema } from '../../src/proxy/config.js';
import { PID_HEADER, readiness, waitReady } from '../../src/proxy/readiness.js';
import { Balancer } from '../../src/proxy/server.js';
import { freeLoopbackPort } from '../helpers/ports.js';

interface Standin {
  name: string;
  port: number;
  ready: boolean;
  server: https.Server;
}

let ca: { cert: string; key: string };
let dir: string;
let caFile: string;
let cfgFile: string;
const standins: Standin[] = [];
const logs: string[] = [];
let proc: ChildProcess;
let lbPort: number;
let adminPort: number;

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

type Listed = { name: string; address?: string; port: number };

/** kube-lb's config file as deploy writes one: these backends, checks every 100 ms (a slow answer on a busy machine is not a failed one). */
function configText(backends: Listed[], extra: Record<string, unknown> = {}): string {
  return YAML.stringify({
    listen: `127.0.0.1:${lbPort}`,
    admin: `127.0.0.1:${adminPort}`,
    backends: backends.map((s) => ({ name: s.name, address: s.address ?? '127.0.0.1', port: s.port })),
    active: { interval: '100ms', timeout: '2s', rise: 1, fall: 1, caFile, serverName: 'kubernetes' },
    ...extra,
  });
}

/** Write the config and SIGHUP kube-lb; resolves once it logged the reload. */
async function reload(backends: Listed[], extra: Record<string, unknown> = {}): Promise<void> {
  fs.writeFileSync(cfgFile, configText(backends, extra));
  const from = logs.length;
  proc.kill('SIGHUP');
  expect(await until(async () => logs.slice(from).some((l) => l.startsWith('reloaded '))), 'kube-lb logged the reload').toBe(true);
}

/** GET on kube-lb's admin port. */
function admin(p: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port: adminPort, path: p, agent: false }, (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}
const metrics = async () => (await admin('/metrics')).body;
/** The pool's backends, as kube-lb reports them. */
const backends = async () => (JSON.parse((await admin('/discovery')).body) as { backends: { name: string; up: boolean }[] }).backends;
const allUp = async () => (await backends()).every((b) => b.up);
const openConnections = async () => [...(await metrics()).matchAll(/^kube_lb_backend_active_connections\{[^}]*\} (\d+)$/gm)].reduce((n, m) => n + Number(m[1]), 0);

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

/** Polls f every 20 ms until it holds or `ms` pass; its last answer. */
const until = async (f: () => boolean | Promise<boolean>, ms = 3000) => {
  const end = Date.now() + ms;
  while (!(await f()) && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  return f();
};

beforeAll(async () => {
  ca = await createCa('kube-lb test CA');
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kube-lb-'));
  caFile = path.join(dir, 'ca.crt');
  cfgFile = path.join(dir, 'kube-lb.yaml');
  fs.writeFileSync(caFile, ca.cert);
  for (const n of ['m1', 'm2', 'm3']) standins.push(await startStandin(n));
  lbPort = await freeLoopbackPort();
  adminPort = await freeLoopbackPort();
  fs.writeFileSync(cfgFile, configText(standins));
  proc = spawn(pinnedBun().binary, [path.resolve('src/proxy/cli.ts'), '--config', cfgFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  let partial = '';
  const take = (b: Buffer) => {
    const lines = (partial + b.toString()).split('\n');
    partial = lines.pop()!;
    logs.push(...lines);
  };
  proc.stdout!.on('data', take);
  proc.stderr!.on('data', take);
  expect(await until(async () => (await admin('/healthz?ready').catch(() => ({ status: 0 }))).status === 200, 15_000), `kube-lb ready; it said:\n${logs.join('\n')}`).toBe(true);
});

// Each case starts from the same state, whatever ran before it (or whether it ran): every stand-in
// ready, the full backend list, every backend up and checked under the current config, no old logs.
beforeEach(async () => {
  for (const s of standins) s.ready = true;
  await reload(standins);
  // Nothing a case before left open is still counted (its clients' closes have reached kube-lb).
  expect(await until(async () => (await allUp()) && (await admin('/healthz?ready')).status === 200 && (await openConnections()) === 0)).toBe(true);
  logs.length = 0;
});

afterAll(async () => {
  if (proc && proc.exitCode === null) {
    proc.kill('SIGTERM');
    await new Promise((r) => proc.once('exit', r));
  }
  for (const s of standins) s.server.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('kube-lb on loopback', () => {
  it('forwards TLS to the apiservers and spreads new connections over all of them', async () => {
    const seen = new Set(await Promise.all(Array.from({ length: 9 }, () => get())));
    expect([...seen].sort()).toEqual(['m1', 'm2', 'm3']);
    expect(await metrics()).toMatch(/kube_lb_backend_up\{backend="m1",address="127\.0\.0\.1:\d+"\} 1/);
  });

  it('passes large bodies both ways whole, and a half-close on: what the client sent, echoed, then the end', async () => {
    const echo = net.createServer((sock) => {
      sock.on('data', (d) => sock.write(d));
      sock.on('end', () => sock.end('bye'));
    });
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
    await reload([{ name: 'echo', port: (echo.address() as net.AddressInfo).port }], { active: { enabled: false } });
    const sent = Buffer.alloc(20e6);
    for (let i = 0; i < sent.length; i += 4096) sent[i] = i % 251;
    const echoed = await Promise.all(
      [0, 1, 2].map(
        () =>
          new Promise<Buffer>((resolve, reject) => {
            const parts: Buffer[] = [];
            const c = net.connect(lbPort, '127.0.0.1', () => c.end(sent));
            c.on('data', (d) => parts.push(d));
            c.on('close', () => resolve(Buffer.concat(parts)));
            c.on('error', reject);
          }),
      ),
    );
    for (const e of echoed) {
      expect(e.length).toBe(sent.length + 3);
      expect(e.subarray(0, sent.length).equals(sent)).toBe(true);
      expect(e.subarray(sent.length).toString()).toBe('bye');
    }
    expect(await metrics()).toMatch(new RegExp(`^kube_lb_backend_bytes_in_total\\{backend="echo",[^}]*\\} ${3 * sent.length}$`, 'm'));
    echo.close();
  });

  it('a client whose backend side is gone while data waits for it: both sides closed at once, not at the idle timeout', async () => {
    // A backend that sends far more than a client that does not read can take: kube-lb holds the
    // rest and pauses the backend; then the client resets.
    const big = Buffer.alloc(64e6, 1);
    const flood = net.createServer((sock) => {
      sock.on('error', () => undefined);
      sock.write(big);
    });
    await new Promise<void>((r) => flood.listen(0, '127.0.0.1', () => r()));
    await reload([{ name: 'flood', port: (flood.address() as net.AddressInfo).port }], { active: { enabled: false } });
    const c = net.connect(lbPort, '127.0.0.1');
    c.on('error', () => undefined);
    await new Promise((r) => c.once('data', r));
    c.pause();
    expect(await until(async () => (await openConnections()) === 1)).toBe(true);
    await new Promise((r) => setTimeout(r, 300));
    c.resetAndDestroy();
    expect(await until(async () => (await openConnections()) === 0, 3000), 'the pair is still open after the client reset').toBe(true);
    flood.close();
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
    expect(await until(async () => (await backends()).find((b) => b.name === 'm2')!.up)).toBe(true);
    expect(logs.join('\n')).toMatch(/backend m2 .* is UP: its health check passes/);
  });

  it('a reload with a changed backend list keeps the listener and the open connections to backends that stay', async () => {
    // The test before stopped its watches: their connections are gone before this one counts its own.
    expect(await until(async () => (await openConnections()) === 0, 3000), 'connections of the test before are still open').toBe(true);
    const watches = await Promise.all(Array.from({ length: 6 }, () => watch()));
    try {
      const onM1 = watches.find((w) => w.who === 'm1')!;
      const onM3 = watches.find((w) => w.who === 'm3')!;
      const onM1Count = watches.filter((w) => w.who === 'm1').length;
      let m1Closed = false;
      void onM1.closed.then(() => (m1Closed = true));
      const t0 = Date.now();
      await reload([standins[1]!, standins[2]!], { shutdownTimeout: '600ms' }); // m1 leaves
      // A removed backend gets no new connection at once, and what was open may finish for
      // shutdownTimeout (a request in flight is not cut), then it is closed (the watch moves on).
      for (const a of await Promise.all(Array.from({ length: 6 }, () => get()))) expect(a).toMatch(/^m[23]$/);
      expect(m1Closed).toBe(false);
      await onM1.closed;
      expect(Date.now() - t0).toBeGreaterThanOrEqual(600);
      expect(logs.join('\n')).toMatch(new RegExp(`backend m1 .* removed: no new connections; its ${onM1Count} open connection\\(s\\) closed in 600 ms`));
      let m3Closed = false;
      void onM3.closed.then(() => (m3Closed = true));
      await new Promise((r) => setTimeout(r, 300));
      expect(m3Closed).toBe(false);
      for (const a of await Promise.all(Array.from({ length: 6 }, () => get()))) expect(a).toMatch(/^m[23]$/);
    } finally {
      // Whatever failed above: no watch left open for the tests after this one.
      for (const w of watches) w.stop();
    }
  });

  it('with every backend down it still tries them all (panic) and says so', async () => {
    for (const s of standins) s.ready = false;
    expect(await until(async () => (await admin('/healthz')).status === 503)).toBe(true);
    expect(await get()).toMatch(/^m[123]$/);
    expect(logs.join('\n')).toMatch(/PANIC: no backend is healthy; trying all 3 of them/);
    for (const s of standins) s.ready = true;
    expect(await until(async () => (await admin('/healthz')).status === 200)).toBe(true);
  });

  it('past maxConnections a new client is refused and counted; those already open keep flowing', async () => {
    await reload(standins, { maxConnections: 3 });
    const held = await Promise.all(Array.from({ length: 3 }, () => watch()));
    await expect(get()).rejects.toThrow();
    expect(await metrics()).toMatch(/^kube_lb_refused_connections_total [1-9]/m);
    expect(logs.join('\n')).toMatch(/3 connections are open \(maxConnections\): refusing new clients/);
    // The held watches still stream.
    const more = await Promise.all(held.map((w) => new Promise<boolean>((r) => { const t = setTimeout(() => r(true), 300); void w.closed.then(() => { clearTimeout(t); r(false); }); })));
    expect(more).toEqual([true, true, true]);
    for (const w of held) w.stop();
    expect(await until(async () => (await openConnections()) === 0)).toBe(true);
    expect(await get()).toMatch(/^m[123]$/);
  });

  it('a connect that fails moves on to the next backend before the client notices', async () => {
    const deadPort = await freeLoopbackPort();
    await reload([{ name: 'gone', port: deadPort }, ...standins], { active: { enabled: false }, balance: 'round_robin' });
    const answers = await Promise.all(Array.from({ length: 8 }, () => get()));
    for (const a of answers) expect(a).toMatch(/^m[123]$/);
    expect(await metrics()).toMatch(/kube_lb_backend_connect_errors_total\{backend="gone",address="127\.0\.0\.1:\d+"\} [1-9]/);
  });

  it('is ready for systemd only while it holds the port and has checked every backend under its config', async () => {
    expect((await admin('/healthz?ready')).status).toBe(200);
    // A backend that takes the connection and never answers: no verdict on it until its check times out.
    const mute = net.createServer(() => undefined);
    await new Promise<void>((r) => mute.listen(0, '127.0.0.1', () => r()));
    await reload([...standins, { name: 'mute', port: (mute.address() as net.AddressInfo).port }], { active: { interval: '100ms', timeout: '2s', rise: 1, fall: 1, caFile, serverName: 'kubernetes' } });
    expect(await admin('/healthz?ready')).toEqual({ status: 503, body: 'not every backend has been checked yet\n' });
    expect(await until(async () => (await admin('/healthz?ready')).status === 200, 5000)).toBe(true);
    mute.close();
    const idle = new Balancer(proxyConfigSchema.parse({ backends: [{ name: 'm1', address: '127.0.0.1', port: standins[0]!.port }] }), () => undefined);
    expect(readiness(idle, 'ready', undefined)).toMatch(/^not listening on 127\.0\.0\.1:8443 yet$/);
    // A refused reload fails the verify question, not the start question.
    fs.writeFileSync(cfgFile, 'listen: [\n');
    proc.kill('SIGHUP');
    expect(await until(async () => (await admin('/healthz?checked')).status === 503)).toBe(true);
    expect((await admin('/healthz?checked')).body).toMatch(/^the last reload was refused: /);
    expect((await admin('/healthz?ready')).status).toBe(200);
  });

  it('after a reload, ?checked waits for a check under the new settings; plain health does not drop (the pool, in this process)', async () => {
    const lb = new Balancer(proxyConfigSchema.parse({ backends: standins.map((s) => ({ name: s.name, address: '127.0.0.1', port: s.port })), active: { interval: '100ms', timeout: '500ms', rise: 1, fall: 1, caFile, serverName: 'kubernetes' } }), () => undefined);
    const checker = new Checker(lb.pool);
    checker.start();
    expect(await until(() => lb.healthy(true))).toBe(true);
    lb.reload(lb.config);
    expect(lb.healthy()).toBe(true);
    expect(lb.healthy(true)).toBe(false);
    checker.start();
    expect(await until(() => lb.healthy(true))).toBe(true);
    checker.stop();
  });

  it('--wait-ready takes no answer from another process on the admin port as readiness', async () => {
    const other = http.createServer((_req, res) => res.writeHead(200, { [PID_HEADER]: '424242' }).end('ok\n'));
    await new Promise<void>((r) => other.listen(0, '127.0.0.1', () => r()));
    const admin = `127.0.0.1:${(other.address() as net.AddressInfo).port}`;
    const cfg = { ...proxyConfigSchema.parse({ backends: [{ name: 'm1', address: '127.0.0.1', port: 1 }] }), admin };
    const wrong = await waitReady(cfg, process.pid, 300);
    expect(wrong).toEqual({ ok: false, text: `pid ${process.pid} is not ready after 0 s: ${admin} is answered by pid 424242, not ${process.pid}` });
    expect((await waitReady(cfg, 424242, 300)).ok).toBe(true);
    other.close();
  });
  // Last: it puts kube-lb in panic mode, whose log line comes at most every 5 s.
  it('clients refused for want of a backend are closed, and do not count against maxConnections afterwards', async () => {
    const refusedSoFar = async () => Number(/^kube_lb_refused_connections_total (\d+)$/m.exec(await metrics())![1]);
    const refusedBefore = await refusedSoFar();
    const dead = [await freeLoopbackPort(), await freeLoopbackPort()].map((port, i) => ({ name: `dead-${i}`, port }));
    await reload(dead, { active: { enabled: false }, maxConnections: 3 });
    // Five clients, one after another: each is turned away (no backend answers), and its socket closes.
    for (let i = 0; i < 5; i++) {
      const closed = await new Promise<boolean>((resolve) => {
        const c = net.connect(lbPort, '127.0.0.1');
        const t = setTimeout(() => resolve(false), 3000);
        c.on('error', () => undefined);
        c.on('close', () => {
          clearTimeout(t);
          resolve(true);
        });
        c.resume();
      });
      expect(closed, `client ${i + 1} was never closed`).toBe(true);
    }
    // Were they still held, the three slots would be full now.
    await reload(standins, { maxConnections: 3 });
    expect(await get()).toMatch(/^m[123]$/);
    expect(await refusedSoFar()).toBe(refusedBefore);
  });
});
