// How fast kube-lb's discovery (kubeLb.discovery) follows the control plane, and what it asks of the
// apiservers: npm run bench:discovery -- [--nodes 3] [--rounds 3] [--concurrency 6] [--keep]
// Starts a fresh lab of N nodes and 4 masters, deploys kube-lb with discovery and an inventory naming
// master-1..3 (so the nodes learn master-4 from the cluster), then --rounds times retires master-2
// (`lab master master-2 stop`: kube-apiserver's shutdown sequence) and adds it back (`start`),
// timing from each command's start until every node's kube-lb balances to the cluster's new list
// (each node's /discovery, polled over one SSH connection per node, every 250 ms). Then counts the
// list and watch requests every kube-lb made over the whole run, and during a quiet hold at the end
// (--hold seconds, nothing changing: a discovery that polled would show here), per node and hour.
// No deploy runs during the rounds. Prints a table, then one JSON line.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import YAML from 'yaml';
import { SshConnection } from '../dist/connect/ssh.js';
import { resolveTarget } from '../dist/connect/targets.js';
import { httpGetOnHost } from '../dist/engine/verify.js';
import { loadInventory } from '../dist/inventory/load.js';
import { mapLimit } from '../dist/util/pool.js';
import { cli, cliAsync, labDir, labDown, printTable } from './bench-util.js';

const { values } = parseArgs({
  options: { nodes: { type: 'string', default: '3' }, rounds: { type: 'string', default: '3' }, hold: { type: 'string', default: '120' }, concurrency: { type: 'string', default: '6' }, keep: { type: 'boolean', default: false } },
});
const dir = labDir('discovery');

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];

try {
  const lab = cli(['lab', 'up', '--dir', dir, '--nodes', values.nodes, '--masters', '4', '--json'], { json: true }).out;
  const file = path.join(dir, 'inventory.discovery.yaml');
  const doc = YAML.parse(fs.readFileSync(lab.inventory, 'utf8'));
  doc.masters = doc.masters.slice(0, 3);
  doc.lb.impl = 'kube-lb';
  doc.kubeLb = { discovery: { kubeconfig: '/var/lib/kube-proxy/kubeconfig' } };
  fs.writeFileSync(file, YAML.stringify(doc));
  // kube-lb is a 110 MB executable (55 MB as sent): at 50 nodes on a 2-core machine, 16 uploads at once (6 by default here)
  // lose SSH sessions to keepalive timeouts (lab nodes and controller share the two cores), and 50
  // kube-lb starting together need more than verify's 15 s.
  cli(['deploy', '-i', file, '--serial', '100%', '--concurrency', values.concurrency, '--verify-timeout', '3m', '--json'], { json: true });
  const startedAt = Date.now();

  const { inventory: inv } = await loadInventory(file);
  const conns = await mapLimit(inv.nodes, 32, (n) => SshConnection.open(resolveTarget(inv, n, { sshConfig: null })));
  const at = (m) => `${m.address}:${m.port}`;
  const [m1, m2, m3, m4] = lab.masters.map(at);
  const discovery = (c) => httpGetOnHost(c, inv.kubeLb.admin, '/discovery', 5000).then((r) => JSON.parse(r.body));
  /** From t0 until every node balances to `want`: each node's time, and the slowest. */
  const follow = async (want, t0, limitMs = 60_000) => {
    const key = [...want].sort().join();
    const times = new Map();
    while (times.size < conns.length && Date.now() - t0 < limitMs) {
      await mapLimit(conns.filter((c) => !times.has(c.target.name)), 32, async (c) => {
        const d = await discovery(c);
        if (d.backends.map((b) => b.address).sort().join() === key) times.set(c.target.name, Date.now() - t0);
      });
      if (times.size < conns.length) await new Promise((r) => setTimeout(r, 250));
    }
    if (times.size < conns.length) throw new Error(`${conns.length - times.size} nodes did not follow to ${want.join(', ')} within ${limitMs} ms`);
    return { everyNodeMs: Math.max(...times.values()), medianNodeMs: median([...times.values()]) };
  };

  const learnMs = (await follow([m1, m2, m3, m4], startedAt)).everyNodeMs;
  const rounds = [];
  for (let round = 1; round <= Number(values.rounds); round++) {
    let t0 = Date.now();
    const stop = cliAsync(['lab', 'master', '--dir', dir, 'master-2', 'stop']);
    const retired = await follow([m1, m3, m4], t0);
    await stop;
    t0 = Date.now();
    const start = cliAsync(['lab', 'master', '--dir', dir, 'master-2', 'start']);
    const added = await follow([m1, m2, m3, m4], t0);
    await start;
    rounds.push({ round, retired, added });
  }
  const elapsedMs = Date.now() - startedAt;
  const counts = await mapLimit(conns, 32, discovery);
  const requests = counts.map((d) => d.lists + d.watches);
  // The quiet hold: nothing changes, so every request here is one discovery makes on its own.
  const holdMs = Number(values.hold) * 1000;
  await new Promise((r) => setTimeout(r, holdMs));
  const after = await mapLimit(conns, 32, discovery);
  for (const c of conns) c.close();
  const inHold = after.map((d, i) => d.lists + d.watches - requests[i]);
  const perHour = (n, ms) => Math.round((n / ms) * 3_600_000 * 10) / 10;
  const result = {
    benchmark: 'discovery',
    nodes: conns.length,
    masters: 4,
    rounds: rounds.length,
    cores: os.cpus().length,
    learnMs,
    retired: { everyNodeMedianMs: median(rounds.map((r) => r.retired.everyNodeMs)), everyNodeMaxMs: Math.max(...rounds.map((r) => r.retired.everyNodeMs)) },
    added: { everyNodeMedianMs: median(rounds.map((r) => r.added.everyNodeMs)), everyNodeMaxMs: Math.max(...rounds.map((r) => r.added.everyNodeMs)) },
    // Over the whole run (the first list and watch, and a watch made again when its apiserver was the one retired).
    requestsPerNode: { lists: Math.max(...counts.map((d) => d.lists)), watchesMax: Math.max(...counts.map((d) => d.watches)), runMedian: median(requests), runMax: Math.max(...requests) },
    // During the hold, per hour; a watch is also renewed every 30 to 60 minutes (its timeoutSeconds): 1.3 an hour on average.
    hold: { seconds: holdMs / 1000, requestsMax: Math.max(...inHold), maxPerHour: perHour(Math.max(...inHold), holdMs), watchRenewalsPerHour: 1.3 },
    watchingAtEnd: after.filter((d) => d.watching).length,
    elapsedMs,
    runs: rounds,
  };
  printTable([
    ['change', 'every node follows: median ms', 'max ms', 'rounds'],
    ['master-2 retired (stop)', result.retired.everyNodeMedianMs, result.retired.everyNodeMaxMs, rounds.length],
    ['master-2 added back (start)', result.added.everyNodeMedianMs, result.added.everyNodeMaxMs, rounds.length],
  ]);
  printTable([
    ['nodes', 'lists per node', 'watches per node (max)', 'requests per node in the run (median / max)', `requests per node in ${holdMs / 1000} s quiet (max)`, 'watching at the end', 'run s'],
    [result.nodes, result.requestsPerNode.lists, result.requestsPerNode.watchesMax, `${result.requestsPerNode.runMedian} / ${result.requestsPerNode.runMax}`, result.hold.requestsMax, `${result.watchingAtEnd}/${result.nodes}`, Math.round(elapsedMs / 1000)],
  ]);
  console.log(JSON.stringify(result));
} finally {
  if (!values.keep) labDown(dir);
}
