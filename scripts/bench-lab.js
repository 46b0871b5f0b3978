// Times `k8s-ha lab up` for N nodes once the images exist, a second (no-op) `lab up`, and `lab down`.
// Usage: npm run bench:lab -- --nodes 50   Prints a table, then one JSON line.
import os from 'node:os';
import { parseArgs } from 'node:util';
import { cli, labDir, labDown, printTable } from './bench-util.js';

const { values } = parseArgs({ options: { nodes: { type: 'string', default: '50' }, masters: { type: 'string', default: '3' } } });
const dir = labDir('lab');

const timed = (args) => cli(args).wallMs;

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
  labDown(dir);
}
const rows = [
  ['step', 'ms'],
  [`lab up, ${nodes} nodes + ${masters} masters + mirror (images cached)`, result.upMs],
  ['lab up again (no change)', result.upAgainMs],
  ['lab down', result.downMs],
];
printTable(rows);
console.log(JSON.stringify(result));
