// Deploy speed and bounds on a fresh lab: npm run bench:deploy -- --nodes 20 [--concurrency 64] [--masters 3] [--keep]
// Starts an N-node lab, builds nginx once (outside the timings), then calls the engine's runDeploy
// directly for: a first deploy, a no-op deploy, a config-only change (a rolled reload), and a new
// nginx binary on every node twice: upgraded in place (USR2), then the way it was before in-place
// upgrades (a restart), each under load (short requests through every node's 127.0.0.1:8443,
// counting the failed ones). For each: wall time, time per node, the most SSH sessions open at once
// (never above --concurrency), and the controller's peak RSS. The floor, measured in the same run:
// N SSH logins running `true`, at most --concurrency at once. Also the static binary's size.
// Prints a table, then one JSON line.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import YAML from 'yaml';
import { buildArtifacts, loadSetup } from '../dist/engine/deploy.js';
import { runDeploy } from '../dist/engine/run.js';
import { SshConnection } from '../dist/connect/ssh.js';
import { httpsGet } from '../dist/connect/https-probe.js';
import { cli, labDown, printTable, settle, sshFloor } from './bench-util.js';

const { values } = parseArgs({
  options: {
    nodes: { type: 'string', default: '20' },
    masters: { type: 'string', default: '3' },
    concurrency: { type: 'string', default: '64' },
    keep: { type: 'boolean', default: false },
  },
});
const nodes = Number(values.nodes);
const concurrency = Number(values.concurrency);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-bench-deploy-'));
fs.rmdirSync(dir);

/** Run the engine once, sampling the controller's RSS; throws unless every node ends as expected. */
async function timedDeploy(name, inventoryFile, expectChanged, playbookFile) {
  let peakRss = process.memoryUsage().rss;
  const sampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 20);
  const t0 = performance.now();
  let events = 0;
  const report = await runDeploy({ inventoryFile, concurrency, acceptNewHostKeys: false, playbookFile }, () => events++);
  const wallMs = Math.round(performance.now() - t0);
  clearInterval(sampler);
  if (!report.ok || report.totals.changed !== expectChanged) throw new Error(`${name}: unexpected result ${JSON.stringify(report.totals)}`);
  return { wallMs, perNodeMs: +(wallMs / nodes).toFixed(1), peakSessions: report.peakSessions, peakRssMb: +(peakRss / 1e6).toFixed(1), events, report };
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

/** Short requests through every node's 127.0.0.1:8443 (each node in turn, one at a time per node) while `fn` runs: how many failed. */
async function underLoad(setup, caPem, fn) {
  const conns = await Promise.all(setup.nodes.map((n) => SshConnection.open(setup.targets.get(n.name))));
  let running = true;
  const counts = { requests: 0, failed: 0, errors: [] };
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

try {
  const t = performance.now();
  const lab = cli(['lab', 'up', '--dir', dir, '--nodes', String(nodes), '--masters', values.masters, '--json'], { json: true }).out;
  const labUpMs = Math.round(performance.now() - t);
  const inventory = lab.inventory;
  // Containers that just booted keep the 2 cores busy for a while: measure on a settled machine.
  const settledAfterMs = await settle();
  // Build once, outside the timings (the benchmark is about distribution).
  await buildArtifacts(await loadSetup({ inventoryFile: inventory, concurrency, acceptNewHostKeys: false }), () => {});

  // The floor: N SSH logins running `true`, at most --concurrency at once (the best of three).
  const setup = await loadSetup({ inventoryFile: inventory, concurrency, acceptNewHostKeys: false });
  const { ms: sshFloorMs, runsMs: floors } = await sshFloor(setup, concurrency);

  const first = await timedDeploy('first', inventory, nodes);
  const noop = await timedDeploy('no-op', inventory, 0);
  const changedInv = path.join(dir, 'inventory.maxfails.yaml');
  const doc = YAML.parse(fs.readFileSync(inventory, 'utf8'));
  doc.lb.maxFails = 2;
  fs.writeFileSync(changedInv, YAML.stringify(doc));
  const config = await timedDeploy('config', changedInv, nodes);
  // A new binary on every node: built outside the timings, then upgraded in place; then the first binary back by restarts.
  const inPlacePb = playbookVariant(path.join(dir, 'kube-nginx.realip.yaml'), '--with-stream_realip_module', ['upgrade']);
  const restartPb = playbookVariant(path.join(dir, 'kube-nginx.restart.yaml'), undefined, ['restart']);
  const built = await buildArtifacts(await loadSetup({ inventoryFile: changedInv, concurrency, acceptNewHostKeys: false, playbookFile: inPlacePb }), () => {});
  const caPem = fs.readFileSync(path.join(dir, 'pki', 'ca.crt'), 'utf8');
  const loadSetupOf = await loadSetup({ inventoryFile: changedInv, concurrency, acceptNewHostKeys: false });
  const inPlace = await underLoad(loadSetupOf, caPem, () => timedDeploy('upgrade in place', changedInv, nodes, inPlacePb));
  const summaries = (x) => [...new Set(Object.values(x.report.hosts).map((h) => h.steps.find((st) => st.name === 'service')?.summary))];
  const restart = await underLoad(loadSetupOf, caPem, () => timedDeploy('restart', changedInv, nodes, restartPb));
  const staticBinary = { sizeBytes: built.nginx.size, link: built.nginx.link, osKey: built.nginx.osKey };
  const ratio = (x) => +(x.wallMs / sshFloorMs).toFixed(2);
  const result = {
    benchmark: 'deploy',
    nodes,
    concurrency,
    cores: os.cpus().length,
    labUpMs,
    settledAfterMs,
    sshFloorMs,
    sshFloorRunsMs: floors,
    firstDeploy: { ...first, floorRatio: ratio(first) },
    noopDeploy: { ...noop, floorRatio: ratio(noop) },
    configChange: { ...strip(config), floorRatio: ratio(config) },
    staticBinary,
    binaryInPlace: { ...strip(inPlace), floorRatio: ratio(inPlace), service: summaries(inPlace) },
    binaryRestart: { ...strip(restart), floorRatio: ratio(restart), service: summaries(restart) },
  };
  result.firstDeploy = { ...strip(first), floorRatio: ratio(first) };
  result.noopDeploy = { ...strip(noop), floorRatio: ratio(noop) };
  printTable([
    ['run', 'wall ms', 'ms/node', '× floor', 'peak sessions', 'peak RSS MB'],
    [`${nodes} SSH logins + \`true\`, ${concurrency} at once (floor)`, sshFloorMs, (sshFloorMs / nodes).toFixed(1), '1', '', ''],
    ['first deploy (binary cached)', first.wallMs, first.perNodeMs, ratio(first), first.peakSessions, first.peakRssMb],
    ['no-op deploy', noop.wallMs, noop.perNodeMs, ratio(noop), noop.peakSessions, noop.peakRssMb],
    ['config-only change (rolled reload, 25%)', config.wallMs, config.perNodeMs, ratio(config), config.peakSessions, config.peakRssMb],
    [`new binary, upgraded in place (${inPlace.load.failed} of ${inPlace.load.requests} requests failed)`, inPlace.wallMs, inPlace.perNodeMs, ratio(inPlace), inPlace.peakSessions, inPlace.peakRssMb],
    [`new binary, restarted (${restart.load.failed} of ${restart.load.requests} requests failed)`, restart.wallMs, restart.perNodeMs, ratio(restart), restart.peakSessions, restart.peakRssMb],
  ]);
  console.log(`static nginx: ${(staticBinary.sizeBytes / 1e6).toFixed(2)} MB (${staticBinary.osKey}); services: in place ${summaries(inPlace).join(' / ')}, restart ${summaries(restart).join(' / ')}`);
  console.log(JSON.stringify(result));
} finally {
  if (!values.keep) labDown(dir);
}
