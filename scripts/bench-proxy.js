// kube-lb against nginx's stream proxy, in one run on loopback: npm run bench:proxy -- [--duration 4] [--rounds 2]
// Both run exactly as deploy renders them (renderNginxConf, renderKubeLbConf), one nginx worker
// and the kube-lb single executable with the environment kube-lb.service gives it. Beside them, the
// "bun floor": the least a proxy on kube-lb's pinned Bun does (scripts/bench-bun-floor.js), the bound
// on what kube-lb can reach. Load comes from wrk; the backend is an nginx with its http module serving
// static files (built once from the same tarball, cached).
//   bulk       one connection downloading a 64 MB file again and again (wrk -c1)
//   requests   50 kept-alive connections, small responses (wrk -c50)
//   new conns  every request on a new connection (wrk -c50, Connection: close)
//   latency    one connection (wrk -c1 --latency): p50 and p99 added to going direct
//   RSS        the proxy's resident memory holding 1,000 idle connections, fresh and after the load;
//              in brackets its anonymous part (heap and buffers, without the executable's own pages)
//   failover   three TLS apiserver stand-ins (processes of their own): /readyz turned red, then
//              a stand-in frozen (SIGSTOP), with watches open through the proxy
// Prints a table, then one JSON line. Needs wrk (installed with apt-get when missing, as root).
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import YAML from 'yaml';
import { ensureKubeLb, pinnedBun } from '../dist/build/kube-lb.js';
import { controllerBuildHost, ensureNginxBinary } from '../dist/build/nginx.js';
import { inventorySchema } from '../dist/inventory/schema.js';
import { KUBE_LB_ENVIRONMENT, renderKubeLbConf } from '../dist/lb/kube-lb.js';
import { renderNginxConf } from '../dist/lb/nginx.js';
import { createCa, issueCertificate } from '../dist/lab/pki.js';
import { NGINX_SOURCE } from '../dist/lab/sources.js';
import { cacheDir } from '../dist/util/paths.js';
import { cli, printTable } from './bench-util.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({ options: { duration: { type: 'string', default: '4' }, rounds: { type: 'string', default: '2' } } });
const DURATION = Number(values.duration);
const ROUNDS = Number(values.rounds);
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-bench-proxy-'));
// The backend nginx's worker runs as nobody when started as root: it must read the files.
fs.chmodSync(work, 0o755);
const say = (l) => process.stderr.write(`${l}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const children = [];
// Whatever happens (an exception included), no proxy, backend or frozen stand-in is left behind.
process.on('exit', () => {
  for (const c of children) {
    try {
      c.kill('SIGCONT');
      c.kill('SIGKILL');
    } catch {
      /* already gone */
    }
  }
  fs.rmSync(work, { recursive: true, force: true });
});

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function start(cmd, args, { env } = {}) {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  children.push(child);
  let out = '';
  child.stdout.on('data', (b) => (out += b));
  child.stderr.on('data', (b) => (out += b));
  child.output = () => out;
  return child;
}

async function waitPort(port, ms = 10_000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const ok = await new Promise((r) => net.connect(port, '127.0.0.1').on('connect', function () { this.destroy(); r(true); }).on('error', () => r(false)));
    if (ok) return;
    await sleep(20);
  }
  throw new Error(`nothing listens on 127.0.0.1:${port}`);
}

/** Resident memory (kB), and of it the anonymous part: the heap and buffers, not the executable's own pages (shared and reclaimable). */
function rssKb(pids) {
  let kb = 0;
  let anon = 0;
  for (const pid of pids) {
    const text = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    kb += Number(/^Rss:\s+(\d+) kB/m.exec(text)?.[1] ?? 0);
    anon += Number(/^Anonymous:\s+(\d+) kB/m.exec(text)?.[1] ?? 0);
  }
  return { kb, anon };
}

/** nginx's master and its workers. */
function nginxPids(master) {
  const kids = fs.readFileSync(`/proc/${master}/task/${master}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  return [master, ...kids];
}

// ---- tools and binaries -------------------------------------------------------------------------
function ensureWrk() {
  if (spawnSync('sh', ['-c', 'command -v wrk']).status === 0) return;
  if (process.getuid?.() !== 0 || !fs.existsSync('/usr/bin/apt-get')) throw new Error('bench:proxy needs wrk: install it (apt-get install wrk) and run again');
  say('installing wrk with apt-get');
  const r = spawnSync('sh', ['-c', 'apt-get install -y -qq wrk || { apt-get update -qq && apt-get install -y -qq wrk; }'], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error('apt-get install wrk failed');
}

/** The balancer as deploy builds it (static, musl); the backend natively (its http module is not under test). */
async function nginxBuild(configure, link) {
  const sources = cacheDir('sources');
  const wanted = path.join(sources, `${NGINX_SOURCE.sha256.slice(0, 16)}-${NGINX_SOURCE.file}`);
  if (!fs.existsSync(wanted)) {
    const plain = path.join(sources, NGINX_SOURCE.file);
    if (!fs.existsSync(plain)) {
      say('no nginx source tarball in the cache: fetching it with k8s-ha lab prepare');
      cli(['lab', 'prepare']);
    }
    fs.copyFileSync(plain, wanted);
  }
  const src = { version: NGINX_SOURCE.version, sources: [`file://${wanted}`], sha256: NGINX_SOURCE.sha256 };
  return ensureNginxBinary(src, configure, await controllerBuildHost(true, link), say);
}

// ---- wrk --------------------------------------------------------------------------------------
const UNIT = { us: 1e-3, ms: 1, s: 1000 };
const BYTES = { B: 1, KB: 1024, MB: 1024 ** 2, GB: 1024 ** 3 };

function wrk(args) {
  const r = spawnSync('wrk', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`wrk ${args.join(' ')} failed:\n${r.stdout}${r.stderr}`);
  const out = r.stdout;
  const num = (re) => Number(re.exec(out)?.[1] ?? NaN);
  const lat = (pct) => {
    const m = new RegExp(`^\\s+${pct}%\\s+([\\d.]+)(us|ms|s)$`, 'm').exec(out);
    return m ? Number(m[1]) * UNIT[m[2]] : NaN;
  };
  const tr = /Transfer\/sec:\s+([\d.]+)(B|KB|MB|GB)/.exec(out);
  const errors = /Socket errors: (.*)/.exec(out)?.[1];
  const non2xx = num(/Non-2xx or 3xx responses: (\d+)/);
  return {
    rps: num(/Requests\/sec:\s+([\d.]+)/),
    mbps: tr ? (Number(tr[1]) * BYTES[tr[2]]) / 1024 ** 2 : NaN,
    p50: lat(50),
    p99: lat(99),
    errors: [errors, non2xx ? `${non2xx} non-2xx` : ''].filter(Boolean).join('; ') || undefined,
  };
}

// ---- setup ------------------------------------------------------------------------------------
ensureWrk();
say('building (or finding in the cache) nginx with the stream module, the backend nginx, and kube-lb');
const streamNginx = await nginxBuild(['--prefix=/opt/k8s/kube-nginx', '--with-stream', '--without-http', '--without-http-cache'], 'static');
const httpNginx = await nginxBuild(['--prefix=/opt/k8s/bench-backend', '--with-stream', '--without-http_rewrite_module', '--without-http_gzip_module'], 'native');
const kubeLb = await ensureKubeLb(say);

const backendPort = await freePort();
const backendDir = path.join(work, 'backend');
fs.mkdirSync(path.join(backendDir, 'logs'), { recursive: true });
fs.mkdirSync(path.join(backendDir, 'html'));
fs.writeFileSync(path.join(backendDir, 'html', 'ok.txt'), 'ok\n');
fs.writeFileSync(path.join(backendDir, 'html', 'big.bin'), Buffer.alloc(64 << 20, 7));
fs.writeFileSync(
  path.join(backendDir, 'nginx.conf'),
  `worker_processes 1; daemon off; error_log ${backendDir}/logs/error.log warn; pid ${backendDir}/logs/nginx.pid;
worker_rlimit_nofile 20000;
events { worker_connections 20000; }
http {
  access_log off; sendfile on; tcp_nopush on; keepalive_timeout 600s; keepalive_requests 100000000;
  client_header_timeout 600s; default_type application/octet-stream;
  server { listen 127.0.0.1:${backendPort} backlog=4096; root ${backendDir}/html; }
}
`,
);
const backend = start(httpNginx.path, ['-p', backendDir, '-c', path.join(backendDir, 'nginx.conf')]);
await waitPort(backendPort);

/** An inventory as a user writes it, with these masters: both proxies are rendered from it. */
function inventory(masters, prefix, caFile) {
  return inventorySchema.parse({
    masters,
    nodes: [{ name: 'bench', address: '127.0.0.1' }],
    lb: { impl: 'kube-lb', listen: '127.0.0.1:1', prefix },
    kubeLb: {},
    tls: { caFile, serverName: 'kubernetes' },
  });
}

/**
 * The rendered config runs nginx's workers as kube-nginx, a user the playbook makes on each node.
 * A machine no deploy ran on has none: make it here the playbook's own way (as root; a non-root
 * nginx ignores `user` and runs its workers as whoever started it).
 */
function ensureNginxUser() {
  if (process.getuid?.() !== 0) return;
  const book = YAML.parse(fs.readFileSync(path.join(root, 'playbooks', 'kube-nginx.yaml'), 'utf8'));
  const step = book.steps.find((s) => s.name === 'user')?.command;
  if (!step) throw new Error('playbooks/kube-nginx.yaml has no user step');
  if (spawnSync('sh', ['-c', step.unless], { stdio: 'ignore' }).status === 0) return;
  const r = spawnSync('sh', ['-c', step.run], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`making nginx's worker user: ${step.run}: ${r.stderr}`);
  console.error(`made the system user nginx's workers run as, as deploy does on a node: ${step.run}`);
}

async function startNginx(masters, caFile) {
  ensureNginxUser();
  const port = await freePort();
  const prefix = path.join(work, `nginx-${port}`);
  fs.mkdirSync(path.join(prefix, 'logs'), { recursive: true });
  fs.mkdirSync(path.join(prefix, 'conf'), { recursive: true });
  const inv = inventory(masters, prefix, caFile);
  inv.lb.listen = `127.0.0.1:${port}`;
  const conf = path.join(prefix, 'conf', 'kube-nginx.conf');
  fs.writeFileSync(conf, renderNginxConf(inv));
  const child = start(streamNginx.path, ['-p', prefix, '-c', conf, '-g', 'daemon off;']);
  await waitPort(port);
  return { name: 'nginx', port, child, pids: () => nginxPids(child.pid), stop: () => child.kill('SIGTERM') };
}

async function startKubeLb(masters, caFile, { active }) {
  const [port, admin] = [await freePort(), await freePort()];
  const inv = inventory(masters, path.join(work, 'kube-lb'), caFile);
  inv.lb.listen = `127.0.0.1:${port}`;
  inv.kubeLb.admin = `127.0.0.1:${admin}`;
  const cfg = YAML.parse(renderKubeLbConf(inv));
  // The throughput backend speaks plain HTTP: no TLS /readyz to check there.
  if (!active) cfg.active.enabled = false;
  const file = path.join(work, `kube-lb-${port}.yaml`);
  fs.writeFileSync(file, YAML.stringify(cfg));
  // The environment kube-lb.service gives it (V8's heap settings).
  const child = start(kubeLb.path, ['--config', file], { env: KUBE_LB_ENVIRONMENT });
  await waitPort(port);
  return { name: 'kube-lb', port, child, pids: () => [child.pid], stop: () => child.kill('SIGTERM'), log: () => child.output() };
}

/** The least a proxy on kube-lb's runtime can cost (scripts/bench-bun-floor.js), with kube-lb's Bun and environment. */
async function startBunFloor() {
  const port = await freePort();
  const child = start(pinnedBun().binary, [path.join(root, 'scripts', 'bench-bun-floor.js'), String(port), String(backendPort)], { env: KUBE_LB_ENVIRONMENT });
  await waitPort(port);
  return { name: 'bun floor', port, child, pids: () => [child.pid], stop: () => child.kill('SIGTERM') };
}

// ---- throughput and latency ---------------------------------------------------------------------
const d = `${DURATION}s`;
const url = (port, p) => `http://127.0.0.1:${port}${p}`;
const trials = { direct: [], nginx: [], 'kube-lb': [], 'bun floor': [] };
const backendMaster = [{ name: 'backend', address: '127.0.0.1', port: backendPort }];
const proxies = [await startNginx(backendMaster), await startKubeLb(backendMaster, undefined, { active: false }), await startBunFloor()];
const targets = [{ name: 'direct', port: backendPort }, ...proxies];

for (let round = 1; round <= ROUNDS; round++) {
  for (const t of targets) {
    say(`round ${round}: ${t.name}`);
    trials[t.name].push({
      bulk: wrk(['-t1', '-c1', `-d${d}`, url(t.port, '/big.bin')]),
      requests: wrk(['-t1', '-c50', `-d${d}`, url(t.port, '/ok.txt')]),
      newConns: wrk(['-t1', '-c50', `-d${d}`, '-H', 'Connection: close', url(t.port, '/ok.txt')]),
      latency: wrk(['-t1', '-c1', `-d${d}`, '--latency', url(t.port, '/ok.txt')]),
    });
  }
}
const best = (name, k, f) => Math.max(...trials[name].map((x) => x[k][f]));
const low = (name, k, f) => Math.min(...trials[name].map((x) => x[k][f]));
const errorsOf = (name) => [...new Set(trials[name].flatMap((x) => Object.values(x).map((w) => w.errors).filter(Boolean)))];

// ---- memory: 1,000 idle connections through each proxy ------------------------------------------
async function rssWithIdle(p, n = 1000) {
  const before = rssKb(p.pids());
  const socks = [];
  for (let i = 0; i < n; i++) {
    socks.push(await new Promise((resolve, reject) => net.connect(p.port, '127.0.0.1').on('connect', function () { resolve(this); }).on('error', reject)));
  }
  // Each client connection is joined to its backend connection: wait until all are through.
  await sleep(1500);
  const kb = rssKb(p.pids());
  for (const s of socks) s.destroy();
  return { idleKb: before.kb, with1000Kb: kb.kb, idleAnonKb: before.anon, with1000AnonKb: kb.anon };
}
const rss = {};
for (const p of proxies) {
  say(`RSS with 1,000 idle connections: ${p.name}, after the load above`);
  rss[p.name] = { afterLoad: await rssWithIdle(p) };
  p.stop();
}
// The same on a fresh process: what 1,000 idle connections cost, without the heap left over from the load.
for (const make of [() => startNginx(backendMaster), () => startKubeLb(backendMaster, undefined, { active: false }), startBunFloor]) {
  const p = await make();
  say(`RSS with 1,000 idle connections: ${p.name}, fresh`);
  rss[p.name].fresh = await rssWithIdle(p);
  p.stop();
}

// ---- failover ------------------------------------------------------------------------------------
say('failover: three TLS stand-ins');
const ca = await createCa('bench:proxy CA');
const caFile = path.join(work, 'ca.crt');
fs.writeFileSync(caFile, ca.cert);
const standins = [];
for (const name of ['master-1', 'master-2', 'master-3']) {
  const leaf = await issueCertificate(ca, { commonName: name, dnsNames: ['kubernetes'], ipAddresses: ['127.0.0.1'], usage: 'server' });
  const [cert, key] = [path.join(work, `${name}.crt`), path.join(work, `${name}.key`)];
  fs.writeFileSync(cert, leaf.cert);
  fs.writeFileSync(key, leaf.key);
  const port = await freePort();
  standins.push({ name, port, child: start(process.execPath, [path.join(root, 'scripts', 'bench-standin.js'), name, String(port), cert, key]) });
  await waitPort(port);
}
const masters = standins.map((s) => ({ name: s.name, address: '127.0.0.1', port: s.port }));

function whoami(port) {
  return new Promise((resolve) => {
    const req = https.get({ host: '127.0.0.1', port, path: '/whoami', ca: ca.cert, servername: 'kubernetes', agent: false, timeout: 2000 }, (res) => {
      let b = '';
      res.on('data', (c) => (b += c));
      res.on('end', () => resolve(b));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(''));
  });
}

function watch(port) {
  return new Promise((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', port, path: '/watch', ca: ca.cert, servername: 'kubernetes', agent: false }, (res) => {
      res.once('data', (c) => {
        const w = { who: c.toString().split('\n')[0], closedAt: 0, close: () => req.destroy() };
        res.on('close', () => (w.closedAt ||= Date.now()));
        res.on('error', () => (w.closedAt ||= Date.now()));
        resolve(w);
      });
    });
    req.on('error', reject);
  });
}

/** /readyz of master-1 turns red at t0: how long until no new connection reaches it. */
async function unreadyTrial(p, seconds = 5) {
  const victim = standins[0];
  await sleep(2500); // checks settled, every backend up
  const t0 = Date.now();
  victim.child.kill('SIGUSR1');
  let lastHit = 0;
  let hitsAfter = 0;
  while (Date.now() - t0 < seconds * 1000) {
    const who = await whoami(p.port);
    if (who === victim.name) {
      lastHit = Date.now();
      hitsAfter++;
    }
    await sleep(5);
  }
  victim.child.kill('SIGUSR2');
  return { msToNoNewConnections: hitsAfter ? lastHit - t0 : 0, stillReceivingAtEnd: lastHit > 0 && Date.now() - lastHit < 500, hitsAfterRed: hitsAfter };
}

/** master-2 freezes (SIGSTOP: no answer, no FIN, no reset) at t0: how long until its watches are closed. */
async function frozenTrial(p, seconds = 10) {
  const victim = standins[1];
  await sleep(3000); // master-1 back up after the previous trial
  const ws = [];
  for (let i = 0; i < 9; i++) ws.push(await watch(p.port));
  const mine = ws.filter((w) => w.who === victim.name);
  const t0 = Date.now();
  victim.child.kill('SIGSTOP');
  while (Date.now() - t0 < seconds * 1000 && mine.some((w) => !w.closedAt)) await sleep(10);
  victim.child.kill('SIGCONT');
  for (const w of ws) w.close();
  const closed = mine.filter((w) => w.closedAt);
  return {
    watchesOnIt: mine.length,
    closed: closed.length,
    msToClose: closed.length === mine.length && mine.length ? Math.max(...closed.map((w) => w.closedAt - t0)) : null,
  };
}

const failover = {};
for (const make of [() => startNginx(masters, caFile), () => startKubeLb(masters, caFile, { active: true })]) {
  const p = await make();
  say(`failover: ${p.name}`);
  const unready = [];
  const frozen = [];
  for (let i = 0; i < ROUNDS; i++) {
    unready.push(await unreadyTrial(p));
    frozen.push(await frozenTrial(p));
  }
  failover[p.name] = { unready, frozen };
  p.stop();
}
for (const s of standins) s.child.kill('SIGKILL');
backend.kill('SIGTERM');

// ---- report ----------------------------------------------------------------------------------------
const ratio = (a, b) => Number((a / b).toFixed(2));
const m = (name) => ({
  bulkMBps: Math.round(best(name, 'bulk', 'mbps')),
  requestsPerSec: Math.round(best(name, 'requests', 'rps')),
  newConnsPerSec: Math.round(best(name, 'newConns', 'rps')),
  p50ms: Number(low(name, 'latency', 'p50').toFixed(3)),
  p99ms: Number(low(name, 'latency', 'p99').toFixed(3)),
  errors: errorsOf(name),
});
const direct = m('direct');
const result = { benchmark: 'proxy', cores: os.cpus().length, durationSec: DURATION, rounds: ROUNDS, kubeLb: kubeLb.version, kubeLbRuntime: kubeLb.runtime, kubeLbSizeMB: Math.round(kubeLb.size / 1e5) / 10, kubeLbEnvironment: KUBE_LB_ENVIRONMENT, nginx: `nginx ${NGINX_SOURCE.version}, 1 worker`, direct, proxies: {} };
const mb = (kb) => Number((kb / 1024).toFixed(1));
for (const name of ['nginx', 'kube-lb', 'bun floor']) {
  const x = m(name);
  const worst = (list, f) => (list.some((t) => f(t) === null) ? null : Math.max(...list.map(f)));
  result.proxies[name] = {
    ...x,
    addedP50ms: Number((x.p50ms - direct.p50ms).toFixed(3)),
    addedP99ms: Number((x.p99ms - direct.p99ms).toFixed(3)),
    rssIdleMB: mb(rss[name].fresh.idleKb),
    rss1000MB: mb(rss[name].fresh.with1000Kb),
    rss1000AfterLoadMB: mb(rss[name].afterLoad.with1000Kb),
    anonIdleMB: mb(rss[name].fresh.idleAnonKb),
    anon1000MB: mb(rss[name].fresh.with1000AnonKb),
    anon1000AfterLoadMB: mb(rss[name].afterLoad.with1000AnonKb),
    ...(failover[name]
      ? {
          failover: {
            // null: it never stopped (nginx has no active checks) within the trial.
            unreadyMs: worst(failover[name].unready, (t) => (t.stillReceivingAtEnd ? null : t.msToNoNewConnections)),
            frozenCloseMs: worst(failover[name].frozen, (t) => t.msToClose),
            trials: failover[name],
          },
        }
      : {}),
  };
}
const n = result.proxies.nginx;
const k = result.proxies['kube-lb'];
const f = result.proxies['bun floor'];
result.ratios = {
  bulk: ratio(k.bulkMBps, n.bulkMBps),
  requests: ratio(k.requestsPerSec, n.requestsPerSec),
  newConns: ratio(k.newConnsPerSec, n.newConnsPerSec),
  // What any proxy on kube-lb's Bun reaches on this machine, against nginx, and kube-lb against that.
  floorNewConns: ratio(f.newConnsPerSec, n.newConnsPerSec),
  newConnsOfFloor: ratio(k.newConnsPerSec, f.newConnsPerSec),
};
result.goals = {
  bulk: result.ratios.bulk >= 0.9,
  requests: result.ratios.requests >= 0.9,
  newConns: result.ratios.newConns >= 0.9,
  p99: k.addedP99ms <= n.addedP99ms + 0.5,
  rss: k.rss1000AfterLoadMB <= 40 && k.rss1000AfterLoadMB <= k.rss1000MB + 10,
  failover: k.failover.unreadyMs !== null && k.failover.unreadyMs <= 3000 && k.failover.frozenCloseMs !== null && k.failover.frozenCloseMs <= 3000,
};
const fo = (v, s) => (v === null ? `never in ${s} s` : `${v}`);
const mem = (x, rssKey, anonKey) => `${x[rssKey]} (${x[anonKey]})`;
printTable([
  ['', 'direct', 'nginx', 'kube-lb', 'bun floor', 'kube-lb / nginx', 'goal'],
  ['bulk, one connection (MB/s)', direct.bulkMBps, n.bulkMBps, k.bulkMBps, f.bulkMBps, result.ratios.bulk, '>= 0.9'],
  ['requests/s, 50 kept-alive conns', direct.requestsPerSec, n.requestsPerSec, k.requestsPerSec, f.requestsPerSec, result.ratios.requests, '>= 0.9'],
  ['new connections/s', direct.newConnsPerSec, n.newConnsPerSec, k.newConnsPerSec, f.newConnsPerSec, result.ratios.newConns, '>= 0.9'],
  ['p50 latency, ms (added)', direct.p50ms, `${n.p50ms} (+${n.addedP50ms})`, `${k.p50ms} (+${k.addedP50ms})`, `${f.p50ms} (+${f.addedP50ms})`, '', ''],
  ['p99 latency, ms (added)', direct.p99ms, `${n.p99ms} (+${n.addedP99ms})`, `${k.p99ms} (+${k.addedP99ms})`, `${f.p99ms} (+${f.addedP99ms})`, '', "added <= nginx's + 0.5"],
  ['RSS (anonymous) idle, MB', '', mem(n, 'rssIdleMB', 'anonIdleMB'), mem(k, 'rssIdleMB', 'anonIdleMB'), mem(f, 'rssIdleMB', 'anonIdleMB'), '', ''],
  ['RSS (anonymous) with 1,000 idle conns, MB', '', mem(n, 'rss1000MB', 'anon1000MB'), mem(k, 'rss1000MB', 'anon1000MB'), mem(f, 'rss1000MB', 'anon1000MB'), '', ''],
  ['the same after the load, MB', '', mem(n, 'rss1000AfterLoadMB', 'anon1000AfterLoadMB'), mem(k, 'rss1000AfterLoadMB', 'anon1000AfterLoadMB'), mem(f, 'rss1000AfterLoadMB', 'anon1000AfterLoadMB'), '', '<= 40, <= fresh + 10'],
  ['/readyz red -> no new conns (ms, worst)', '', fo(n.failover.unreadyMs, 5), fo(k.failover.unreadyMs, 5), '', '', '<= 3000'],
  ['frozen -> its conns closed (ms, worst)', '', fo(n.failover.frozenCloseMs, 10), fo(k.failover.frozenCloseMs, 10), '', '', '<= 3000'],
]);
console.log(`kube-lb runs with ${Object.entries(KUBE_LB_ENVIRONMENT).map(([key, v]) => `${key}=${v}`).join(' ') || 'no environment of its own'} (as kube-lb.service sets), on ${kubeLb.runtime}; bun floor: scripts/bench-bun-floor.js on the same Bun. goals met: ${Object.entries(result.goals).map(([g, ok]) => `${g} ${ok ? 'yes' : 'NO'}`).join(', ')}`);
for (const name of ['direct', 'nginx', 'kube-lb', 'bun floor']) if (m(name).errors.length) console.log(`${name}: wrk reported ${m(name).errors.join('; ')}`);
console.log(JSON.stringify(result));
process.exit(0);
