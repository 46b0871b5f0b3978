/**
 * kube-lb's active checks against a real TLS server on loopback: spread in time (a random start
 * and every wait the interval +-20%), and resuming the TLS session of the check before.
 */
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCa, issueCertificate } from '../../src/lab/pki.js';
import { Checker, JITTER } from '../../src/proxy/checker.js';
import { proxyConfigSchema } from '../../src/proxy/config.js';
import { Balancer } from '../../src/proxy/server.js';

let server: https.Server;
let port: number;
let ca: { cert: string; key: string };
/** Each /readyz the server answered: when, and whether the client resumed a TLS session. */
const seen: { at: number; resumed: boolean }[] = [];

beforeAll(async () => {
  ca = await createCa('kube-lb checks CA');
  const leaf = await issueCertificate(ca, { commonName: 'm1', dnsNames: ['kubernetes'], ipAddresses: ['127.0.0.1'], usage: 'server' });
  server = https.createServer({ cert: leaf.cert, key: leaf.key }, (req, res) => {
    // kube-apiserver's /readyz from SIGTERM until it exits, and when its etcd is away.
    if (req.url === '/readyz-shutdown') return void res.writeHead(500).end('[+]ping ok\n[+]etcd ok\n[-]shutdown failed: reason withheld\nreadyz check failed\n');
    if (req.url === '/readyz-etcd') return void res.writeHead(500).end('[+]ping ok\n[-]etcd failed: reason withheld\n[+]shutdown ok\nreadyz check failed\n');
    seen.push({ at: performance.now(), resumed: (req.socket as TLSSocket).isSessionReused() });
    res.end('ok');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  port = (server.address() as AddressInfo).port;
});
afterAll(() => server.close());

describe('kube-lb health checks', () => {
  it('wait the interval +-20%: never less, never more', () => {
    const lb = new Balancer(proxyConfigSchema.parse({ backends: [{ name: 'm1', address: '127.0.0.1', port: 1 }], active: { insecureSkipVerify: true } }), () => undefined);
    const at = (r: number) => new Checker(lb.pool, () => r).spread(1000);
    expect([at(0), at(0.5), at(0.999999)].map(Math.round)).toEqual([1000 * (1 - JITTER), 1000, 1000 * (1 + JITTER)]);
  });

  it('are spread in time and resume the TLS session of the check before', async () => {
    const cfg = proxyConfigSchema.parse({
      backends: [{ name: 'm1', address: '127.0.0.1', port }],
      active: { interval: '100ms', timeout: '1s', ca: ca.cert, serverName: 'kubernetes' },
    });
    const lb = new Balancer(cfg, () => undefined);
    const checker = new Checker(lb.pool);
    checker.start();
    await new Promise((r) => setTimeout(r, 2500));
    checker.stop();
    const gaps = seen.slice(1).map((s, i) => s.at - seen[i]!.at);
    expect(seen.length).toBeGreaterThan(10);
    // Waits spread over the +-20% band (80 to 120 ms, plus each check's own time), not on one beat...
    expect(Math.max(...gaps) - Math.min(...gaps)).toBeGreaterThan(15);
    // ...and never shorter than the band on average (a timer never fires early; one check's arrival may).
    expect(gaps.reduce((a, b) => a + b, 0) / gaps.length).toBeGreaterThanOrEqual(100 * (1 - JITTER));
    // Every check after the first resumed a session: one full handshake in all.
    expect(seen.filter((s) => !s.resumed).length).toBe(1);
    // Counted in /metrics (a check still in flight when the checker stopped is not).
    const counted = Number(new RegExp(`kube_lb_backend_checks_resumed_total\\{backend="m1",address="127\\.0\\.0\\.1:${port}"\\} (\\d+)`).exec(lb.metrics())?.[1]);
    const resumed = seen.filter((s) => s.resumed).length;
    expect(counted).toBeGreaterThanOrEqual(resumed - 1);
    expect(counted).toBeLessThanOrEqual(resumed);
  });

  it("read a failed /readyz's list of checks: one naming shutdown failing is an apiserver shutting down, any other is not", async () => {
    for (const [path, leaving] of [['/readyz-shutdown', true], ['/readyz-etcd', false]] as const) {
      const logs: string[] = [];
      const cfg = proxyConfigSchema.parse({ backends: [{ name: 'm1', address: '127.0.0.1', port }], active: { path, interval: '100ms', timeout: '1s', ca: ca.cert, serverName: 'kubernetes', fall: 1 } });
      const lb = new Balancer(cfg, (m) => logs.push(m));
      const checker = new Checker(lb.pool);
      checker.start();
      await new Promise((r) => setTimeout(r, 400));
      checker.stop();
      const b = [...lb.pool.backends.values()][0]!;
      expect(b.up, path).toBe(false);
      expect(b.leavingSince > 0, path).toBe(leaving);
      expect(logs.join('\n'), path).toMatch(leaving ? /is DOWN: its health check fails: HTTP 500, shutting down; no new connections, its 0 open ones left to it/ : /is DOWN: its health check fails: HTTP 500; no new connections, closing its 0/);
    }
  });
});
