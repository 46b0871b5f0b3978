// Failover as a real client sees it: npm run bench:clients -- [--rounds 2] [--keep]
// Starts a fresh lab (3 nodes, 4 masters), deploys node-1 on kube-nginx, node-2 on kube-lb and the
// VIP on master-1..3 through the real CLI. Then, --rounds times each, runs a reflector around the
// real kubectl (Debian's kubernetes-client, client-go 1.20) on the node: list, watch with
// bookmarks, resume from the last resourceVersion, list again on 410 (src/lab/reflector.ts), and
// fails the stand-in its watch is on:
//   unready   /readyz turns 500 (the process keeps serving)
//   frozen    the master's whole host paused: no answer, no FIN, no reset
//   stopped   systemctl stop kube-apiserver (SIGTERM, then its port closes)
//   retired   a deploy (a rolling reconfigure) drops that master from the node's backends
// and, from this machine through the VIP, takes the VIP holder's host down.
// gap: the longest time between two events the client received; lost: events of the known history
// after a list that never arrived; store: the reflector's pods equal the history's at the end.
// Prints a table, then one JSON line.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { spawnSync } from 'node:child_process';
import YAML from 'yaml';
import { holderDown, standinFaults, underFault } from '../dist/lab/reflector.js';
import { kubectlInContainer, kubectlToward } from '../dist/lab/kubectl.js';
import { bin, cli, labDown, printTable } from './bench-util.js';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '2' }, keep: { type: 'boolean', default: false } } });
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-bench-clients-'));
fs.rmdirSync(dir);
const VIP_HOSTS = ['master-1', 'master-2', 'master-3'];
const BALANCERS = [
  { impl: 'nginx', node: 'node-1' },
  { impl: 'kube-lb', node: 'node-2' },
];
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];

function inventoryFile(name, base, change) {
  const doc = YAML.parse(fs.readFileSync(base, 'utf8'));
  doc.nodes.find((n) => n.name === 'node-2').lb = { impl: 'kube-lb' };
  change?.(doc);
  const file = path.join(dir, `inventory.${name}.yaml`);
  fs.writeFileSync(file, YAML.stringify(doc));
  return file;
}

/**
 * `k8s-ha ARGS` without blocking: the reflector reads kubectl's output while a fault is applied, or
 * every event of that time would be stamped when the call returns.
 */
function cliAsync(args) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], { env: { ...process.env, NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`k8s-ha ${args.join(' ')} exited ${code}:\n${out}`))));
  });
}

const container = (name) => spawnSync('docker', ['ps', '-q', '--filter', `label=io.k8s-ha.lab.dir=${dir}`, '--filter', `name=-${name}$`], { encoding: 'utf8' }).stdout.trim();
const master = (name, action) => cliAsync(['lab', 'master', '--dir', dir, name, action]);

try {
  const lab = cli(['lab', 'up', '--dir', dir, '--nodes', '3', '--masters', '4', '--json'], { json: true }).out;
  const [a, b] = lab.masters[0].address.split('.');
  const vip = `${a}.${b}.3.100`;
  const base = inventoryFile('base', lab.inventory, (doc) => (doc.vip = { address: vip, port: 8443, hosts: VIP_HOSTS }));
  cli(['deploy', '-i', base, '--json'], { json: true });
  // Deployed to one node only: the VIP, whose hosts may include the retired master, is left out.
  const without = (victim) =>
    inventoryFile(`without-${victim}`, base, (doc) => {
      doc.masters = doc.masters.filter((m) => m.name !== victim);
      delete doc.vip;
    });

  const runs = [];
  const record = (balancer, fault, round, run) => {
    const v = run.verdict;
    const row = { balancer, fault, round, victim: run.victim, cutAfterMs: run.cutAfterMs ?? null, gapMs: v.longestGapMs, lost: v.missing.length, repeated: v.repeated.length, wrong: v.wrong, storeMatches: v.storeMatches, lists: v.lists, events: v.events, gone: run.log.gone };
    runs.push(row);
    console.error(JSON.stringify(row));
  };
  for (let round = 1; round <= Number(values.rounds); round++) {
    for (const { impl, node } of BALANCERS) {
      const id = container(node);
      const kubectl = kubectlInContainer(id);
      const faults = standinFaults(impl, {
        master,
        retire: (v) => cliAsync(['deploy', '-i', without(v), '--limit', node]),
        restore: () => cliAsync(['deploy', '-i', base, '--limit', node]),
      });
      for (const [fault, f] of Object.entries(faults)) record(impl, fault, round, await underFault(kubectl, f));
    }
    // Through the VIP from this machine: the holder's whole host goes down.
    const kubectl = kubectlToward(lab.kubectl, lab.kubeconfig, `https://${vip}:8443`);
    const holder = () => JSON.parse(spawnSync(process.execPath, [bin, 'status', '-i', base, '--limit', VIP_HOSTS.join(','), '--json'], { encoding: 'utf8' }).stdout).vip.holders[0];
    record('VIP (haproxy + keepalived)', 'holder down', round, await underFault(kubectl, holderDown(holder(), master)));
  }
  const groups = [...new Set(runs.map((r) => `${r.balancer}\t${r.fault}`))].map((k) => {
    const [balancer, fault] = k.split('\t');
    const rs = runs.filter((r) => r.balancer === balancer && r.fault === fault);
    return {
      balancer,
      fault,
      runs: rs.length,
      medianGapMs: median(rs.map((r) => r.gapMs)),
      maxGapMs: Math.max(...rs.map((r) => r.gapMs)),
      lost: rs.reduce((n, r) => n + r.lost, 0),
      repeated: rs.reduce((n, r) => n + r.repeated, 0),
      storeRight: rs.filter((r) => r.storeMatches && r.wrong === 0).length,
      relists: rs.reduce((n, r) => n + r.lists - 1, 0),
    };
  });
  printTable([
    ['balancer', 'fault', 'runs', 'median gap ms', 'max gap ms', 'events lost', 'repeated', 'store right', 'relists'],
    ...groups.map((g) => [g.balancer, g.fault, g.runs, g.medianGapMs, g.maxGapMs, g.lost, g.repeated, `${g.storeRight}/${g.runs}`, g.relists]),
  ]);
  console.log(JSON.stringify({ benchmark: 'clients', client: 'kubectl 1.20 (Debian kubernetes-client, client-go)', rounds: Number(values.rounds), cores: os.cpus().length, groups, runs }));
} finally {
  if (!values.keep) labDown(dir);
}
