// Deploy speed on a fresh lab: npm run bench:deploy -- --nodes 20 [--masters 3] [--keep]
// Builds nginx once (cached), starts a fresh N-node lab, then times, through the real CLI:
// a first deploy, a no-op deploy, and a config-only change (reload). Also times the floor:
// N parallel SSH logins running `true`. Prints a table, then one JSON line.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import YAML from 'yaml';
import { buildArtifacts, prepareDeploy } from '../dist/engine/deploy.js';
import { SshConnection } from '../dist/connect/ssh.js';
import { resolveTarget } from '../dist/connect/targets.js';
import { loadInventory } from '../dist/inventory/load.js';
import { cli, labDown, printTable } from './bench-util.js';

const { values } = parseArgs({
  options: { nodes: { type: 'string', default: '20' }, masters: { type: 'string', default: '3' }, keep: { type: 'boolean', default: false } },
});
const nodes = Number(values.nodes);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-bench-deploy-'));
fs.rmdirSync(dir);

try {
  const lab = cli(['lab', 'up', '--dir', dir, '--nodes', String(nodes), '--masters', values.masters, '--json'], { json: true }).out;
  const inventory = lab.inventory;
  // Build once, outside the timings (the benchmark is about distribution).
  const run = await prepareDeploy({ inventoryFile: inventory, concurrency: 64, acceptNewHostKeys: false });
  await buildArtifacts(run, () => {});

  // The floor: N parallel SSH logins, each running `true`.
  const { inventory: inv } = await loadInventory(inventory);
  const t0 = Date.now();
  await Promise.all(
    inv.nodes.map(async (n) => {
      const c = await SshConnection.open(resolveTarget(inv, n, { sshConfig: null }));
      await c.exec('true');
      c.close();
    }),
  );
  const sshFloorMs = Date.now() - t0;

  const first = cli(['deploy', '-i', inventory, '--json'], { json: true });
  const noop = cli(['deploy', '-i', inventory, '--json'], { json: true });
  const changedInv = path.join(dir, 'inventory.maxfails.yaml');
  const doc = YAML.parse(fs.readFileSync(inventory, 'utf8'));
  doc.lb.maxFails = 2;
  fs.writeFileSync(changedInv, YAML.stringify(doc));
  const config = cli(['deploy', '-i', changedInv, '--json'], { json: true });
  for (const [name, r, changed] of [['first', first, nodes], ['no-op', noop, 0], ['config', config, nodes]]) {
    if (!r.out.ok || r.out.totals.changed !== changed) throw new Error(`${name} deploy: unexpected result ${JSON.stringify(r.out.totals)}`);
  }
  const result = {
    benchmark: 'deploy',
    nodes,
    cores: os.cpus().length,
    sshFloorMs,
    firstDeploy: { wallMs: first.wallMs, engineMs: first.out.durationMs },
    noopDeploy: { wallMs: noop.wallMs, engineMs: noop.out.durationMs },
    configChange: { wallMs: config.wallMs, engineMs: config.out.durationMs },
  };
  const rows = [
    ['run', 'wall ms', 'engine ms'],
    [`${nodes} parallel SSH logins + \`true\` (floor)`, sshFloorMs, ''],
    ['first deploy (binary cached)', first.wallMs, first.out.durationMs],
    ['no-op deploy', noop.wallMs, noop.out.durationMs],
    ['config-only change (reload)', config.wallMs, config.out.durationMs],
  ];
  printTable(rows);
  console.log(JSON.stringify(result));
} finally {
  if (!values.keep) labDown(dir);
}
