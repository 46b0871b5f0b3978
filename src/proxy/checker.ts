/** Active health checks: HTTPS GET of the check path on every backend, every interval, verified with the cluster CA. */
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import type { ProxyConfig } from './config.js';
import { localFailure, type CheckResult, type Pool } from './pool.js';

/**
 * Each backend is checked on its own clock: every `interval`, or every `fastInterval` while its
 * verdict is turning (a failed check on an up backend, a good one on a down backend), as HAProxy's
 * fastinter does. A dying apiserver is then confirmed down a fraction of an interval after its
 * first failed check, not a whole one.
 *
 * Spread, so a thousand nodes do not check an apiserver on one beat: the first check of each backend
 * comes at a random point of the first interval (a batch of nodes restarted together does not stay
 * in step), and every wait is the interval +-20% at random. Each check resumes the TLS session of
 * the last one to that backend (a session ticket: no certificate exchange or key agreement beyond
 * the first), until a check fails or the configuration is reloaded.
 */
export const JITTER = 0.2;

export class Checker {
  private timers = new Map<string, NodeJS.Timeout>();
  private sessions = new Map<string, Buffer>();
  private generation = 0;
  private ctx?: tls.SecureContext;

  constructor(
    private readonly lb: Pool,
    private readonly random: () => number = Math.random,
  ) {}

  /** (Re)start checking every backend of the current config, each first check at a random point of the first interval. */
  start(): void {
    this.stop();
    // A new CA or client certificate: sessions made under the old ones are not resumed.
    this.sessions.clear();
    const a = this.lb.config.active;
    if (!a.enabled) return;
    this.ctx = secureContext(this.lb.config);
    const gen = this.generation;
    for (const k of this.lb.backends.keys()) this.after(k, gen, this.random() * a.interval);
  }

  stop(): void {
    this.generation++;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }

  /** A wait of `ms` +-20%, at random. */
  spread(ms: number): number {
    return ms * (1 + (this.random() * 2 - 1) * JITTER);
  }

  private after(k: string, gen: number, ms: number): void {
    const timer = setTimeout(() => this.run(k, gen), Math.max(0, ms));
    timer.unref();
    this.timers.set(k, timer);
  }

  private run(k: string, gen: number): void {
    const rt = this.lb.backends.get(k);
    if (!rt || gen !== this.generation) return;
    const a = this.lb.config.active;
    const t0 = Date.now();
    check(this.lb.config, rt.backend.address, rt.backend.port, this.ctx!, this.sessions.get(k), (s) => this.sessions.set(k, s))
      .then(
        (r): CheckResult & { local?: undefined } => ({
          ok: r.status === 200,
          detail: r.shuttingDown ? `HTTP ${r.status}, shutting down` : `HTTP ${r.status}`,
          resumed: r.resumed,
          shuttingDown: r.shuttingDown,
        }),
        (e: Error & { silent?: boolean }) => ({ ok: false, detail: e.message, resumed: false, silent: e.silent === true, local: localFailure(e) }),
      )
      .then(({ local, ...result }) => {
        if (gen !== this.generation) return;
        // This node could not even open the check's socket: the backend is not judged on it.
        if (local) this.lb.localError(`checking ${rt.backend.name}`, local.code, local);
        else {
          if (!result.ok) this.sessions.delete(k);
          this.lb.checked(k, result, Date.now() - t0);
        }
        const turning = this.lb.backends.get(k)?.health.streak ?? 0;
        const wait = this.spread(turning ? a.fastInterval : a.interval);
        this.after(k, gen, wait - (Date.now() - t0));
      });
  }
}

/**
 * What a failed /readyz lists: kube-apiserver names its `shutdown` check failing from SIGTERM until it
 * exits, while it still serves everything else (for --shutdown-delay-duration, then its drain).
 */
const SHUTTING_DOWN = /^\[-\]shutdown failed/m;
/** How much of a failed check's answer is read for that: kube-apiserver's list of checks is about 2 KB. */
const FAILED_BODY_MAX = 8192;

export function secureContext(cfg: ProxyConfig): tls.SecureContext {
  const a = cfg.active;
  return tls.createSecureContext({
    ca: a.ca ?? (a.caFile ? fs.readFileSync(a.caFile) : undefined),
    cert: a.clientCertFile ? fs.readFileSync(a.clientCertFile) : undefined,
    key: a.clientKeyFile ? fs.readFileSync(a.clientKeyFile) : undefined,
  });
}

function check(
  cfg: ProxyConfig,
  host: string,
  port: number,
  secureContext: tls.SecureContext,
  session: Buffer | undefined,
  onSession: (s: Buffer) => void,
): Promise<{ status: number; resumed: boolean; shuttingDown: boolean }> {
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
        session,
        // https hands secureContext on to tls.connect; its type does not list it.
      } as https.RequestOptions,
      (res) => {
        const resumed = (res.socket as tls.TLSSocket).isSessionReused?.() ?? false;
        const status = res.statusCode ?? 0;
        let body = '';
        const done = () => {
          clearTimeout(deadline);
          res.destroy();
          resolve({ status, resumed, shuttingDown: SHUTTING_DOWN.test(body) });
        };
        // A pass needs nothing more: drop the body and the connection now. A failure's body says
        // whether the apiserver is shutting down; read within the same deadline, and capped.
        if (status === 200) return done();
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          body += d;
          if (body.length >= FAILED_BODY_MAX) done();
        });
        res.on('end', done);
        res.on('close', done);
      },
    );
    req.once('socket', (s) => s.on('session', onSession));
    // One deadline for the whole check (connect, TLS, answer): a socket idle timer would restart
    // with every packet, and a hung apiserver that completed the TCP handshake takes twice as long.
    const deadline = setTimeout(() => req.destroy(Object.assign(new Error(`no answer within ${a.timeout} ms`), { silent: true })), a.timeout);
    req.on('error', (e) => {
      clearTimeout(deadline);
      reject(e);
    });
    req.end();
  });
}
