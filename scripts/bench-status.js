// How long `k8s-ha status` takes on a fresh lab where every node runs kube-nginx.
// Usage: npm run bench:status -- --nodes 50 [--masters 3] [--runs 3]   Prints a table, then one JSON line.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { nodes: { type: 'string', default: '50' }, masters: { type: 'string', default: '3' }, runs: { type: 'string', default: '3' } } });
const bin = new URL('../bin/k8s-ha.js', import.meta.url).pathname;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-bench-status-'));
fs.rmdirSync(dir);

function cli(args) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' }, maxBuffer: 64 << 20 });
  const wallMs = Math.round(Number(process.hrtime.bigint() - t0) / 1e6);
  if (r.status !== 0) {
    process.stderr.write(r.stdout + r.stderr);
    throw new Error(`k8s-ha ${args.join(' ')} exited ${r.status}`);
  }
  return { wallMs, stdout: r.stdout };
}

const nodes = Number(values.nodes);
try {
  const lab = JSON.parse(cli(['lab', 'up', '--dir', dir, '--nodes', String(nodes), '--masters', values.masters, '--json']).stdout);
  cli(['deploy', '-i', lab.inventory, '--serial', '100%']);
  const runs = [];
  for (let i = 0; i < Number(values.runs); i++) {
    const r = cli(['status', '-i', lab.inventory, '--json']);
    const s = JSON.parse(r.stdout);
    if (s.healthy !== nodes) throw new Error(`status saw ${s.healthy}/${nodes} healthy nodes`);
    runs.push({ wallMs: r.wallMs, engineMs: s.durationMs });
  }
  const result = { benchmark: 'status', nodes, masters: Number(values.masters), cores: os.cpus().length, runs };
  console.log('run  wall ms  engine ms');
  runs.forEach((r, i) => console.log(`${String(i + 1).padEnd(3)}  ${String(r.wallMs).padStart(7)}  ${String(r.engineMs).padStart(9)}`));
  console.log(JSON.stringify(result));
} finally {
  spawnSync(process.execPath, [bin, 'lab', 'down', '--dir', dir], { stdio: 'ignore' });
}
