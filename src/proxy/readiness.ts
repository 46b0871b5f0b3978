/**
 * When kube-lb is ready, and how systemd learns it.
 *
 * systemd should call kube-lb "started" only once it owns the listen address and has checked every
 * backend: until then a client on the node may meet another process on the port, or a backend
 * nobody has judged yet. The natural tool is Type=notify, but kube-lb's runtime cannot send the datagram
 * sd_notify needs (no unix datagram sockets), and `systemd-notify` run from a child exits before
 * systemd 252 reads its credentials, so the message is dropped or pinned on the wrong process.
 * So the unit stays Type=simple with an ExecStartPost that runs `kube-lb --wait-ready FILE $MAINPID`:
 * systemd keeps the unit "activating" until it exits 0 and fails the start if it exits 1. It asks the
 * admin port's /healthz?ready, which answers 200 only from a process that holds the listen address
 * (it has the bound socket in hand, so nothing else can be the owner) and has a check result for
 * every backend under its current configuration, and every answer carries the answering PID: an
 * answer from any process but the unit's MainPID (another kube-lb left on the admin port) is not
 * readiness.
 */
import http from 'node:http';
import { JITTER } from './checker.js';
import type { ProxyConfig } from './config.js';
import type { Balancer } from './server.js';
import { hostPortOf } from '../util/hostport.js';

/** The response header of /healthz that names the kube-lb process answering. */
export const PID_HEADER = 'x-kube-lb-pid';

/**
 * Why /healthz (plain, ?checked or ?ready) is not 200 now, or undefined.
 * - plain: some backend takes new connections.
 * - checked (deploy's verify): and this process holds the listen address, the last reload was
 *   taken, and some backend passed a check under the configuration it runs.
 * - ready (the unit's start): this process holds the listen address and every backend has been
 *   checked under the current configuration (passing or not: with every apiserver down kube-lb still
 *   starts, in panic mode).
 */
export function readiness(lb: Balancer, query: string | undefined, refused: string | undefined): string | undefined {
  if (query === 'ready') {
    if (!lb.listening) return `not listening on ${lb.config.listen} yet`;
    if (!lb.pool.judged()) return 'not every backend has been checked yet';
    return undefined;
  }
  if (query === 'checked') {
    if (refused) return `the last reload was refused: ${refused}`;
    if (!lb.listening) return `not listening on ${lb.config.listen} yet`;
  }
  return lb.healthy(query === 'checked') ? undefined : 'no healthy backend';
}

/** How long --wait-ready waits: the port held by the balancer this one replaces, then one round of checks. */
export function readyDeadlineMs(cfg: Pick<ProxyConfig, 'listenWait'> & { active: Pick<ProxyConfig['active'], 'interval' | 'timeout'> }): number {
  return cfg.listenWait + cfg.active.interval * (1 + JITTER) + cfg.active.timeout + 5000;
}

/** Ask /healthz?ready of `cfg.admin` until the process `pid` says it is ready, or the deadline passes. */
export async function waitReady(cfg: ProxyConfig, pid: number, deadlineMs = readyDeadlineMs(cfg)): Promise<{ ok: boolean; text: string }> {
  const { host, port } = hostPortOf(cfg.admin);
  const end = Date.now() + deadlineMs;
  let last = `nothing answers on ${cfg.admin}`;
  for (;;) {
    const r = await get(host, port);
    const who = Number(r?.headers[PID_HEADER]);
    if (r && who === pid && r.status === 200) return { ok: true, text: `pid ${pid} is ready: it holds ${cfg.listen} and has checked every backend` };
    if (r) last = who === pid ? r.body.trim() : `${cfg.admin} is answered by pid ${who || 'unknown'}, not ${pid}`;
    if (Date.now() >= end) return { ok: false, text: `pid ${pid} is not ready after ${Math.round(deadlineMs / 1000)} s: ${last}` };
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function get(host: string, port: number): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string } | undefined> {
  return new Promise((resolve) => {
    const req = http.get({ host, port, path: '/healthz?ready', agent: false, timeout: 1000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      res.on('error', () => resolve(undefined));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(undefined));
  });
}
