// Failover as a real client sees it: npm run bench:clients -- [--rounds 2] [--faults LIST] [--lag 2000] [--keep]
// Starts a fresh lab (3 nodes, 4 masters), deploys node-1 on kube-nginx, node-2 on kube-lb, node-3
// on haproxy (lb.impl: haproxy) and the VIP on master-1..3 through the real CLI. Then, --rounds
// times each, runs a reflector around the real kubectl (Debian's kubernetes-client, client-go 1.20)
// on the node: list, watch with bookmarks, resume from the last resourceVersion, list again on 410
// (src/lab/reflector.ts), and fails the stand-in its watch is on:
//   unready      /readyz turns 500 (the process keeps serving)
//   frozen       the master's whole host paused: no answer, no FIN, no reset
//   stopped      systemctl stop kube-apiserver: kube-apiserver's shutdown sequence (/readyz red,
//                5 s served, GOAWAY, watches ended, drain), then its port refuses
//   retired      a deploy (a rolling reconfigure) drops that master from the node's backends
//   partitioned  every packet to and from the master's host dropped (`lab master X partition`)
//   powered-off  the host vanishes mid-connection, no FIN, no reset (`lab master X power-off`)
//   lagging      every other master's watch cache --lag ms behind etcd (`lab master Y lag MS`), then
//                the watch's own stand-in crashes (its connections cut): the watch resumes on a lagging one
// and (holder-down), from this machine through the VIP, takes the VIP holder's host down.
// --faults: a comma-separated subset of the above and holder-down; default all of them.
// gap: the longest time between two events the client received; lost: events of the known history
// after a list that never arrived; store: the reflector's pods equal the history's at the end.
// Prints a table, then one JSON line.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import YAML from 'yaml';
import { holderDown, movedOn, standinFaults, underFault } from '../dist/lab/reflector.js';
import { kubectlInContainer, kubectlToward } from '../dist/lab/kubectl.js';
import { bin, cli, cliAsync, faultBenchArgs, labDir, labDown, printTable } from './bench-util.js';

const ALL_FAULTS = ['unready', 'frozen', 'stopped', 'retired', 'partitioned', 'powered-off', 'lagging', 'holder-down'];
const { values, faults: FAULTS } = faultBenchArgs(ALL_FAULTS, { rounds: 2 });
const started = performance.now();
const dir = labDir('clients');
const VIP_HOSTS = ['master-1', 'master-2', 'master-3'];
const BALANCERS = [
  { impl: 'nginx', node: 'node-1' },
  { impl: 'kube-lb', node: 'node-2' },
  { impl: 'haproxy', node: 'node-3' },
];
const MASTERS = ['master-1', 'master-2', 'master-3', 'master-4'];
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];

function inventoryFile(name, base, change) {
  const doc = YAML.parse(fs.readFileSync(base, 'utf8'));
  for (const { impl, node } of BALANCERS.slice(1)) doc.nodes.find((n) => n.name === node).lb = { impl };
  change?.(doc);
  const file = path.join(dir, `inventory.${name}.yaml`);
  fs.writeFileSync(file, YAML.stringify(doc));
  return file;
}

const container = (name) => spawnSync('docker', ['ps', '-q', '--filter', `label=io.k8s-ha.lab.dir=${dir}`, '--filter', `name=-${name}$`], { encoding: 'utf8' }).stdout.trim();
const master = (name, action, ...value) => cliAsync(['lab', 'master', '--dir', dir, name, action, ...value]);

/**
 * The harsh faults, on the stand-in the watch is on; recovered once a later watch delivers events from
 * another one. kube-nginx has no active checks: on a silent host the watch lasts until client-go's HTTP/2
 * health check (30 s idle, 15 s ping) gives up, hence the long bounds.
 */
function harshFaults(lagMs) {
  const other = 'events from another stand-in';
  const others = (v) => MASTERS.filter((m) => m !== v);
  return {
    partitioned: { apply: (v) => master(v, 'partition'), undo: (v) => master(v, 'heal'), recovered: movedOn, timeoutMs: 120_000, what: other },
    'powered-off': { apply: (v) => master(v, 'power-off'), undo: (v) => master(v, 'power-on'), recovered: movedOn, timeoutMs: 120_000, what: other },
    lagging: {
      // The lag first, so whichever stand-in the balancer picks next is behind; then the watch's own is cut.
      apply: async (v) => {
        await Promise.all(others(v).map((o) => master(o, 'lag', String(lagMs))));
        await master(v, 'crash');
      },
      undo: async (v) => {
        await master(v, 'recover');
        await Promise.all(others(v).map((o) => master(o, 'lag', '0')));
      },
      recovered: movedOn,
      timeoutMs: 60_000,
      what: other,
    },
  };
}

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
  const errors = [];
  const record = (balancer, fault, round, run) => {
    const v = run.verdict;
    const row = { balancer, fault, round, victim: run.victim, cutAfterMs: run.cutAfterMs ?? null, gapMs: v.longestGapMs, lost: v.missing.length, repeated: v.repeated.length, wrong: v.wrong, storeMatches: v.storeMatches, lists: v.lists, events: v.events, gone: run.log.gone, standins: v.standins, failures: run.log.failures.map((f) => f.what).slice(0, 5) };
    runs.push(row);
    console.error(JSON.stringify(row));
  };
  for (let round = 1; round <= Number(values.rounds); round++) {
    for (const { impl, node } of BALANCERS) {
      const id = container(node);
      const kubectl = kubectlInContainer(id);
      // haproxy, like kube-lb, checks /readyz and closes the sessions of a master it marks down.
      const faults = {
        ...standinFaults(impl === 'haproxy' ? 'kube-lb' : impl, {
          master,
          retire: (v) => cliAsync(['deploy', '-i', without(v), '--limit', node]),
          restore: () => cliAsync(['deploy', '-i', base, '--limit', node]),
        }),
        ...harshFaults(Number(values.lag)),
      };
      for (const fault of FAULTS.filter((f) => f in faults)) {
        // A run whose client does not recover within the fault's bound is reported, not the end of the bench (underFault has undone the fault).
        try {
          record(impl, fault, round, await underFault(kubectl, faults[fault]));
        } catch (e) {
          errors.push({ balancer: impl, fault, round, error: e.message });
          console.error(JSON.stringify(errors.at(-1)));
        }
      }
    }
    if (!FAULTS.includes('holder-down')) continue;
    // Through the VIP from this machine: the holder's whole host goes down.
    const kubectl = kubectlToward(lab.kubectl, lab.kubeconfig, `https://${vip}:8443`);
    const holder = () => JSON.parse(spawnSync(process.execPath, [bin, 'status', '-i', base, '--limit', VIP_HOSTS.join(','), '--json'], { encoding: 'utf8' }).stdout).vip.holders[0];
    record('VIP (haproxy + keepalived)', 'holder down', round, await underFault(kubectl, holderDown(holder(), master)));
  }
  const groups = [...new Set([...runs, ...errors].map((r) => `${r.balancer}\t${r.fault}`))].map((k) => {
    const [balancer, fault] = k.split('\t');
    const rs = runs.filter((r) => r.balancer === balancer && r.fault === fault);
    return {
      balancer,
      fault,
      runs: rs.length,
      errors: errors.filter((r) => r.balancer === balancer && r.fault === fault).length,
      medianGapMs: median(rs.map((r) => r.gapMs)),
      maxGapMs: Math.max(...rs.map((r) => r.gapMs)),
      lost: rs.reduce((n, r) => n + r.lost, 0),
      repeated: rs.reduce((n, r) => n + r.repeated, 0),
      storeRight: rs.filter((r) => r.storeMatches && r.wrong === 0).length,
      relists: rs.reduce((n, r) => n + r.lists - 1, 0),
      medianCutAfterMs: rs.some((r) => r.cutAfterMs !== null) ? median(rs.filter((r) => r.cutAfterMs !== null).map((r) => r.cutAfterMs)) : null,
    };
  });
  printTable([
    ['balancer', 'fault', 'runs', 'median gap ms', 'max gap ms', 'events lost', 'repeated', 'store right', 'relists', 'median cut after ms', 'not recovered'],
    ...groups.map((g) => [g.balancer, g.fault, g.runs, g.medianGapMs, g.maxGapMs, g.lost, g.repeated, `${g.storeRight}/${g.runs}`, g.relists, g.medianCutAfterMs ?? '-', g.errors]),
  ]);
  const seconds = Math.round((performance.now() - started) / 1000);
  console.log(JSON.stringify({ benchmark: 'clients', client: 'kubectl 1.20 (Debian kubernetes-client, client-go)', rounds: Number(values.rounds), faults: FAULTS, lagMs: Number(values.lag), cores: os.cpus().length, seconds, groups, runs, errors }));
} finally {
  if (!values.keep) labDown(dir);
}
