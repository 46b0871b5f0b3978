// The VIP's failover, as an outside client sees it: npm run bench:vip -- [--rounds 3] [--keep]
// Starts a fresh lab (3 nodes, 4 masters), deploys the VIP on master-1..3 through the real CLI,
// then, --rounds times each, fails one thing while this machine sends GET /readyz through
// VIP:8443 on a new TLS connection every 50 ms (verified with the lab CA) and holds a watch open
// through it:
//   host down       the VIP holder's whole host stops (`lab master X down`), then comes back (`up`)
//   haproxy down    the holder's haproxy is stopped (keepalived puts it in FAULT), then started
//   apiserver stop  one apiserver's service is stopped (SIGTERM), then started
// gap: the longest time between two answered requests; failed: requests that got no 200;
// watch back: from the fault to the first event of a new watch through the VIP, when the fault
// cut the watch (it is re-dialled every 100 ms, as a client's reflector would). Prints a table, then one JSON line.
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { spawnSync } from 'node:child_process';
import YAML from 'yaml';
import { bin, cli, labDown, printTable } from './bench-util.js';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '3' }, keep: { type: 'boolean', default: false } } });
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-bench-vip-'));
fs.rmdirSync(dir);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const HOSTS = ['master-1', 'master-2', 'master-3'];
let vip;
let ca;

function readyz(timeoutMs = 1000) {
  return new Promise((resolve) => {
    const req = https.request({ host: vip, port: 8443, path: '/readyz', ca, servername: 'kubernetes', agent: false, timeout: timeoutMs }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode === 200));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve(false));
    req.end();
  });
}

function stream() {
  const at = [];
  let failed = 0;
  let on = true;
  const flying = [];
  const loop = (async () => {
    while (on) {
      const t = performance.now();
      flying.push(readyz().then((ok) => (ok ? at.push(t) : failed++)));
      await sleep(50);
    }
  })();
  return async () => {
    on = false;
    await loop;
    await Promise.all(flying);
    at.sort((a, b) => a - b);
    let gap = 0;
    for (let i = 1; i < at.length; i++) gap = Math.max(gap, at[i] - at[i - 1]);
    return { sent: at.length + failed, failed, gapMs: Math.round(gap) };
  };
}

/**
 * A watch through the VIP that, once it ends (or goes silent for 3 s: a vanished host sends no
 * FIN), is re-dialled every 100 ms. Stopped with the fault's time: from it to the first event of a
 * new watch, or null when the watch was never cut.
 */
function watch() {
  let cut = false;
  let backAt;
  let on = true;
  let current;
  const open = () =>
    new Promise((resolve) => {
      const req = https.request({ host: vip, port: 8443, path: '/api/v1/namespaces/default/pods?watch=true', ca, servername: 'kubernetes', agent: false, timeout: 3000 }, (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          return resolve();
        }
        res.on('data', () => {
          if (cut && backAt === undefined) backAt = performance.now();
        });
        res.on('close', resolve);
        res.on('error', resolve);
      });
      current = req;
      req.on('timeout', () => req.destroy(new Error('silent for 3 s')));
      req.on('error', resolve);
      req.end();
    });
  const loop = (async () => {
    while (on) {
      await open();
      if (!on) break;
      cut = true;
      await sleep(100);
    }
  })();
  return async (t0) => {
    on = false;
    current?.destroy();
    await loop;
    return backAt === undefined ? null : Math.round(backAt - t0);
  };
}

function status(inventory) {
  const r = spawnSync(process.execPath, [bin, 'status', '-i', inventory, '--limit', HOSTS.join(','), '--json'], { encoding: 'utf8' });
  return JSON.parse(r.stdout).vip;
}

async function holder(inventory) {
  for (let i = 0; i < 60; i++) {
    const v = status(inventory);
    if (v.holders.length === 1) return v.holders[0];
    await sleep(500);
  }
  throw new Error('no single holder of the VIP');
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];

try {
  const lab = cli(['lab', 'up', '--dir', dir, '--nodes', '3', '--masters', '4', '--json'], { json: true }).out;
  ca = fs.readFileSync(path.join(dir, 'pki', 'ca.crt'), 'utf8');
  const [a, b] = lab.masters[0].address.split('.');
  vip = `${a}.${b}.3.100`;
  const doc = YAML.parse(fs.readFileSync(lab.inventory, 'utf8'));
  doc.vip = { address: vip, port: 8443, hosts: HOSTS };
  const inventory = path.join(dir, 'inventory.vip.yaml');
  fs.writeFileSync(inventory, YAML.stringify(doc));
  const first = cli(['deploy', '-i', inventory, '--limit', HOSTS.join(','), '--json'], { json: true });
  const master = (name, action) => cli(['lab', 'master', '--dir', dir, name, action]);
  const container = (name) => spawnSync('docker', ['ps', '-q', '--filter', `label=io.k8s-ha.lab.dir=${dir}`, '--filter', `name=-${name}$`], { encoding: 'utf8' }).stdout.trim();
  const runs = [];
  for (let round = 1; round <= Number(values.rounds); round++) {
    for (const fault of ['host down', 'haproxy down', 'apiserver stop']) {
      const h = await holder(inventory);
      // The apiserver stopped is one that is no VIP host: the VIP stays where it is.
      const victim = fault === 'apiserver stop' ? 'master-4' : h;
      const stop = stream();
      const w = watch();
      await sleep(1500);
      const t0 = performance.now();
      if (fault === 'host down') master(victim, 'down');
      else if (fault === 'haproxy down') spawnSync('docker', ['exec', container(victim), 'systemctl', 'stop', 'haproxy']);
      else master(victim, 'stop');
      // Until requests answer again, then 3 s more.
      while (!(await readyz()) && performance.now() - t0 < 30_000) await sleep(50);
      await sleep(3000);
      const seen = await stop();
      const watchBackMs = await w(t0);
      const after = fault === 'apiserver stop' ? h : await holder(inventory);
      if (fault === 'host down') master(victim, 'up');
      else if (fault === 'haproxy down') spawnSync('docker', ['exec', container(victim), 'systemctl', 'start', 'haproxy']);
      else master(victim, 'start');
      await sleep(8000);
      const later = await holder(inventory);
      runs.push({ round, fault, holder: h, newHolder: after, movedBack: later !== after, ...seen, watchBackMs: watchBackMs ?? null });
    }
  }
  const summary = (fault) => {
    const rs = runs.filter((r) => r.fault === fault);
    return {
      runs: rs.length,
      medianGapMs: median(rs.map((r) => r.gapMs)),
      maxGapMs: Math.max(...rs.map((r) => r.gapMs)),
      failed: rs.reduce((n, r) => n + r.failed, 0),
      sent: rs.reduce((n, r) => n + r.sent, 0),
      // Runs where the watch was cut at all (a stopped apiserver that was not serving it leaves it be).
      watchesCut: rs.filter((r) => r.watchBackMs !== null).length,
      medianWatchBackMs: rs.some((r) => r.watchBackMs !== null) ? median(rs.filter((r) => r.watchBackMs !== null).map((r) => r.watchBackMs)) : null,
      vipMoved: rs.filter((r) => r.newHolder !== r.holder).length,
      flappedBack: rs.filter((r) => r.movedBack).length,
    };
  };
  const result = {
    benchmark: 'vip',
    rounds: Number(values.rounds),
    cores: os.cpus().length,
    firstDeployMs: first.wallMs,
    hostDown: summary('host down'),
    haproxyDown: summary('haproxy down'),
    apiserverStop: summary('apiserver stop'),
    runs,
  };
  printTable([
    ['fault', 'runs', 'median gap ms', 'max gap ms', 'failed/sent', 'watches cut', 'median watch back ms', 'VIP moved', 'moved back'],
    ...[['holder host down', result.hostDown], ['holder haproxy down', result.haproxyDown], ['apiserver stop', result.apiserverStop]].map(([n, s]) => [
      n,
      s.runs,
      s.medianGapMs,
      s.maxGapMs,
      `${s.failed}/${s.sent}`,
      s.watchesCut,
      s.medianWatchBackMs ?? '-',
      s.vipMoved,
      s.flappedBack,
    ]),
  ]);
  console.log(JSON.stringify(result));
} finally {
  if (!values.keep) labDown(dir);
}
