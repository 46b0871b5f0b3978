// How long a node's 127.0.0.1:8443 goes without serving while deploy switches it between
// kube-nginx and kube-lb: npm run bench:switch -- [--nodes 3] [--rounds 3] [--keep]
// Starts a fresh lab, deploys nginx, then switches every node to kube-lb and back, --rounds
// times, through the real CLI. Meanwhile, from inside every node (SSH direct-tcpip to its
// 127.0.0.1:8443), GET /version is sent every 20 ms; a node's gap is the longest time between
// two answers, and requests with no answer are counted. Prints a table, then one JSON line.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import YAML from 'yaml';
import { SshConnection } from '../dist/connect/ssh.js';
import { resolveTarget } from '../dist/connect/targets.js';
import { loadInventory } from '../dist/inventory/load.js';
import { watchNodePort } from '../dist/lab/gap.js';
import { bin, cli, labDir, labDown, printTable } from './bench-util.js';

const { values } = parseArgs({
  options: { nodes: { type: 'string', default: '3' }, rounds: { type: 'string', default: '3' }, keep: { type: 'boolean', default: false } },
});
const dir = labDir('switch');

/** `k8s-ha deploy --json` without blocking this process (the port watchers run meanwhile). */
function deploy(inventory) {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const child = spawn(process.execPath, [bin, 'deploy', '-i', inventory, '--serial', '100%', '--json'], { env: { ...process.env, NO_COLOR: '1' } });
    let out = '';
    let err = '';
    child.stdout.on('data', (b) => (out += b));
    child.stderr.on('data', (b) => (err += b));
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`deploy exited ${code}:\n${out}\n${err}`));
      resolve({ wallMs: Date.now() - t0, report: JSON.parse(out) });
    });
  });
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];

try {
  const lab = cli(['lab', 'up', '--dir', dir, '--nodes', values.nodes, '--masters', '3', '--json'], { json: true }).out;
  const nginxInv = lab.inventory;
  const kubeLbInv = path.join(dir, 'inventory.kube-lb.yaml');
  const doc = YAML.parse(fs.readFileSync(nginxInv, 'utf8'));
  doc.lb.impl = 'kube-lb';
  fs.writeFileSync(kubeLbInv, YAML.stringify(doc));
  // Both builds and both installs happen before the timings: a switch is then only the hand-over.
  cli(['deploy', '-i', kubeLbInv, '--json'], { json: true });
  cli(['deploy', '-i', nginxInv, '--json'], { json: true });

  const { inventory: inv } = await loadInventory(nginxInv);
  const ca = fs.readFileSync(path.join(dir, 'pki', 'ca.crt'), 'utf8');
  const conns = await Promise.all(inv.nodes.map((n) => SshConnection.open(resolveTarget(inv, n, { sshConfig: null }))));
  const runs = [];
  for (let round = 1; round <= Number(values.rounds); round++) {
    for (const [to, file, unit] of [['kube-lb', kubeLbInv, 'kube-lb'], ['nginx', nginxInv, 'kube-nginx']]) {
      const watchers = conns.map((c) => watchNodePort(() => c.connectFromHost('127.0.0.1', 8443), { ca, servername: 'kubernetes' }));
      await new Promise((r) => setTimeout(r, 300));
      const d = await deploy(file);
      await new Promise((r) => setTimeout(r, 300));
      const gaps = await Promise.all(watchers.map((w) => w.stop()));
      for (const [name, h] of Object.entries(d.report.hosts)) {
        if (h.impl?.impl !== to || !h.steps.some((s) => /switch from/.test(s.summary))) throw new Error(`${name} did not switch to ${to}: ${JSON.stringify(h.steps)}`);
      }
      // Which unit serves now, as systemd says.
      for (const c of conns) {
        const active = (await c.exec(`systemctl is-active ${unit}`)).stdout.trim();
        if (active !== 'active') throw new Error(`${c.target.name}: ${unit} is ${active} after the switch`);
      }
      runs.push({ round, to, deployMs: d.wallMs, gapsMs: gaps.map((g) => g.longestGapMs), sent: gaps.reduce((n, g) => n + g.sent, 0), unanswered: gaps.reduce((n, g) => n + g.failures.length, 0) });
    }
  }
  for (const c of conns) c.close();
  const summary = (to) => {
    const rs = runs.filter((r) => r.to === to);
    const all = rs.flatMap((r) => r.gapsMs);
    return {
      switches: all.length,
      medianGapMs: median(all),
      maxGapMs: Math.max(...all),
      unanswered: rs.reduce((n, r) => n + r.unanswered, 0),
      sent: rs.reduce((n, r) => n + r.sent, 0),
      medianDeployMs: median(rs.map((r) => r.deployMs)),
    };
  };
  const result = { benchmark: 'switch', requestEveryMs: 20, nodes: inv.nodes.length, rounds: Number(values.rounds), cores: os.cpus().length, toKubeLb: summary('kube-lb'), toNginx: summary('nginx'), runs };
  printTable([
    ['switch', 'node switches', 'median gap ms', 'max gap ms', 'unanswered / sent', 'median deploy ms'],
    ...[['kube-nginx -> kube-lb', result.toKubeLb], ['kube-lb -> kube-nginx', result.toNginx]].map(([n, s]) => [n, s.switches, s.medianGapMs, s.maxGapMs, `${s.unanswered} / ${s.sent}`, s.medianDeployMs]),
  ]);
  console.log(JSON.stringify(result));
} finally {
  if (!values.keep) labDown(dir);
}
