// How long `k8s-ha status` takes on a fresh lab where every node runs kube-nginx, and whether it tells
// the truth: every node is healthy, so any unknown or down is the probe plan's fault.
// Usage: npm run bench:status -- --nodes 50 [--masters 3] [--runs 3] [--concurrency 64] [--keep] [--dir DIR: the lab there (its nodes deployed first), kept]
// Prints a table (wall time against the floor, healthy/unknown/down, peak probes at once, slowest node
// per phase, what each node cost over SSH), then one JSON line. The floor, measured in the same run:
// every node logged in to over SSH running `true`, --concurrency at once (status's own default, 64).
import os from 'node:os';
import { parseArgs } from 'node:util';
import { spawnSync } from 'node:child_process';
import { loadSetup } from '../dist/engine/deploy.js';
import { bin, cli, labDir, labDown, printTable, settle, sshFloor } from './bench-util.js';

const { values } = parseArgs({
  options: {
    nodes: { type: 'string', default: '50' },
    masters: { type: 'string', default: '3' },
    runs: { type: 'string', default: '3' },
    concurrency: { type: 'string', default: '64' },
    keep: { type: 'boolean', default: false },
    dir: { type: 'string' },
  },
});
// --dir: the lab's folder, kept afterwards (one 200-node lab for bench:deploy, then bench:status).
const dir = labDir('status', values.dir);

const nodes = Number(values.nodes);
try {
  const t = performance.now();
  const lab = cli(['lab', 'up', '--dir', dir, '--nodes', String(nodes), '--masters', values.masters, '--json'], { json: true }).out;
  const labUpMs = Math.round(performance.now() - t);
  cli(['deploy', '-i', lab.inventory, '--serial', '100%']);
  const settledAfterMs = await settle();
  const concurrency = Number(values.concurrency);
  const { ms: sshFloorMs, runsMs: sshFloorRunsMs } = await sshFloor(await loadSetup({ inventoryFile: lab.inventory, concurrency, acceptNewHostKeys: false }), concurrency);
  const runs = [];
  for (let i = 0; i < Number(values.runs); i++) {
    // status exits 3 (down) or 6 (unknown) without that being a failure of the benchmark: it is what is measured.
    const t0 = performance.now();
    const r = spawnSync(process.execPath, [bin, 'status', '-i', lab.inventory, '--json', '--concurrency', String(concurrency)], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' }, maxBuffer: 64 << 20 });
    const wallMs = Math.round(performance.now() - t0);
    const s = JSON.parse(r.stdout);
    runs.push({ wallMs, engineMs: s.durationMs, exit: r.status, healthy: s.healthy, unknown: s.unknown, down: s.down, probes: s.probes, phases: s.phases, ssh: s.ssh });
  }
  for (const r of runs) r.floorRatio = +(r.wallMs / sshFloorMs).toFixed(2);
  const result = { benchmark: 'status', nodes, masters: Number(values.masters), concurrency, cores: os.cpus().length, labUpMs, settledAfterMs, sshFloorMs, sshFloorRunsMs, runs };
  console.log(`floor: ${nodes} SSH logins + \`true\`, ${concurrency} at once: ${sshFloorMs} ms (best of ${sshFloorRunsMs.length}: ${sshFloorRunsMs.join(', ')})`);
  printTable([
    ['run', 'wall ms', '× floor', 'engine ms', 'exit', 'healthy', 'unknown', 'down', 'probes at once (per master)', 'retried', 'slowest connect / facts / probes ms', 'per node: logins / execs / channels', 'TLS full / resumed', 'KB out / in', 'controller CPU ms'],
    ...runs.map((r, i) => [
      i + 1,
      r.wallMs,
      r.floorRatio,
      r.engineMs,
      r.exit,
      `${r.healthy}/${nodes}`,
      r.unknown,
      r.down,
      `${r.probes.peak} (${r.probes.peakPerTarget})`,
      r.probes.retried,
      `${r.phases.connectMs} / ${r.phases.factsMs} / ${r.phases.probesMs}`,
      ...(r.ssh
        ? [
            [r.ssh.logins, r.ssh.execs, r.ssh.channels].map((v) => (v / nodes).toFixed(2)).join(' / '),
            [r.ssh.tlsFull, r.ssh.tlsResumed].map((v) => (v / nodes).toFixed(2)).join(' / '),
            [r.ssh.bytesOut, r.ssh.bytesIn].map((v) => (v / nodes / 1024).toFixed(1)).join(' / '),
            r.ssh.controllerCpuMs,
          ]
        : ['', '', '', '']),
    ]),
  ]);
  console.log(JSON.stringify(result));
} finally {
  if (!values.keep && !values.dir) labDown(dir);
}
