// The VIP's failover, as outside clients see it: npm run bench:vip -- [--rounds 3] [--faults LIST] [--lag 2000] [--keep]
// Starts a fresh lab (3 nodes, 4 masters), deploys the VIP on master-1..3 through the real CLI,
// then, --rounds times each, fails one thing while this machine sends GET /version through
// VIP:8443 on a new TLS connection every 50 ms (verified with the lab CA, 1 s timeout) and runs a
// reflector around the real kubectl through the VIP (src/lab/reflector.ts: list, watch with
// bookmarks, resume from the last resourceVersion, list again on 410 or a watch that cannot start):
//   host-down       the VIP holder's whole host stops (`lab master X down`: its processes close
//                   their connections), then comes back (`up`)
//   haproxy-down    the holder's haproxy is stopped (keepalived puts it in FAULT), then started
//   apiserver-stop  the apiserver the watch is on is stopped (`lab master X stop`: kube-apiserver's
//                   shutdown sequence, /readyz red, 5 s served, GOAWAY, watches ended), then started
//   partitioned     the holder's host cut off (`lab master X partition`: every packet dropped), then healed
//   powered-off     the holder's host vanishes mid-connection (`lab master X power-off`: no FIN, no
//                   reset), then powered on
//   lagging         every other master's watch cache --lag ms behind (`lab master Y lag MS`), then the
//                   watch's apiserver crashes (its connections cut): the watch resumes on a lagging one
// A fault lasts until requests answer again and the reflector's watch, cut, delivers events again;
// then it is undone and the lab left 8 s to settle.
// request gap: the longest time between two answered requests while the fault lasts; failed: requests
// that got no 200 (then, in brackets, while it was undone); event gap: the longest time between two
// events the reflector received, over the fault and its undo; lost: events of the known history after
// a list that never arrived; store: the reflector's pods equal the history's at the end; watch back:
// from the fault to the first event after the watch running at the fault ended.
// Prints a table, then one JSON line.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { Reflector, analyse } from '../dist/lab/reflector.js';
import { kubectlToward } from '../dist/lab/kubectl.js';
import { cli, cliAsync, faultBenchArgs, labDir, labDown, printTable } from './bench-util.js';

const ALL_FAULTS = ['host-down', 'haproxy-down', 'apiserver-stop', 'partitioned', 'powered-off', 'lagging'];
const { values, faults: FAULTS } = faultBenchArgs(ALL_FAULTS, { rounds: 3 });
const started = performance.now();
const dir = labDir('vip');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const HOSTS = ['master-1', 'master-2', 'master-3'];
const MASTERS = [...HOSTS, 'master-4'];
let vip;
let ca;

/** One request on a new TLS connection: /version, which an apiserver serves through its shutdown delay (its /readyz is red then on purpose). */
function request(timeoutMs = 1000) {
  return new Promise((resolve) => {
    const req = https.request({ host: vip, port: 8443, path: '/version', ca, servername: 'kubernetes', agent: false, timeout: timeoutMs }, (res) => {
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
      flying.push(request().then((ok) => (ok ? at.push(t) : failed++)));
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

/** The VIP as status sees it, without blocking (the reflector reads kubectl meanwhile); status exits 3 on a split brain. */
async function vipStatus(inventory) {
  const { out } = await cliAsync(['status', '-i', inventory, '--limit', HOSTS.join(','), '--json'], { ok: [0, 3] });
  return JSON.parse(out).vip;
}

async function holder(inventory) {
  for (let i = 0; i < 60; i++) {
    const v = await vipStatus(inventory);
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
  const master = (name, action, ...value) => cliAsync(['lab', 'master', '--dir', dir, name, action, ...value]);
  const docker = (...args) => new Promise((resolve, reject) => execFile('docker', args, (e, out) => (e ? reject(e) : resolve(out.trim()))));
  const containerOf = (name) => docker('ps', '-q', '--filter', `label=io.k8s-ha.lab.dir=${dir}`, '--filter', `name=-${name}$`);
  const kubectl = kubectlToward(lab.kubectl, lab.kubeconfig, `https://${vip}:8443`);
  const others = (v) => MASTERS.filter((m) => m !== v);
  /** What each fault hits (the holder, or the apiserver the watch is on) and how it is done and undone. */
  const FAULT = {
    'host-down': { victim: (h) => h, apply: (v) => master(v, 'down'), undo: (v) => master(v, 'up') },
    'haproxy-down': {
      victim: (h) => h,
      apply: async (v) => docker('exec', await containerOf(v), 'systemctl', 'stop', 'haproxy'),
      undo: async (v) => docker('exec', await containerOf(v), 'systemctl', 'start', 'haproxy'),
    },
    'apiserver-stop': { victim: (_h, w) => w, apply: (v) => master(v, 'stop'), undo: (v) => master(v, 'start') },
    partitioned: { victim: (h) => h, apply: (v) => master(v, 'partition'), undo: (v) => master(v, 'heal') },
    'powered-off': { victim: (h) => h, apply: (v) => master(v, 'power-off'), undo: (v) => master(v, 'power-on') },
    lagging: {
      victim: (_h, w) => w,
      apply: async (v) => {
        await Promise.all(others(v).map((o) => master(o, 'lag', values.lag)));
        await master(v, 'crash');
      },
      undo: async (v) => {
        await master(v, 'recover');
        await Promise.all(others(v).map((o) => master(o, 'lag', '0')));
      },
    },
  };
  const runs = [];
  for (let round = 1; round <= Number(values.rounds); round++) {
    for (const fault of FAULTS) {
      const h = await holder(inventory);
      const r = new Reflector(kubectl);
      r.start();
      let row;
      let undo;
      try {
        await r.until((l) => l.events.length >= 8 && !!r.standin, 30_000, 'a streaming watch');
        const watchOn = r.standin;
        const cut = r.log.watches.at(-1);
        const victim = FAULT[fault].victim(h, watchOn);
        const stop = stream();
        await sleep(1500);
        const t0 = performance.now();
        const at = Date.now();
        undo = () => FAULT[fault].undo(victim);
        const applied = FAULT[fault].apply(victim);
        // Until requests answer again and the watch, once cut, delivers events again (a silent connection
        // through a lost holder lasts until client-go's HTTP/2 health check gives up: 30 s idle, 15 s ping).
        const back = (l) => cut.endedAt !== undefined && l.events.some((e) => e.at > cut.endedAt);
        let answering = false;
        while (performance.now() - t0 < 120_000) {
          answering ||= await request();
          if (answering && back(r.log)) break;
          await sleep(50);
        }
        await applied;
        const seen = await stop();
        const recovered = answering && back(r.log);
        const watchBackMs = recovered ? r.log.events.find((e) => e.at > cut.endedAt).at - at : null;
        const after = await holder(inventory);
        const undoing = stream();
        const undone = undo();
        undo = undefined;
        await undone;
        await sleep(8000);
        const duringUndo = await undoing();
        const later = await holder(inventory);
        await r.stop();
        const v = analyse(r.log);
        row = {
          round,
          fault,
          holder: h,
          watchOn,
          victim,
          newHolder: after,
          laterHolder: later,
          movedBack: later !== after,
          ...seen,
          failedDuringUndo: duringUndo.failed,
          sentDuringUndo: duringUndo.sent,
          recovered,
          watchCutAfterMs: cut.endedAt === undefined ? null : cut.endedAt - at,
          watchBackMs,
          eventGapMs: v.longestGapMs,
          lost: v.missing.length,
          repeated: v.repeated.length,
          wrong: v.wrong,
          storeMatches: v.storeMatches,
          lists: v.lists,
          events: v.events,
          gone: r.log.gone,
          standins: v.standins,
          failures: r.log.failures.map((f) => f.what).slice(0, 5),
        };
      } catch (e) {
        // One run that fails (no streaming watch, a fault that cannot be undone) is reported, not the end of the bench.
        row = { round, fault, holder: h, error: e.message };
        if (undo) await undo().catch((u) => (row.undoError = u.message));
      } finally {
        await r.stop();
      }
      runs.push(row);
      console.error(JSON.stringify(row));
    }
  }
  const summary = (fault) => {
    const rs = runs.filter((r) => r.fault === fault && !r.error);
    const some = (k) => rs.filter((r) => r[k] !== null).map((r) => r[k]);
    return {
      fault,
      runs: rs.length,
      errors: runs.filter((r) => r.fault === fault && r.error).length,
      medianGapMs: median(rs.map((r) => r.gapMs)),
      maxGapMs: Math.max(...rs.map((r) => r.gapMs)),
      failed: rs.reduce((n, r) => n + r.failed, 0),
      sent: rs.reduce((n, r) => n + r.sent, 0),
      failedDuringUndo: rs.reduce((n, r) => n + r.failedDuringUndo, 0),
      medianEventGapMs: median(rs.map((r) => r.eventGapMs)),
      maxEventGapMs: Math.max(...rs.map((r) => r.eventGapMs)),
      lost: rs.reduce((n, r) => n + r.lost, 0),
      repeated: rs.reduce((n, r) => n + r.repeated, 0),
      storeRight: rs.filter((r) => r.storeMatches && r.wrong === 0).length,
      relists: rs.reduce((n, r) => n + r.lists - 1, 0),
      medianWatchBackMs: some('watchBackMs').length ? median(some('watchBackMs')) : null,
      notRecovered: rs.filter((r) => !r.recovered).length,
      vipMoved: rs.filter((r) => r.newHolder !== r.holder).length,
      movedBack: rs.filter((r) => r.movedBack).length,
    };
  };
  const groups = FAULTS.map(summary);
  printTable([
    ['fault', 'runs', 'median req gap ms', 'max req gap ms', 'failed/sent (undo)', 'median event gap ms', 'max event gap ms', 'lost', 'store right', 'relists', 'median watch back ms', 'VIP moved', 'moved back', 'not recovered'],
    ...groups.map((s) => [
      s.fault,
      s.runs,
      s.medianGapMs,
      s.maxGapMs,
      `${s.failed}/${s.sent} (${s.failedDuringUndo})`,
      s.medianEventGapMs,
      s.maxEventGapMs,
      s.lost,
      `${s.storeRight}/${s.runs}`,
      s.relists,
      s.medianWatchBackMs ?? '-',
      s.vipMoved,
      s.movedBack,
      s.notRecovered + s.errors,
    ]),
  ]);
  const seconds = Math.round((performance.now() - started) / 1000);
  console.log(JSON.stringify({ benchmark: 'vip', client: 'GET /version every 50 ms; kubectl 1.20 reflector', rounds: Number(values.rounds), lagMs: Number(values.lag), cores: os.cpus().length, seconds, firstDeployMs: first.wallMs, groups, runs }));
} finally {
  if (!values.keep) labDown(dir);
}
