// Deploys through one bastion against the same deploys without it, on one lab:
//   npm run bench:bastion -- --nodes 50 [--concurrency 64] [--masters 3] [--keep]
// Starts an N-node lab with a bastion whose nodes are still reachable directly (--keep-direct),
// builds nginx once (outside the timings), installs once directly (untimed), then times, in pairs
// and in alternating order: a no-op deploy and a config change rolled in batches of 25%, each direct
// and through the bastion. For each run: wall time, node sessions at once, logins to the
// bastion as the engine counts them AND as the bastion's own sshd journal counts them. Prints a
// table, then one JSON line.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import YAML from 'yaml';
import { buildArtifacts, loadSetup } from '../dist/engine/deploy.js';
import { runDeploy } from '../dist/engine/run.js';
import { cli, labDir, labDown, printTable, settle } from './bench-util.js';

const { values } = parseArgs({
  options: {
    nodes: { type: 'string', default: '50' },
    masters: { type: 'string', default: '3' },
    concurrency: { type: 'string', default: '64' },
    keep: { type: 'boolean', default: false },
  },
});
const nodes = Number(values.nodes);
const concurrency = Number(values.concurrency);
const dir = labDir('bastion');

/** Logins the bastion's sshd accepted so far, from its journal. */
function journalLogins(container) {
  const r = spawnSync('docker', ['exec', container, 'sh', '-c', "journalctl -u ssh --no-pager -o cat | grep -c '^Accepted publickey' || true"], { encoding: 'utf8' });
  return Number(r.stdout.trim());
}

function variant(inventory, name, change) {
  const doc = YAML.parse(fs.readFileSync(inventory, 'utf8'));
  change(doc);
  const file = path.join(dir, `${path.basename(inventory, '.yaml')}.${name}.yaml`);
  fs.writeFileSync(file, YAML.stringify(doc));
  return file;
}

async function timed(kind, route, inventoryFile, expectChanged, bastion) {
  const journalBefore = journalLogins(bastion);
  const t0 = performance.now();
  const r = await runDeploy({ inventoryFile, concurrency, acceptNewHostKeys: false }, () => {});
  if (!r.ok || r.totals.changed !== expectChanged) throw new Error(`${kind} ${route}: unexpected result ${JSON.stringify(r.totals)}`);
  const peakSessions = r.peakSessions;
  const engineLogins = r.bastionLogins;
  const wallMs = Math.round(performance.now() - t0);
  // The journal line is written as the login completes; give journald a moment.
  await new Promise((r) => setTimeout(r, 300));
  return { kind, route, wallMs, peakSessions, bastionLogins: engineLogins, bastionJournalLogins: journalLogins(bastion) - journalBefore };
}

try {
  const t = performance.now();
  const lab = cli(['lab', 'up', '--dir', dir, '--nodes', String(nodes), '--masters', values.masters, '--bastion', '--keep-direct', '--json'], { json: true }).out;
  const labUpMs = Math.round(performance.now() - t);
  const bastionContainer = spawnSync('docker', ['ps', '-q', '--filter', `label=io.k8s-ha.lab.dir=${dir}`, '--filter', 'name=-bastion$'], { encoding: 'utf8' }).stdout.trim();
  const settledAfterMs = await settle();
  await buildArtifacts(await loadSetup({ inventoryFile: lab.inventory, concurrency, acceptNewHostKeys: false }), () => {});
  // Install once, directly and untimed: every timed run starts from the same installed nodes.
  const direct = lab.inventory;
  const through = lab.bastionInventory;
  let timeout = 11;
  const install = await runDeploy({ inventoryFile: variant(direct, 'install', (d) => (d.lb.proxyTimeout = `${timeout}m`)), concurrency, acceptNewHostKeys: false }, () => {});
  if (!install.ok) throw new Error('install failed');
  const runs = [];
  for (const order of [['direct', 'bastion'], ['bastion', 'direct']]) {
    for (const route of order) {
      const base = route === 'direct' ? direct : through;
      // Every inventory of a pair carries the same settings: the config was left by the run before.
      const current = variant(base, `t${timeout}`, (d) => (d.lb.proxyTimeout = `${timeout}m`));
      runs.push(await timed('no-op deploy', route, current, 0, bastionContainer));
      timeout++;
      const changed = variant(base, `t${timeout}`, (d) => (d.lb.proxyTimeout = `${timeout}m`));
      runs.push(await timed('config change (rolled, 25%)', route, changed, nodes, bastionContainer));
    }
  }
  const kinds = [...new Set(runs.map((r) => r.kind))];
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const summary = kinds.map((kind) => {
    const d = runs.filter((r) => r.kind === kind && r.route === 'direct').map((r) => r.wallMs);
    const b = runs.filter((r) => r.kind === kind && r.route === 'bastion').map((r) => r.wallMs);
    return { kind, directMs: d, bastionMs: b, ratio: +(Math.min(...b) / Math.min(...d)).toFixed(2) };
  });
  const result = { benchmark: 'bastion', nodes, concurrency, cores: os.cpus().length, labUpMs, settledAfterMs, runs, summary };
  printTable([
    ['run', 'route', 'wall ms', 'node sessions at once', 'bastion logins (engine)', 'bastion logins (bastion journal)'],
    ...runs.map((r) => [r.kind, r.route, r.wallMs, r.peakSessions ?? '', r.bastionLogins, r.bastionJournalLogins]),
  ]);
  console.log('');
  printTable([['run', 'direct ms (best)', 'bastion ms (best)', 'bastion / direct'], ...summary.map((s) => [s.kind, Math.min(...s.directMs), Math.min(...s.bastionMs), s.ratio])]);
  console.log(JSON.stringify({ ...result, medianRatio: median(summary.map((s) => s.ratio)) }));
} finally {
  if (!values.keep) labDown(dir);
}
