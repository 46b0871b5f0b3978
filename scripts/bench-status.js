// How long `k8s-ha status` takes on a fresh lab where every node runs kube-nginx.
// Usage: npm run bench:status -- --nodes 50 [--masters 3] [--runs 3]   Prints a table, then one JSON line.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { cli, labDown, printTable } from './bench-util.js';

const { values } = parseArgs({ options: { nodes: { type: 'string', default: '50' }, masters: { type: 'string', default: '3' }, runs: { type: 'string', default: '3' } } });
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-bench-status-'));
fs.rmdirSync(dir);

const nodes = Number(values.nodes);
try {
  const lab = cli(['lab', 'up', '--dir', dir, '--nodes', String(nodes), '--masters', values.masters, '--json'], { json: true }).out;
  cli(['deploy', '-i', lab.inventory, '--serial', '100%']);
  const runs = [];
  for (let i = 0; i < Number(values.runs); i++) {
    const r = cli(['status', '-i', lab.inventory, '--json'], { json: true });
    const s = r.out;
    if (s.healthy !== nodes) throw new Error(`status saw ${s.healthy}/${nodes} healthy nodes`);
    runs.push({ wallMs: r.wallMs, engineMs: s.durationMs });
  }
  const result = { benchmark: 'status', nodes, masters: Number(values.masters), cores: os.cpus().length, runs };
  printTable([['run', 'wall ms', 'engine ms'], ...runs.map((r, i) => [i + 1, r.wallMs, r.engineMs])]);
  console.log(JSON.stringify(result));
} finally {
  labDown(dir);
}
