/** Active health checks: HTTPS GET of the check path on every backend, every interval, verified with the cluster CA. */
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import type { ProxyConfig } from './config.js';
import { type Balancer } from './server.js';

/**
 * Each backend is checked on its own clock: every `interval`, or every `fastInterval` while its
 * verdict is turning (a failed check on an up backend, a good one on a down backend), as HAProxy's
 * fastinter does. A dying apiserver is then confirmed down a fraction of an interval after its
 * first failed check, not a whole one.
 */
export class Checker {
  private timers = new Map<string, NodeJS.Timeout>();
  private generation = 0;
  private ctx?: tls.SecureContext;

  constructor(private readonly lb: Balancer) {}

  /** (Re)start checking every backend of the current config, the first check of each at once. */
  start(): void {
    this.stop();
    const a = this.lb.config.active;
    if (!a.enabled) return;
    this.ctx = secureContext(this.lb.config);
    const gen = this.generation;
    for (const k of this.lb.backends.keys()) this.run(k, gen);
  }

  stop(): void {
    this.generation++;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }

  private run(k: string, gen: number): void {
    const rt = this.lb.backends.get(k);
    if (!rt || gen !== this.generation) return;
    const a = this.lb.config.active;
    const t0 = Date.now();
    check(this.lb.config, rt.backend.address, rt.backend.port, this.ctx!)
      .then(
        (status) => ({ ok: status === 200, detail: `HTTP ${status}` }),
        (e: Error) => ({ ok: false, detail: e.message }),
      )
      .then(({ ok, detail }) => {
        if (gen !== this.generation) return;
        this.lb.checked(k, ok, Date.now() - t0, detail);
        const turning = this.lb.backends.get(k)?.health.streak ?? 0;
        const wait = turning ? a.fastInterval : a.interval;
        const timer = setTimeout(() => this.run(k, gen), Math.max(0, wait - (Date.now() - t0)));
        timer.unref();
        this.timers.set(k, timer);
      });
  }
}

export function secureContext(cfg: ProxyConfig): tls.SecureContext {
  const a = cfg.active;
  return tls.createSecureContext({
    ca: a.ca ?? (a.caFile ? fs.readFileSync(a.caFile) : undefined),
    cert: a.clientCertFile ? fs.readFileSync(a.clientCertFile) : undefined,
    key: a.clientKeyFile ? fs.readFileSync(a.clientKeyFile) : undefined,
  });
}

function check(cfg: ProxyConfig, host: string, port: number, secureContext: tls.SecureContext): Promise<number> {
  const a = cfg.active;
  const servername = a.serverName ?? host;
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host,
        port,
        path: a.path,
        agent: false,
        secureContext,
        servername: net.isIP(servername) ? undefined : servername,
        rejectUnauthorized: !a.insecureSkipVerify,
        checkServerIdentity: (_h, cert) => tls.checkServerIdentity(servername, cert),
        headers: { 'user-agent': 'kube-lb', connection: 'close' },
        // https hands secureContext on to tls.connect; its type does not list it.
      } as https.RequestOptions,
      (res) => {
        clearTimeout(deadline);
        // The status is all a check needs: drop the body and the connection now.
        res.destroy();
        resolve(res.statusCode ?? 0);
      },
    );
    // One deadline for the whole check (connect, TLS, answer): a socket idle timer would restart
    // with every packet, and a hung apiserver that completed the TCP handshake takes twice as long.
    const deadline = setTimeout(() => req.destroy(new Error(`no answer within ${a.timeout} ms`)), a.timeout);
    req.on('error', (e) => {
      clearTimeout(deadline);
      reject(e);
    });
    req.end();
  });
}
