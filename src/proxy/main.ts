/**
 * kube-lb: the node-local kube-apiserver load balancer.
 *   kube-lb --config FILE        run (SIGHUP reloads the file, SIGTERM drains and exits)
 *   kube-lb --check-config FILE  validate a config, as `nginx -t` (exit 0 or 1)
 *   kube-lb --wait-ready FILE PID
 *                                wait until the kube-lb of that PID owns its listen address and
 *                                has checked every backend (the unit's ExecStartPost: see readiness.ts)
 *   kube-lb --version
 * Logs are plain lines on stdout, for journald.
 */
/// <reference types="bun-types" />
import fs from 'node:fs';
import YAML from 'yaml';
import { Checker, secureContext } from './checker.js';
import { proxyConfigSchema, type Backend, type ProxyConfig } from './config.js';
import { hostPortOf } from '../util/hostport.js';
import { PID_HEADER, readiness, waitReady } from './readiness.js';
import { KUBE_LB_VERSION } from './version.js';
import { Balancer } from './server.js';
import { Discovery, DISCOVERY_COPY_ENV, planBackends } from './discovery.js';
import { backendKey } from './pool.js';
import type { ClusterApiserver } from '../cluster/control-plane.js';
import { credentialsOf, fileReferences } from '../cluster/kubeconfig-client.js';
import dns from 'node:dns/promises';
import net from 'node:net';


const log = (line: string) => process.stdout.write(`${line}\n`);

export function loadConfig(file: string): ProxyConfig {
  const text = fs.readFileSync(file, 'utf8');
  const raw = file.endsWith('.json') ? JSON.parse(text) : YAML.parse(text);
  const r = proxyConfigSchema.safeParse(raw);
  if (!r.success) {
    throw new Error(`${file}: ${r.error.issues.map((i) => `${i.path.join('.') || '(top level)'}: ${i.message}`).join('; ')}`);
  }
  // The CA and client certificate must load now, not at the first health check.
  try {
    secureContext(r.data);
  } catch (e) {
    throw new Error(`${file}: active: cannot load the CA or client certificate: ${(e as Error).message}`);
  }
  return r.data;
}

/** Discovery's Prometheus rows. */
function discoveryMetrics(d: Discovery['state'], applied: number): string {
  const rows: [string, string, string, number][] = [
    ['kube_lb_discovery_watching', 'gauge', '1 while the watch of the kubernetes EndpointSlices is open', d.watching ? 1 : 0],
    ['kube_lb_discovery_apiservers', 'gauge', 'ready apiservers the cluster named last', d.learned?.length ?? 0],
    ['kube_lb_discovery_changes_total', 'counter', "changes of the cluster's list seen", d.changes],
    ['kube_lb_discovery_backend_changes_total', 'counter', 'changes of the backends made from it', applied],
    ['kube_lb_discovery_lists_total', 'counter', 'list requests', d.lists],
    ['kube_lb_discovery_watches_total', 'counter', 'watch requests', d.watches],
    ['kube_lb_discovery_errors_total', 'counter', 'failed requests and answers not taken', d.errors],
  ];
  return rows.map(([n, t, h, v]) => `# HELP ${n} ${h}\n# TYPE ${n} ${t}\n${n} ${v}`).join('\n') + '\n';
}

export async function main(argv: string[]): Promise<number> {
  const flag = argv[0];
  if (flag === '--version' || flag === '-v') {
    // The runtime too: what a node runs is the pinned Bun compiled in (`--version` under anything else names it).
    log(`kube-lb ${KUBE_LB_VERSION} (${typeof Bun === 'undefined' ? `Node.js ${process.versions.node}` : `Bun ${Bun.version}`})`);
    return 0;
  }
  if ((flag !== '--config' && flag !== '--check-config' && flag !== '--wait-ready') || !argv[1] || (flag === '--wait-ready' && !/^\d+$/.test(argv[2] ?? ''))) {
    process.stderr.write('usage: kube-lb --config FILE | --check-config FILE | --wait-ready FILE PID | --version\n');
    return 2;
  }
  const file = argv[1];
  let cfg: ProxyConfig;
  try {
    cfg = loadConfig(file);
  } catch (e) {
    process.stderr.write(`kube-lb: ${(e as Error).message}\n`);
    return 1;
  }
  if (flag === '--check-config' && cfg.discovery && !process.env[DISCOVERY_COPY_ENV]) {
    // Deploy's validate (as root, before the swap): the kubeconfig must be there and usable by kube-lb's
    // user, so with its credentials inline. Under the unit it is not checked: a kubeconfig gone missing
    // later stops discovery, not kube-lb.
    const kc = cfg.discovery.kubeconfig;
    try {
      const text = fs.readFileSync(kc, 'utf8');
      credentialsOf(text, kc);
      const refs = fileReferences(text);
      if (refs.length) throw Object.assign(new Error(`${refs.join(', ')} name${refs.length === 1 ? 's' : ''} a file, which kube-lb's user cannot read`), { hint: 'embed it (kubectl config set-credentials --embed-certs=true, set-cluster --embed-certs=true)' });
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      const hint = (e as { hint?: string }).hint;
      process.stderr.write(`kube-lb: ${file}: discovery.kubeconfig: ${code ? `cannot read ${kc} (${code})` : (e as Error).message}${hint ? `: ${hint}` : ''}\n`);
      return 1;
    }
  }
  if (flag === '--check-config') {
    log(`kube-lb: ${file}: ok (${cfg.backends.length} backends, listen ${cfg.listen})`);
    return 0;
  }
  if (flag === '--wait-ready') {
    const r = await waitReady(cfg, Number(argv[2]));
    (r.ok ? process.stdout : process.stderr).write(`kube-lb: ${r.text}\n`);
    return r.ok ? 0 : 1;
  }

  const lb = new Balancer(cfg, log);
  const checker = new Checker(lb.pool);
  /** The configured backends (the file's): discovery's seeds. */
  let seeds = cfg.backends;
  /** What the cluster named last, for a reload to plan with again. */
  let learned: ClusterApiserver[] | undefined;
  /** Backend changes discovery made. */
  let applied = 0;
  /** Seeds named by host name, resolved (the cluster names addresses): refreshed at start and on each reload. */
  let resolved = new Map<string, string[]>();
  const resolveSeeds = async (list: readonly Backend[]) => {
    const out = new Map<string, string[]>();
    await Promise.all(list.filter((b) => net.isIP(b.address) === 0).map(async (b) => out.set(b.address, await dns.lookup(b.address, { all: true }).then((r) => r.map((x) => x.address), () => []))));
    resolved = out;
  };
  /** The pool's backends from the seeds and what the cluster named: reloaded only when they change. */
  const follow = (why: string) => {
    if (!learned || !discovery?.running) return;
    const current = [...lb.pool.backends.values()].map((b) => b.backend);
    const plan = planBackends(seeds, current, learned, resolved);
    if (plan.ignored) {
      discovery.state.problem = plan.ignored;
      return log(`discovery: ${plan.ignored}; keeping ${current.map((b) => b.name).join(', ')}`);
    }
    discovery.state.problem = undefined;
    const before = new Set(current.map(backendKey));
    const after = new Set(plan.backends.map(backendKey));
    if (before.size === after.size && [...after].every((k) => before.has(k))) return;
    const added = plan.backends.filter((b) => !before.has(backendKey(b)));
    const removed = current.filter((b) => !after.has(backendKey(b)));
    // What the cluster adds starts down until its first check passes: a learned apiserver, and a seed
    // named again (views of the cluster differ for a few seconds, so one in its shutdown may come back).
    lb.reload({ ...lb.config, backends: plan.backends }, new Set(added.map(backendKey)));
    checker.start();
    applied++;
    log(
      `discovery: ${why}; backends now ${plan.backends.map((b) => b.name).join(', ')}` +
        `${added.length ? `, added ${added.map((b) => `${b.name} (${backendKey(b)})`).join(', ')}` : ''}${removed.length ? `, removed ${removed.map((b) => `${b.name} (${backendKey(b)})`).join(', ')}` : ''}`,
    );
  };
  /** Changes that come together are applied once (a reload restarts every check): 300 ms after the last. */
  let settle: NodeJS.Timeout | undefined;
  const discovery = cfg.discovery
    ? new Discovery(cfg, {
        pool: lb.pool,
        log,
        onLearned: (apiservers) => {
          learned = apiservers;
          clearTimeout(settle);
          settle = setTimeout(() => follow(`the cluster names ${apiservers.filter((a) => a.ready).map((a) => `${a.address}:${a.port}`).join(', ') || 'none'}`), 300);
          settle.unref();
        },
      })
    : undefined;
  if (discovery) await resolveSeeds(seeds);
  // Signals first: SIGHUP's default action would kill the process while it waits for the port.
  const terminated = new Promise<void>((resolve) => process.once('SIGTERM', () => resolve()));
  /** Why the last SIGHUP was refused, until one succeeds: /healthz?checked says so rather than vouch for the old config. */
  let refused: string | undefined;
  process.on('SIGHUP', () => {
    let next: ProxyConfig;
    try {
      next = loadConfig(file);
    } catch (e) {
      refused = (e as Error).message;
      return log(`reload refused, keeping the running configuration: ${refused}`);
    }
    refused = undefined;
    const before = lb.config;
    seeds = next.backends;
    // What the cluster named still holds: the new seeds are planned with it (discovery still on). An
    // answer not taken leaves the file's backends, never the old pool.
    const plan = next.discovery && discovery?.running && learned ? planBackends(seeds, [...lb.pool.backends.values()].map((b) => b.backend), learned, resolved) : undefined;
    lb.reload({ ...next, backends: plan && !plan.ignored ? plan.backends : next.backends });
    checker.start();
    if (discovery) {
      discovery.reconfigure(next);
      if (!next.discovery) {
        discovery.stop();
        learned = undefined;
      } else {
        // The kubeconfig copied again by the unit's ExecReload: the next request reads it; seeds resolved again.
        discovery.start();
        void resolveSeeds(seeds);
      }
    }
    log(`reloaded ${file}: ${lb.config.backends.map((b) => b.name).join(', ')}`);
    if (next.admin !== before.admin) {
      closeAdmin();
      listenAdmin(next.admin);
    }
    // A new listen address: bind it (the old one closes once the new one is bound; open connections stay).
    if (lb.listening && next.listen !== before.listen) {
      lb.listen().then(
        (a) => log(`now listening on ${a.address}:${a.port} instead of ${before.listen}`),
        (e: Error) => {
          log(`cannot listen on ${next.listen}: ${e.message}; back to ${before.listen}`);
          lb.config.listen = before.listen;
          lb.listen().catch((e2: Error) => log(`cannot listen on ${before.listen} either: ${e2.message}`));
        },
      );
    }
  });

  /** The admin port's answers: /healthz, /metrics, /discovery. */
  const answer = (url: URL): Response => {
    const text = (status: number, body: string, headers: Record<string, string> = {}) => new Response(body, { status, headers: { 'content-type': 'text/plain', ...headers } });
    if (url.pathname === '/healthz') {
      // /healthz: some backend takes connections. ?checked (deploy's verify) and ?ready (the unit's
      // start): see readiness.ts. Every answer names this process, so a waiter can tell it from another.
      const why = readiness(lb, url.search.slice(1) || undefined, refused);
      return text(why ? 503 : 200, why ? `${why}\n` : 'ok\n', { [PID_HEADER]: String(process.pid) });
    }
    if (url.pathname === '/metrics' && !url.search) {
      return text(200, lb.metrics() + (discovery ? discoveryMetrics(discovery.state, applied) : ''), { 'content-type': 'text/plain; version=0.0.4' });
    }
    if (url.pathname === '/discovery' && !url.search) {
      // What status shows: the configured backends beside the learned ones and those in use.
      const body = {
        enabled: !!discovery && !!lb.config.discovery,
        configured: seeds.map((b) => backendKey(b)),
        backends: [...lb.pool.backends.values()].map((b) => ({ name: b.backend.name, address: b.id, up: b.up })),
        ...(discovery ? { ...discovery.state, applied } : {}),
      };
      return text(200, JSON.stringify(body) + '\n', { 'content-type': 'application/json' });
    }
    return new Response(null, { status: 404 });
  };
  /** The admin listener, on Bun's own HTTP server. */
  let admin: { stop(): void } | undefined;
  const listenAdmin = (where: string) => {
    const { host: ah, port: ap } = hostPortOf(where);
    try {
      admin = Bun.serve({
        hostname: ah,
        port: ap,
        reusePort: false,
        idleTimeout: 10,
        development: false,
        fetch: (req) => answer(new URL(req.url, 'http://admin')),
        error: (e) => {
          log(`admin: ${e.message}`);
          return new Response('internal error\n', { status: 500 });
        },
      });
    } catch (e) {
      admin = undefined;
      log(`admin listener ${where} failed: ${(e as Error).message}; balancing without /healthz and /metrics`);
    }
  };
  const closeAdmin = () => {
    admin?.stop();
    admin = undefined;
  };
  // The admin listener comes up first: once it listens, this process is ready to take the main
  // port (a switch from kube-nginx waits for exactly that before stopping it).
  listenAdmin(cfg.admin);
  // Checks start before the main port is taken: backends are judged by the time traffic comes.
  checker.start();
  discovery?.start();
  // SIGTERM while still waiting for the port: give up waiting and exit.
  const bound = lb.listen();
  bound.catch(() => undefined);
  const addr = await Promise.race([bound, terminated.then(() => null)]);
  if (!addr) {
    log('SIGTERM before the listen address was free: exiting');
    checker.stop();
    discovery?.stop();
    closeAdmin();
    await lb.stop(0);
    return 0;
  }
  log(`kube-lb ${KUBE_LB_VERSION}: listening on ${addr.address}:${addr.port}, ${cfg.backends.length} backends, ${cfg.balance}`);

  await terminated;
  log('SIGTERM: not accepting new connections, draining');
  checker.stop();
  discovery?.stop();
  closeAdmin();
  await lb.stop(lb.config.shutdownTimeout);
  log('stopped');
  return 0;
}
