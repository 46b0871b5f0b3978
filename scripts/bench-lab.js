// Times `k8s-ha lab up` for N nodes once the images exist, a second (no-op) `lab up`, and `lab down`.
// Usage: npm run bench:lab -- --nodes 50   Prints a table, then one JSON line.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { nodes: { type: 'string', default: '50' }, masters: { type: 'string', default: '3' } } });
const bin = new URL('../bin/k8s-ha.js', import.meta.url).pathname;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-bench-lab-'));
fs.rmdirSync(dir);

function timed(args) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0) {
    process.stderr.write(r.stdout + r.stderr);
    throw new Error(`k8s-ha ${args.join(' ')} exited ${r.status}`);
  }
  return Math.round(ms);
}

// Make sure the images exist first: this benchmark is about starting a lab, not building images.
timed(['lab', 'up', '--dir', dir, '--nodes', '1', '--masters', '1']);
timed(['lab', 'down', '--dir', dir]);

const nodes = Number(values.nodes);
const masters = Number(values.masters);
let result;
try {
  result = {
    benchmark: 'lab',
    nodes,
    masters,
    cores: os.cpus().length,
    upMs: timed(['lab', 'up', '--dir', dir, '--nodes', String(nodes), '--masters', String(masters)]),
    upAgainMs: timed(['lab', 'up', '--dir', dir, '--nodes', String(nodes), '--masters', String(masters)]),
    downMs: timed(['lab', 'down', '--dir', dir]),
  };
} finally {
  // Never leave a half-started lab behind.
  spawnSync(process.execPath, [bin, 'lab', 'down', '--dir', dir], { stdio: 'ignore' });
}
const rows = [
  ['step', 'ms'],
  [`lab up, ${nodes} nodes + ${masters} masters + mirror (images cached)`, result.upMs],
  ['lab up again (no change)', result.upAgainMs],
  ['lab down', result.downMs],
];
const w = Math.max(...rows.map((r) => String(r[0]).length));
for (const r of rows) console.log(String(r[0]).padEnd(w) + '  ' + String(r[1]).padStart(6));
console.log(JSON.stringify(result));
