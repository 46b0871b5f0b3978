// Deploy speed and bounds on a fresh lab: npm run bench:deploy -- --nodes 20 [--concurrency 64] [--masters 3] [--keep]
// Starts an N-node lab, builds nginx once (outside the timings), then calls the engine's runDeploy
// directly for: a first deploy, a no-op deploy, and a config-only change (a rolled reload). For
// each: wall time, time per node, the most SSH sessions open at once (never above --concurrency),
// and the controller's peak RSS. The floor, measured in the same run: N SSH logins running `true`,
// at most --concurrency at once. Prints a table, then one JSON line.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import YAML from 'yaml';
import { buildArtifacts, loadSetup } from '../dist/engine/deploy.js';
import { runDeploy } from '../dist/engine/run.js';
import { SshConnection } from '../dist/connect/ssh.js';
import { mapLimit } from '../dist/util/pool.js';
import { cli, labDown, printTable, settle } from './bench-util.js';

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
async function timedDeploy(name, inventoryFile, expectChanged) {
  let peakRss = process.memoryUsage().rss;
  const sampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 20);
  const t0 = performance.now();
  let events = 0;
  const report = await runDeploy({ inventoryFile, concurrency, acceptNewHostKeys: false }, () => events++);
  const wallMs = Math.round(performance.now() - t0);
  clearInterval(sampler);
  if (!report.ok || report.totals.changed !== expectChanged) throw new Error(`${name}: unexpected result ${JSON.stringify(report.totals)}`);
  return { wallMs, perNodeMs: +(wallMs / nodes).toFixed(1), peakSessions: report.peakSessions, peakRssMb: +(peakRss / 1e6).toFixed(1), events };
}

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
  const floors = [];
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    await mapLimit(setup.nodes, concurrency, async (n) => {
      const c = await SshConnection.open(setup.targets.get(n.name));
      await c.exec('true');
      c.close();
    });
    floors.push(Math.round(performance.now() - t0));
  }
  const sshFloorMs = Math.min(...floors);

  const first = await timedDeploy('first', inventory, nodes);
  const noop = await timedDeploy('no-op', inventory, 0);
  const changedInv = path.join(dir, 'inventory.maxfails.yaml');
  const doc = YAML.parse(fs.readFileSync(inventory, 'utf8'));
  doc.lb.maxFails = 2;
  fs.writeFileSync(changedInv, YAML.stringify(doc));
  const config = await timedDeploy('config', changedInv, nodes);
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
    configChange: { ...config, floorRatio: ratio(config) },
  };
  printTable([
    ['run', 'wall ms', 'ms/node', '× floor', 'peak sessions', 'peak RSS MB'],
    [`${nodes} SSH logins + \`true\`, ${concurrency} at once (floor)`, sshFloorMs, (sshFloorMs / nodes).toFixed(1), '1', '', ''],
    ['first deploy (binary cached)', first.wallMs, first.perNodeMs, ratio(first), first.peakSessions, first.peakRssMb],
    ['no-op deploy', noop.wallMs, noop.perNodeMs, ratio(noop), noop.peakSessions, noop.peakRssMb],
    ['config-only change (rolled reload, 25%)', config.wallMs, config.perNodeMs, ratio(config), config.peakSessions, config.peakRssMb],
  ]);
  console.log(JSON.stringify(result));
} finally {
  if (!values.keep) labDown(dir);
}
