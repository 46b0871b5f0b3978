/** Active health checks: HTTPS GET of the check path on every backend, every interval, verified with the cluster CA. */
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import type { ProxyConfig } from './config.js';
import { backendKey, type Balancer } from './server.js';

export class Checker {
  private timer?: NodeJS.Timeout;
  private inFlight = new Set<string>();
  private ctx?: tls.SecureContext;

  constructor(private readonly lb: Balancer) {}

  start(): void {
    this.stop();
    const a = this.lb.config.active;
    if (!a.enabled) return;
    this.ctx = secureContext(this.lb.config);
    this.tick();
    this.timer = setInterval(() => this.tick(), a.interval);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  private tick(): void {
    for (const rt of this.lb.backends.values()) {
      const k = backendKey(rt.backend);
      if (this.inFlight.has(k)) continue;
      this.inFlight.add(k);
      const t0 = Date.now();
      check(this.lb.config, rt.backend.address, rt.backend.port, this.ctx!).then(
        (status) => this.lb.checked(k, status === 200, Date.now() - t0, `HTTP ${status}`),
        (e: Error) => this.lb.checked(k, false, Date.now() - t0, e.message),
      ).finally(() => this.inFlight.delete(k));
    }
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
        timeout: a.timeout,
        headers: { 'user-agent': 'kube-lb', connection: 'close' },
        // https hands secureContext on to tls.connect; its type does not list it.
      } as https.RequestOptions,
      (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${a.timeout} ms`)));
    req.on('error', reject);
    req.end();
  });
}
