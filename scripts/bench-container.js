// nginx on the host against nginx in a container (podman, Docker) and as a static pod:
// npm run bench:container -- --nodes 20 [--concurrency 64] [--variants nginx,podman,docker,static-pod,static-pod-containerd] [--keep]
// Starts an N-node lab whose every node has a container runtime (`lab up --runtime N`: podman with vfs
// storage, docker.io with dockerd socket-activated and vfs), then calls the engine's runDeploy directly
// for three variants in turn, on the same nodes: lb.impl nginx, lb.impl container with lb.runtime
// podman, then with lb.runtime docker, then lb.impl static-pod (run by the lab's kubelet STAND-IN with
// podman, nginx.statusListen set for its probes), or static-pod-containerd (the stand-in told containerd's
// endpoint by a drop-in on every node: auto loads the image there, ctr runs the pod). Each variant is reached by deploying its inventory (the first
// from nothing, the next two a switch from the variant before), then a config-only change (lb.maxFails
// 2: a rolled reload, --serial 25%), then a binary change (the playbook with --with-stream_realip_module
// added: nginx on the host upgrades in place, a container gets a new image and restarts). Every nginx
// build and image is made before the timings. For each: wall time against the SSH floor measured in
// the same run (N logins running `true`, best of 3); for the two changes, what node-1 served meanwhile
// (a request every 20 ms through its 127.0.0.1:8443 over SSH: sent, failed, longest gap between
// answers); once the variant's runs are done and its balancer idle, node-1's memory: RSS and PSS of
// nginx's master and workers, and of the variant's runtime processes that stay (podman: conmon;
// Docker: dockerd, containerd, the shim and the attached `docker run` client); another runtime's
// processes found running are listed apart. Prints a table, then one JSON line.
// Numbers and caveats: docs/benchmarks.md.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import YAML from 'yaml';
import { buildArtifacts, loadSetup } from '../dist/engine/deploy.js';
import { runDeploy } from '../dist/engine/run.js';
import { SshConnection } from '../dist/connect/ssh.js';
import { CRI_SNAPSHOTTER } from '../dist/facts/host.js';
import { watchNodePort } from '../dist/lab/gap.js';
import { cli, labDir, labDown, printTable, settle, sshFloor } from './bench-util.js';

const { values } = parseArgs({
  options: {
    nodes: { type: 'string', default: '20' },
    masters: { type: 'string', default: '3' },
    concurrency: { type: 'string', default: '64' },
    keep: { type: 'boolean', default: false },
    variants: { type: 'string', default: 'nginx,podman,docker,static-pod' },
  },
});
const nodes = Number(values.nodes);
const concurrency = Number(values.concurrency);
const dir = labDir('container');

const ALL_VARIANTS = [
  { name: 'nginx', label: 'nginx on the host', lb: { impl: 'nginx' }, playbook: 'kube-nginx.yaml' },
  { name: 'podman', label: 'container, podman', lb: { impl: 'container', runtime: 'podman' }, playbook: 'kube-nginx-container.yaml' },
  { name: 'docker', label: 'container, Docker', lb: { impl: 'container', runtime: 'docker' }, playbook: 'kube-nginx-container.yaml' },
  {
    name: 'static-pod',
    label: 'static pod (kubelet stand-in, podman)',
    lb: { impl: 'static-pod', runtime: 'podman' },
    nginx: { statusListen: '127.0.0.1:8081' },
    playbook: 'kube-nginx-static-pod.yaml',
    // A new image is a pod replaced by the lab's kubelet stand-in: podman kube down, then play, five
    // nodes at a time on the same 2 cores; past verify's default 15 s there (a kubelet is quicker).
    verifyTimeoutMs: 60_000,
  },
  {
    name: 'static-pod-containerd',
    label: 'static pod (kubelet stand-in, containerd)',
    lb: { impl: 'static-pod', runtime: 'auto' },
    nginx: { statusListen: '127.0.0.1:8081' },
    playbook: 'kube-nginx-static-pod.yaml',
    // Every node's kubelet (the stand-in) told containerd's endpoint by a drop-in, as kubeadm's: auto
    // reads it there. The stand-in then runs pods with ctr (no pause container).
    prepare: `mkdir -p /etc/systemd/system/kubelet.service.d && printf '[Service]\\nExecStart=\\nExecStart=/usr/local/bin/kubelet-standin --kubeconfig /etc/kubernetes/kubelet.conf --pod-manifest-path /etc/kubernetes/manifests --container-runtime-endpoint unix:///run/containerd/containerd.sock\\n' > /etc/systemd/system/kubelet.service.d/20-containerd.conf && systemctl daemon-reload && systemctl restart kubelet`,
    verifyTimeoutMs: 60_000,
  },
];
const wanted = values.variants.split(',');
const unknown = wanted.filter((w) => !ALL_VARIANTS.some((v) => v.name === w));
if (unknown.length) {
  console.error(`--variants: unknown ${unknown.join(', ')}; use ${ALL_VARIANTS.map((v) => v.name).join(', ')}`);
  process.exit(2);
}
const VARIANTS = ALL_VARIANTS.filter((v) => wanted.includes(v.name));
// The same manifest on another runtime changes nothing kubelet sees: its podman pod would serve on.
if (wanted.includes('static-pod') && wanted.includes('static-pod-containerd')) {
  console.error('--variants: static-pod and static-pod-containerd write the same manifest; bench them in separate runs (e.g. --variants nginx,static-pod-containerd)');
  process.exit(2);
}

const setupOf = (inventoryFile, playbookFile) => loadSetup({ inventoryFile, concurrency, acceptNewHostKeys: false, playbookFile });

/** Run the engine once; throws unless every node ends as expected. */
async function timedDeploy(name, inventoryFile, playbookFile, verifyTimeoutMs) {
  const t0 = performance.now();
  const report = await runDeploy({ inventoryFile, concurrency, acceptNewHostKeys: false, playbookFile, verifyTimeoutMs }, () => {});
  const wallMs = Math.round(performance.now() - t0);
  if (!report.ok || report.totals.changed !== nodes) throw new Error(`${name}: unexpected result ${JSON.stringify(report.totals)}\n${JSON.stringify(report.hosts['node-1'] ?? report, null, 1).slice(0, 4000)}`);
  const service = [...new Set(Object.values(report.hosts).map((h) => h.steps.find((st) => st.name === 'service' || st.name === 'static pod')?.summary))];
  return { wallMs, perNodeMs: +(wallMs / nodes).toFixed(1), peakSessions: report.peakSessions, service };
}

/** A deploy while node-1's 127.0.0.1:8443 gets a request every 20 ms (as the switch tests watch it). */
async function watchedDeploy(name, target, caPem, inventoryFile, playbookFile, verifyTimeoutMs) {
  const c = await SshConnection.open(target);
  try {
    const w = watchNodePort(() => c.connectFromHost('127.0.0.1', 8443), { ca: caPem, servername: 'kubernetes' });
    await new Promise((r) => setTimeout(r, 300));
    let d;
    let g;
    try {
      d = await timedDeploy(name, inventoryFile, playbookFile, verifyTimeoutMs);
    } finally {
      await new Promise((r) => setTimeout(r, 300));
      g = await w.stop();
    }
    const errors = [...new Set(g.failures.map((f) => f.error))].slice(0, 3);
    return { ...d, node1: { sent: g.sent, failed: g.failures.length, longestGapMs: g.longestGapMs, ...(errors.length ? { errors } : {}) } };
  } finally {
    c.close();
  }
}

/** The built-in playbook `file` with one more stream module in its nginxBuild (another binary, another image). */
function playbookVariant(file, out, extraConfigure) {
  const pb = YAML.parse(fs.readFileSync(new URL(`../playbooks/${file}`, import.meta.url), 'utf8'));
  pb.steps.find((st) => st.nginxBuild).nginxBuild.configure.push(extraConfigure);
  fs.writeFileSync(out, YAML.stringify(pb));
  return out;
}

function inventoryVariant(base, name, lb, nginx = {}) {
  const doc = YAML.parse(fs.readFileSync(base, 'utf8'));
  Object.assign(doc.lb, lb);
  Object.assign(doc.nginx, nginx);
  const file = path.join(dir, `inventory.${name}.yaml`);
  fs.writeFileSync(file, YAML.stringify(doc));
  return file;
}

// On the node, as root: every process holding 8443 (nginx's master and workers, on the host or in the
// container's PID namespace, seen from the host) and their children, then the runtimes' processes that
// stay (no podman daemon: conmon per container; for Docker the daemon, containerd, the shim and the
// attached `docker run` client, the unit's main process). One line each: group comm pid rssKb pssKb.
// Waits (up to 15 s) for workers of an old config still shutting down, so only the idle set counts.
const MEMORY_SCRIPT = `
for i in $(seq 30); do
  busy=0
  for p in $(pgrep -f 'worker process is shutting down'); do busy=1; done
  [ $busy = 0 ] && break
  sleep 0.5
done
lb=$(ss -ltnpH 'sport = :8443' | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u)
kids=$(for p in $lb; do pgrep -P $p; done)
show() { for p in $2; do
  [ -r /proc/$p/status ] || continue
  rss=$(awk '/^VmRSS:/ {print $2}' /proc/$p/status)
  pss=$(awk '/^Pss:/ {print $2}' /proc/$p/smaps_rollup 2>/dev/null)
  echo "$1 $(cat /proc/$p/comm) $p \${rss:-0} \${pss:-0}"
done; }
show lb "$(printf '%s\\n' $lb $kids | sort -un)"
show runtime "$(pgrep -x conmon; pgrep -x catatonit; pgrep -x dockerd; pgrep -x containerd; pgrep '^containerd-shim'; pgrep -x docker; pgrep -x podman)"
`;

/** A runtime's processes that stay while its container runs: podman has no daemon, only conmon. */
// A static pod run by podman (the kubelet stand-in) has a conmon per container, the pod's infra
// container's among them, and that infra container's catatonit.
// On containerd the pod's container has containerd's shim, and containerd itself runs.
const RUNTIME_PROCESSES = { podman: ['conmon'], docker: ['dockerd', 'containerd', 'containerd-shim', 'docker'], 'static-pod': ['conmon', 'catatonit'], 'static-pod-containerd': ['containerd', 'containerd-shim'] };

async function memory(target, variant) {
  const c = await SshConnection.open(target);
  try {
    const rows = (await c.execOk(MEMORY_SCRIPT, { asRoot: true })).trim().split('\n').filter(Boolean).map((l) => {
      const [group, comm, pid, rssKb, pssKb] = l.split(' ');
      return { group, comm, pid: Number(pid), rssKb: Number(rssKb), pssKb: Number(pssKb) };
    });
    const storage = variant.lb.impl !== 'nginx'
      ? (await c.execOk(
          variant.name === 'static-pod-containerd'
            ? CRI_SNAPSHOTTER
            : variant.lb.runtime === 'podman' ? "podman info --format '{{.Store.GraphDriverName}}'" : "docker info --format '{{.Driver}}'",
          { asRoot: true },
        )).trim()
      : undefined;
    // The variant's own runtime processes; any other runtime's that happen to run (dockerd is
    // socket-activated: whatever asks it anything starts it) are listed apart, not counted.
    const own = RUNTIME_PROCESSES[variant.lb.impl === 'static-pod' ? variant.name : variant.lb.runtime] ?? [];
    for (const r of rows) if (r.group === 'runtime' && !own.includes(r.comm)) r.group = 'other';
    const mb = (kb) => +(kb / 1024).toFixed(1);
    const total = (g) => {
      const of = rows.filter((r) => r.group === g);
      return { rssMb: mb(of.reduce((a, r) => a + r.rssKb, 0)), pssMb: mb(of.reduce((a, r) => a + r.pssKb, 0)), counted: of.map((r) => r.comm) };
    };
    return { processes: rows, nginx: total('lb'), runtime: total('runtime'), otherRuntime: total('other'), ...(storage ? { storage } : {}) };
  } finally {
    c.close();
  }
}

try {
  const t = performance.now();
  const lab = cli(['lab', 'up', '--dir', dir, '--nodes', String(nodes), '--masters', values.masters, '--runtime', String(nodes), '--json'], { json: true }).out;
  const labUpMs = Math.round(performance.now() - t);
  const caPem = fs.readFileSync(path.join(dir, 'pki', 'ca.crt'), 'utf8');
  const settledAfterMs = await settle();

  // The floor: N SSH logins running `true`, at most --concurrency at once (the best of three).
  const setup = await setupOf(lab.inventory);
  const node1 = setup.targets.get(setup.nodes[0].name);
  const { ms: sshFloorMs, runsMs: floors } = await sshFloor(setup, concurrency);
  const ratio = (x) => +(x.wallMs / sshFloorMs).toFixed(2);

  const results = {};
  for (const v of VARIANTS) {
    const inv = inventoryVariant(lab.inventory, v.name, v.lb, v.nginx);
    const changedInv = inventoryVariant(lab.inventory, `${v.name}.maxfails`, { ...v.lb, maxFails: 2 }, v.nginx);
    const binaryPb = playbookVariant(v.playbook, path.join(dir, `${v.name}.realip.yaml`), '--with-stream_realip_module');
    if (v.prepare) await Promise.all([...setup.targets.values()].map(async (t) => {
      const c = await SshConnection.open(t);
      try { await c.execOk(v.prepare, { asRoot: true }); } finally { c.close(); }
    }));
    // Every build (the static nginx, the image) before the timings: the runs find them cached.
    await buildArtifacts(await setupOf(inv), () => {});
    await buildArtifacts(await setupOf(changedInv, binaryPb), () => {});
    const first = await timedDeploy(`${v.name}: first`, inv, undefined, v.verifyTimeoutMs);
    const config = await watchedDeploy(`${v.name}: config`, node1, caPem, changedInv, undefined, v.verifyTimeoutMs);
    const binary = await watchedDeploy(`${v.name}: binary`, node1, caPem, changedInv, binaryPb, v.verifyTimeoutMs);
    const mem = await memory(node1, v);
    results[v.name] = {
      label: v.label,
      lb: v.lb,
      ...(v.verifyTimeoutMs ? { verifyTimeoutMs: v.verifyTimeoutMs } : {}),
      firstDeploy: { ...first, floorRatio: ratio(first), from: v === VARIANTS[0] ? 'nothing' : `switch from ${VARIANTS[VARIANTS.indexOf(v) - 1].name}` },
      configChange: { ...config, floorRatio: ratio(config) },
      binaryChange: { ...binary, floorRatio: ratio(binary) },
      memory: mem,
    };
  }

  const rows = [['variant', 'first deploy ms', '× floor', 'config ms', '× floor', 'config: sent/failed/gap ms', 'binary ms', 'binary: sent/failed/gap ms', 'nginx RSS/PSS MB', 'runtime RSS/PSS MB']];
  for (const v of VARIANTS) {
    const r = results[v.name];
    const g = (x) => `${x.node1.sent}/${x.node1.failed}/${x.node1.longestGapMs}`;
    rows.push([
      r.label + (v === VARIANTS[0] ? '' : ' (switch)'),
      r.firstDeploy.wallMs,
      r.firstDeploy.floorRatio,
      r.configChange.wallMs,
      r.configChange.floorRatio,
      g(r.configChange),
      r.binaryChange.wallMs,
      g(r.binaryChange),
      `${r.memory.nginx.rssMb}/${r.memory.nginx.pssMb}`,
      v.lb.impl !== 'nginx' ? `${r.memory.runtime.rssMb}/${r.memory.runtime.pssMb}` : '-',
    ]);
  }
  console.log(`${nodes} nodes, every one with podman + Docker and the kubelet stand-in (lab up --runtime ${nodes}); SSH floor ${sshFloorMs} ms (${nodes} logins + \`true\`, best of ${floors.join('/')})`);
  printTable(rows);
  for (const v of VARIANTS) {
    const m = results[v.name].memory;
    const other = m.otherRuntime.counted.length ? `; also running, not counted: ${m.otherRuntime.counted.join(', ')} (${m.otherRuntime.rssMb}/${m.otherRuntime.pssMb} MB)` : '';
    console.log(`${v.label}: counted nginx ${m.nginx.counted.join(', ')}${m.runtime.counted.length ? `; runtime ${m.runtime.counted.join(', ')}` : ''}${other}${m.storage ? `; storage ${m.storage}` : ''}; binary change: ${results[v.name].binaryChange.service.join(' / ')}`);
  }
  console.log(JSON.stringify({ benchmark: 'container', nodes, concurrency, cores: os.cpus().length, labUpMs, settledAfterMs, sshFloorMs, sshFloorRunsMs: floors, variants: results }));
} finally {
  if (!values.keep) labDown(dir);
}
