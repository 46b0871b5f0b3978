// Deploy speed and bounds on a fresh lab: npm run bench:deploy -- --nodes 20 [--concurrency 64] [--masters 3] [--keep] [--dir DIR: the lab there, kept; a fresh one for a first deploy]
// Starts an N-node lab, builds nginx once (outside the timings), then calls the engine's runDeploy
// directly for: a first deploy, a no-op deploy, a config-only change (a rolled reload), and a new
// nginx binary on every node twice: upgraded in place (USR2), then the way it was before in-place
// upgrades (a restart), each under load (short requests through every node's 127.0.0.1:8443,
// counting the failed ones). For each: wall time, time per node, the most SSH sessions open at once
// (never above --concurrency), and the controller's peak RSS and heap (what the run added at its peak,
// and what it keeps once collected). The floor, measured in the same run:
// N SSH logins running `true`, at most --concurrency at once. Also the static binary's size.
// The load is bounded like the engine: at most --concurrency nodes carry it (spread over the whole
// list), logged in to --concurrency at a time; a node it cannot reach is counted, not fatal.
// Each phase prints its row as soon as it ends; a phase that fails is reported and ends the
// measurements, keeping what was measured. Then the table again, and one JSON line.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import YAML from 'yaml';
import { buildArtifacts, loadSetup } from '../dist/engine/deploy.js';
import { runDeploy } from '../dist/engine/run.js';
import { SshConnection } from '../dist/connect/ssh.js';
import { httpsGet } from '../dist/connect/https-probe.js';
import { mapLimit } from '../dist/util/pool.js';
import { cli, labDir, labDown, printTable, settle, sshFloor } from './bench-util.js';

const { values } = parseArgs({
  options: {
    nodes: { type: 'string', default: '20' },
    masters: { type: 'string', default: '3' },
    concurrency: { type: 'string', default: '64' },
    keep: { type: 'boolean', default: false },
    dir: { type: 'string' },
  },
});
const nodes = Number(values.nodes);
const concurrency = Number(values.concurrency);
// --dir: the lab's folder, kept afterwards (one 200-node lab for bench:deploy, then bench:status).
const dir = labDir('deploy', values.dir);

/** Run the engine once, sampling the controller's RSS; throws unless every node ends as expected. */
async function timedDeploy(name, inventoryFile, expectChanged, playbookFile) {
  // The heap from a settled start (node --expose-gc, as npm run bench:deploy starts it): what the run
  // adds at its peak, and what it still holds once collected (its report, as the CLI holds it to print).
  globalThis.gc?.();
  const heapBase = process.memoryUsage().heapUsed;
  let peakRss = process.memoryUsage().rss;
  let peakHeap = heapBase;
  const sampler = setInterval(() => {
    const m = process.memoryUsage();
    peakRss = Math.max(peakRss, m.rss);
    peakHeap = Math.max(peakHeap, m.heapUsed);
  }, 20);
  const t0 = performance.now();
  let events = 0;
  const report = await runDeploy({ inventoryFile, concurrency, acceptNewHostKeys: false, playbookFile }, () => events++);
  const wallMs = Math.round(performance.now() - t0);
  clearInterval(sampler);
  if (!report.ok || report.totals.changed !== expectChanged) {
    const failed = Object.entries(report.hosts).filter(([, h]) => h.status === 'failed' || h.status === 'unreachable');
    const why = failed.slice(0, 3).map(([n, h]) => `${n}: ${h.error ?? h.status}`).join('; ');
    throw new Error(`${name}: unexpected result ${JSON.stringify(report.totals)}${why ? `: ${why}${failed.length > 3 ? ` (and ${failed.length - 3} more)` : ''}` : ''}`);
  }
  globalThis.gc?.();
  const mb = (b) => +(b / 1e6).toFixed(1);
  const heap = { peakAddedMb: mb(peakHeap - heapBase), retainedMb: globalThis.gc ? mb(process.memoryUsage().heapUsed - heapBase) : undefined };
  return { wallMs, perNodeMs: +(wallMs / nodes).toFixed(1), peakSessions: report.peakSessions, peakRssMb: mb(peakRss), heap, events, ssh: report.ssh, perNode: perNode(report.ssh), report };
}

/** The built-in kube-nginx playbook with one more stream module (another binary), its binary step notifying `notify`. */
function playbookVariant(file, extraConfigure, notify) {
  const pb = YAML.parse(fs.readFileSync(new URL('../playbooks/kube-nginx.yaml', import.meta.url), 'utf8'));
  const build = pb.steps.find((st) => st.nginxBuild);
  if (extraConfigure) build.nginxBuild.configure.push(extraConfigure);
  pb.steps.find((st) => st.name === 'binary').file.notify = notify;
  fs.writeFileSync(file, YAML.stringify(pb));
  return file;
}

/** At most `limit` of `list`, spread evenly over it (first, last and between). */
function spread(list, limit) {
  if (list.length <= limit) return [...list];
  return Array.from({ length: limit }, (_, i) => list[Math.round((i * (list.length - 1)) / Math.max(1, limit - 1))]);
}

/**
 * Short requests through the 127.0.0.1:8443 of at most --concurrency nodes (spread over the list),
 * one at a time per node, while `fn` runs: how many failed. Logins go --concurrency at a time; a node
 * that cannot be reached is counted in `unreachable` and carries no load.
 */
async function underLoad(setup, caPem, fn) {
  const sample = spread(setup.nodes, concurrency);
  const unreachable = [];
  const conns = (
    // Under a name of their own: what the load costs is not counted against the deploy's nodes.
    await mapLimit(sample, concurrency, (n) =>
      SshConnection.open({ ...setup.targets.get(n.name), name: `${n.name} (load)` }).catch((e) => {
        unreachable.push(`${n.name}: ${e.message}`);
        return undefined;
      }),
    )
  ).filter(Boolean);
  let running = true;
  const counts = { nodes: conns.length, of: setup.nodes.length, unreachable, requests: 0, failed: 0, errors: [] };
  const loops = conns.map(async (c) => {
    while (running) {
      try {
        const r = await httpsGet(() => c.connectFromHost('127.0.0.1', 8443), { path: '/version', ca: caPem, servername: 'kubernetes', timeoutMs: 5000 });
        if (r.status !== 200) throw new Error(`HTTP ${r.status}`);
      } catch (e) {
        counts.failed++;
        if (counts.errors.length < 5) counts.errors.push(`${c.name}: ${e.message}`);
      }
      counts.requests++;
      await new Promise((r) => setTimeout(r, 100));
    }
  });
  try {
    const result = await fn();
    return { ...result, load: counts };
  } finally {
    running = false;
    await Promise.all(loops);
    for (const c of conns) c.close();
  }
}

const strip = ({ report, ...rest }) => rest;

/** The run's SSH counts per node (deploy's --json ssh, added up over its nodes, divided by them). */
function perNode(ssh) {
  if (!ssh) return undefined;
  const per = (k) => +(ssh[k] / nodes).toFixed(2);
  return { logins: per('logins'), execs: per('execs'), channels: per('channels'), tlsFull: per('tlsFull'), tlsResumed: per('tlsResumed'), kbOut: +(ssh.bytesOut / nodes / 1024).toFixed(1), kbIn: +(ssh.bytesIn / nodes / 1024).toFixed(1) };
}
/** The counts' cells of a row. */
const countCells = (x) => !x.perNode ? ['', '', '', ''] : [`${x.perNode.logins} / ${x.perNode.execs} / ${x.perNode.channels}`, `${x.perNode.tlsFull} / ${x.perNode.tlsResumed}`, `${x.perNode.kbOut} / ${x.perNode.kbIn}`, x.ssh.controllerCpuMs];
const HEADER = ['run', 'wall ms', 'ms/node', '× floor', 'peak sessions', 'peak RSS MB', 'heap MB: peak added / kept', 'per node: logins / execs / channels', 'TLS full / resumed', 'KB out / in', 'controller CPU ms'];
const rows = [];
/** One finished row: printed now (a long run shows each phase as it ends), and kept for the table at the end. */
function row(cells) {
  rows.push(cells);
  printTable([HEADER, cells].map((r) => r.map(String)));
}

const result = { benchmark: 'deploy', nodes, concurrency, cores: os.cpus().length };
let exitCode = 0;
try {
  const t = performance.now();
  const lab = cli(['lab', 'up', '--dir', dir, '--nodes', String(nodes), '--masters', values.masters, '--json'], { json: true }).out;
  result.labUpMs = Math.round(performance.now() - t);
  const inventory = lab.inventory;
  // Containers that just booted keep the 2 cores busy for a while: measure on a settled machine.
  result.settledAfterMs = await settle();
  // Build once, outside the timings (the benchmark is about distribution).
  await buildArtifacts(await loadSetup({ inventoryFile: inventory, concurrency, acceptNewHostKeys: false }), () => {});

  // The floor: N SSH logins running `true`, at most --concurrency at once (the best of three).
  const setup = await loadSetup({ inventoryFile: inventory, concurrency, acceptNewHostKeys: false });
  const { ms: sshFloorMs, runsMs: floors } = await sshFloor(setup, concurrency);
  Object.assign(result, { sshFloorMs, sshFloorRunsMs: floors });
  row([`${nodes} SSH logins + \`true\`, ${concurrency} at once (floor, best of ${floors.length})`, sshFloorMs, (sshFloorMs / nodes).toFixed(1), '1', '', '', '', '1 / 1 / 1', '', '', '']);
  const ratio = (x) => +(x.wallMs / sshFloorMs).toFixed(2);
  const loadWords = (x) => `${x.load.failed} of ${x.load.requests} requests failed on ${x.load.nodes} of ${x.load.of} nodes${x.load.unreachable.length ? `, ${x.load.unreachable.length} unreachable` : ''}`;
  const summaries = (x) => [...new Set(Object.values(x.report.hosts).map((h) => h.steps.find((st) => st.name === 'service')?.summary))];
  /** One phase: measured, its row printed, kept in the result under `key`. */
  const phase = async (key, label, fn) => {
    const x = await fn();
    result[key] = { ...strip(x), floorRatio: ratio(x), ...(x.load ? { service: summaries(x) } : {}) };
    row([typeof label === 'function' ? label(x) : label, x.wallMs, x.perNodeMs, ratio(x), x.peakSessions, x.peakRssMb, x.heap ? `${x.heap.peakAddedMb} / ${x.heap.retainedMb ?? '?'}` : '', ...countCells(x)]);
    return x;
  };

  await phase('firstDeploy', 'first deploy (binary cached)', () => timedDeploy('first', inventory, nodes));
  await phase('noopDeploy', 'no-op deploy', () => timedDeploy('no-op', inventory, 0));
  const changedInv = path.join(dir, 'inventory.maxfails.yaml');
  const doc = YAML.parse(fs.readFileSync(inventory, 'utf8'));
  doc.lb.maxFails = 2;
  fs.writeFileSync(changedInv, YAML.stringify(doc));
  await phase('configChange', 'config-only change (rolled reload, 25%)', () => timedDeploy('config', changedInv, nodes));
  // A new binary on every node: built outside the timings, then upgraded in place; then the first binary back by restarts.
  const inPlacePb = playbookVariant(path.join(dir, 'kube-nginx.realip.yaml'), '--with-stream_realip_module', ['upgrade']);
  const restartPb = playbookVariant(path.join(dir, 'kube-nginx.restart.yaml'), undefined, ['restart']);
  const built = await buildArtifacts(await loadSetup({ inventoryFile: changedInv, concurrency, acceptNewHostKeys: false, playbookFile: inPlacePb }), () => {});
  result.staticBinary = { sizeBytes: built.nginx[0].size, link: built.nginx[0].link, osKey: built.nginx[0].osKey };
  const caPem = fs.readFileSync(path.join(dir, 'pki', 'ca.crt'), 'utf8');
  const loadSetupOf = await loadSetup({ inventoryFile: changedInv, concurrency, acceptNewHostKeys: false });
  await phase('binaryInPlace', (x) => `new binary, upgraded in place (${loadWords(x)})`, () => underLoad(loadSetupOf, caPem, () => timedDeploy('upgrade in place', changedInv, nodes, inPlacePb)));
  await phase('binaryRestart', (x) => `new binary, restarted (${loadWords(x)})`, () => underLoad(loadSetupOf, caPem, () => timedDeploy('restart', changedInv, nodes, restartPb)));
  console.log(`static nginx: ${(result.staticBinary.sizeBytes / 1e6).toFixed(2)} MB (${result.staticBinary.osKey}); services: in place ${result.binaryInPlace.service.join(' / ')}, restart ${result.binaryRestart.service.join(' / ')}`);
} catch (e) {
  // What was measured stays: the table and the JSON below carry it, with the error.
  result.error = e.message;
  console.error(`bench:deploy stopped: ${e.message}`);
  exitCode = 1;
} finally {
  if (!values.keep && !values.dir) labDown(dir);
}
console.log('');
printTable([HEADER, ...rows].map((r) => r.map(String)));
console.log(JSON.stringify(result));
process.exitCode = exitCode;
