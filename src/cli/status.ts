/** `k8s-ha status -i inventory.yaml`: a table in a terminal, JSON for scripts. */
import { colour } from './colour.js';
import { byCause, ownCause } from './causes.js';
import { Command } from 'commander';
import { ExitCode } from '../errors.js';
import { describeDrift } from '../cluster/control-plane.js';
import type { ControlPlaneStatus } from '../cluster/read.js';
import type { ClusterStatus, KubeLbDiscovery, NodeStatus } from '../engine/status.js';
import { EXIT_CODES, inventoryOption, JSON_SCHEMA_VERSION, positive, privateKeyOption, traceIf, userOption, verboseOption } from './flags.js';
import { table } from './ui.js';
import { nextDeployDoes } from '../engine/scripts.js';
import type { VipStatus } from '../engine/vip-status.js';
import { formatHostPort } from '../util/hostport.js';
import { printable, printableDeep } from '../util/printable.js';

export function statusCommand(setExit: (code: number) => void): Command {
  return new Command('status')
    .description("each node's balancer (kube-nginx or kube-lb): service state, version, drift from the inventory, and which apiservers it reaches directly and through its local port")
    .addOption(inventoryOption())
    .addOption(userOption())
    .addOption(privateKeyOption())
    .addOption(verboseOption())
    .option('--limit <nodes>', 'only these nodes, comma-separated', (v) => v.split(',').map((s) => s.trim()).filter(Boolean))
    .option('--concurrency <n>', 'nodes probed at once', positive('--concurrency'), 64)
    .option('--probes <n>', 'HTTPS probes running at once, in all (each apiserver gets at most a third of them, at least 4)', positive('--probes'))
    .option('--playbook <file>', 'playbook YAML replacing the built-in one of the same name (kube-nginx or kube-lb)')
    .option('--kubeconfig <file>', "ask the cluster for its apiservers with this kubeconfig's credentials (instead of the inventory's cluster.kubeconfig) and show how they differ from the inventory's masters")
    .option('--ask-pass', 'ask on the terminal for the passphrase of protected keys ssh-agent does not hold')
    .option('--accept-new-host-keys', 'trust host keys never seen before and record them (never changed ones), as deploy does')
    .option('--json', 'JSON on stdout')
    .addHelpText(
      'after',
      `
Examples:
  k8s-ha status -i inventory.yaml                      every node's balancer, and what it reaches
  k8s-ha status -i inventory.yaml --json | jq '.nodes[] | select(.health != "healthy")'
  k8s-ha status -i inventory.yaml --kubeconfig admin.kubeconfig
                                                       also: do the cluster's apiservers match the inventory?
${EXIT_CODES}`,
    )
    .action(async (o: { inventory: string; limit?: string[]; concurrency: number; probes?: number; playbook?: string; json?: boolean; askPass?: boolean; kubeconfig?: string; acceptNewHostKeys?: boolean; user?: string; privateKey?: string; verbose?: boolean }) => {
      await traceIf(o.verbose);
      // Loaded only when the command runs, so `k8s-ha --help` stays quick.
      const { clusterStatus } = await import('../engine/status.js');
      if (o.askPass) await (await import('./deploy.js')).askPassphrases({ inventoryFile: o.inventory, limit: o.limit, playbookFile: o.playbook, sshUser: o.user, identityFile: o.privateKey });
      const s = await clusterStatus({ inventoryFile: o.inventory, limit: o.limit, concurrency: o.concurrency, probes: o.probes, playbookFile: o.playbook, kubeconfig: o.kubeconfig, acceptNewHostKeys: o.acceptNewHostKeys, sshUser: o.user, identityFile: o.privateKey });
      const cp = s.controlPlane;
      const cpDrift = !!cp && !('error' in cp) && (cp.notInCluster.length > 0 || cp.notInInventory.length > 0);
      const ok = s.healthy === s.nodes.length && !s.vip?.problem && !cpDrift && !(cp && 'error' in cp);
      for (const w of s.warnings) process.stderr.write(`${colour.yellow('warning:')} ${printable(w)}\n`);
      // hosts: by name, as deploy's are; nodes: the same objects, in inventory order.
      if (o.json) process.stdout.write(JSON.stringify({ schemaVersion: JSON_SCHEMA_VERSION, ok, ...s, hosts: Object.fromEntries(s.nodes.map((n) => [n.name, n])) }) + '\n');
      else process.stdout.write(renderStatus(s));
      // Something down (on definite evidence) is 3; then the control plane differing from the inventory, 7;
      // then nodes, or the control plane, that could not be told, 6.
      if (s.down || s.vip?.problem) setExit(ExitCode.hosts);
      else if (cpDrift) setExit(ExitCode.controlPlane);
      else if (s.unknown || (cp && 'error' in cp)) setExit(ExitCode.unknown);
    });
}

const good = (t: string) => colour.green(t);
const bad = (t: string) => colour.red(t);

function reachCell(n: NodeStatus, master: string): string {
  const m = n.masters.find((x) => x.name === master);
  if (!m) return bad('-');
  const direct = m.direct.status === 200 ? good('ok') : m.direct.unknown ? colour.yellow('?') : bad(m.direct.status ? String(m.direct.status) : 'down');
  const local = m.viaLocal > 0 ? good('ok') : colour.dim('-');
  return `${direct}/${local}`;
}

function driftCell(n: NodeStatus): string {
  const off = Object.entries(n.drift).filter(([, d]) => d !== 'ok');
  if (!off.length) return good('none');
  return off.map(([k, d]) => (d === 'unknown' ? colour.dim(`${k}?`) : colour.yellow(`${k} ${d}`))).join(', ');
}

/** The address dialed, and the bastion(s) in front of it. */
function addressCell(n: NodeStatus): string {
  return n.via ? `${n.address} ${colour.dim(`via ${n.via}`)}` : n.address;
}

/** What runs, and what the inventory asks when that differs (auto is satisfied by either). */
function implCell(n: NodeStatus): string {
  if (n.wanted === 'auto') return `${n.impl} (auto)`;
  return n.impl === n.wanted ? n.impl! : colour.yellow(`${n.impl} (inventory: ${n.wanted})`);
}

/** Drift as far as it was seen: nothing is said of nodes that were not reached. */
export function driftText(drifted: number, compared: number, nodes: number): string {
  if (drifted) return `, ${drifted} differ from the inventory (k8s-ha deploy --check --diff shows how)${compared < nodes ? `; ${nodes - compared} could not be compared` : ''}`;
  if (compared === 0) return ', none could be compared with the inventory';
  if (compared < nodes) return `, none of the ${compared} reached differs from the inventory; ${nodes - compared} could not be compared`;
  return ', none differs from the inventory';
}

export function renderStatus(status: ClusterStatus): string {
  // What nodes said (a foreign listener's name, a journal line) is shown, never obeyed by the terminal.
  const s = printableDeep(status);
  const masters = Object.keys(s.masters);
  // nginx's active connections, only when some node has its status port (nginx.statusListen).
  const conns = s.nodes.some((n) => n.connections !== undefined);
  const connCell = (n: NodeStatus) => (!conns ? [] : n.connections === undefined ? [colour.dim('-')] : n.connections === 'unknown' ? [colour.yellow('unknown')] : [String(n.connections.active)]);
  const blank = conns ? [''] : [];
  // Nodes not reached for one cause: the cause is said on the first one's row, the others point at it.
  const groups = byCause(s.nodes.filter((n) => !n.reachable).map((n) => ({ name: n.name, address: n.address, status: n.health === 'unknown' ? 'no answer' : 'unreachable', error: n.error })));
  const whyCell = (n: NodeStatus) => {
    const g = groups.find((x) => x.names.includes(n.name));
    return colour.dim(!g || g.names[0] === n.name ? ownCause(n.name, n.error) : `as ${g.names[0]}`);
  };
  const rows = [
    ['NODE', 'ADDRESS', 'LB', 'SERVICE', 'SINCE', 'VERSION', 'DRIFT', 'LISTEN', ...(conns ? ['CONNS'] : []), ...masters.map((m) => `${m} (direct/lb)`)],
    ...s.nodes.map((n) =>
      n.reachable
        ? [
            n.health === 'healthy' ? good(n.name) : n.health === 'unknown' ? colour.yellow(`${n.name}?`) : bad(n.name),
            addressCell(n),
            implCell(n),
            n.service === 'active (running)' ? good(n.service) : bad(n.service ?? '?'),
            n.since ?? '',
            n.version ?? colour.dim('none'),
            driftCell(n),
            n.listening ? good('up') : bad('down'),
            ...connCell(n),
            ...masters.map((m) => reachCell(n, m)),
          ]
        : n.health === 'unknown'
          ? [colour.yellow(`${n.name}?`), addressCell(n), n.wanted, colour.yellow('no answer'), '', '', '', '', ...blank, ...masters.map(() => ''), whyCell(n)]
          : [bad(n.name), addressCell(n), n.wanted, bad('unreachable'), '', '', '', '', ...blank, ...masters.map(() => ''), whyCell(n)],
    ),
  ];
  const lines = [table(rows), ''];
  lines.push(
    `${s.healthy}/${s.nodes.length} nodes healthy` +
      (s.down ? bad(`, ${s.down} down`) : '') +
      (s.unknown ? colour.yellow(`, ${s.unknown} unknown (no answer in time: could not tell)`) : '') +
      driftText(s.drifted, s.nodes.filter((n) => n.reachable).length, s.nodes.length) +
      ` (${(s.durationMs / 1000).toFixed(1)} s)`,
  );
  lines.push(masters.map((m) => `${m}: ${s.masters[m]!.direct}/${s.nodes.length} nodes reach it directly, ${s.masters[m]!.local} through their local port`).join('\n'));
  for (const n of s.nodes.filter((x) => x.discovery)) lines.push(discoveryLine(n.name, n.discovery!));
  for (const n of s.nodes.filter((x) => x.connections === 'unknown')) lines.push(colour.yellow(`${n.name}: nginx's connections unknown: ${n.connectionsError}`));
  for (const n of s.nodes.filter((x) => x.lockedBy)) lines.push(colour.yellow(`${n.name}: a k8s-ha run is working on it: locked by ${n.lockedBy}`));
  for (const n of s.nodes.filter((x) => x.unfinished && !x.lockedBy)) {
    lines.push(colour.yellow(`${n.name}: run ${n.unfinished!.run} (${n.unfinished!.by}) did not finish (${n.unfinished!.state}): ${nextDeployDoes(n.unfinished!.state)}`));
  }
  for (const n of s.nodes.filter((x) => x.reachable && x.health !== 'healthy')) {
    const line = `${n.name}: ${n.health === 'unknown' ? 'unknown: ' : ''}${n.service}${n.local?.errors.length ? `; through the local port: ${n.local.errors[0]}` : ''}`;
    lines.push(n.health === 'unknown' ? colour.yellow(line) : bad(line));
  }
  // A master that refuses the probes' identity: every node says the same, so once per master.
  for (const m of masters) {
    const refused = s.nodes.map((n) => n.masters.find((x) => x.name === m)?.direct.refused).filter(Boolean);
    if (refused.length) lines.push(bad(`${m}: ${refused[0]} (seen from ${refused.length} node${refused.length === 1 ? '' : 's'})`));
    // Why a master is down from the nodes that got a definite answer (refused, reset, an oversized /readyz...).
    const failed = s.nodes.map((n) => n.masters.find((x) => x.name === m)?.direct.error).filter(Boolean);
    if (failed.length) lines.push(bad(`${m}: ${failed[0]} (seen from ${failed.length} node${failed.length === 1 ? '' : 's'})`));
  }
  if (s.controlPlane) lines.push(renderControlPlane(s.controlPlane));
  if (s.vip) lines.push('', ...renderVipStatus(s.vip));
  for (const m of masters) {
    const unsure = s.nodes.filter((n) => n.masters.find((x) => x.name === m)?.direct.unknown).length;
    if (unsure) lines.push(colour.yellow(`${m}: ${unsure} node${unsure === 1 ? '' : 's'} could not tell whether they reach it directly (timed out twice)`));
  }
  return lines.join('\n') + '\n';
}

/** kube-lb's discovery on one node: the backends in use beside the configured ones, and what is wrong. */
function discoveryLine(node: string, d: KubeLbDiscovery): string {
  if ('error' in d) return colour.yellow(`${node}: kube-lb discovery unknown: ${d.error}`);
  const inUse = d.backends.map((b) => b.address);
  const same = inUse.length === d.configured.length && inUse.every((a) => d.configured.includes(a));
  const learned = d.learned ? `the cluster names ${d.learned.join(', ') || 'none'}` : 'nothing learned yet';
  const text = `${node}: kube-lb discovery: ${learned}; balancing to ${inUse.join(', ')}${same ? ' (the configured ones)' : `; configured: ${d.configured.join(', ')}`}${d.watching ? '' : ', not watching'}${d.problem ? `: ${d.problem}` : ''}`;
  return d.problem || !d.watching ? colour.yellow(text) : text;
}

/** The cluster's control plane against the inventory's masters, in one line (and why, when it could not be read). */
export function renderControlPlane(cp: ControlPlaneStatus): string {
  if ('error' in cp) return colour.yellow(`control plane: unknown: could not read it with ${cp.kubeconfig}: ${cp.error}${cp.hint ? `\n  ${cp.hint}` : ''}`);
  const line = `control plane (${cp.source} of the kubernetes Service, via ${cp.via}): ${describeDrift(cp)}`;
  const notReady = cp.notReady.length ? `; not ready: ${cp.notReady.join(', ')}` : '';
  return cp.notInCluster.length || cp.notInInventory.length ? colour.yellow(line + notReady + ' (k8s-ha deploy --masters-from-cluster rolls the nodes to it)') : good(line) + notReady;
}

/** The VIP: one line of verdict, then each VIP host's state and haproxy's view of every master. */
export function renderVipStatus(vip: VipStatus): string[] {
  const v = printableDeep(vip);
  const where = formatHostPort(v.address, v.port);
  const masters = [...new Set(v.hosts.flatMap((h) => h.backends.map((b) => b.name)))];
  const backend = (h: VipStatus['hosts'][number], m: string) => {
    const b = h.backends.find((x) => x.name === m);
    if (!b) return colour.dim('-');
    const text = `${b.status} ${b.sessions}`;
    return /^UP/.test(b.status) ? good(text) : bad(text);
  };
  const rows = [
    ['VIP HOST', 'ADDRESS', 'VIP', 'VRRP', 'HAPROXY', 'KEEPALIVED', ...masters.map((m) => `${m} (state sessions)`)],
    ...v.hosts.map((h) =>
      h.reachable
        ? [
            h.holds ? good(h.name) : h.name,
            h.via ? `${h.address} ${colour.dim(`via ${h.via}`)}` : h.address,
            h.holds ? good('holds') : colour.dim('-'),
            h.vrrp === 'FAULT' || h.vrrp === 'STOP' ? bad(h.vrrp) : (h.vrrp ?? colour.dim('unknown')),
            h.haproxy === 'active (running)' ? good(h.haproxy) : bad(h.haproxy ?? '?'),
            h.keepalived === 'active (running)' ? good(h.keepalived) : bad(h.keepalived ?? '?'),
            ...masters.map((m) => backend(h, m)),
          ]
        : [bad(h.name), h.address, bad('unreachable'), '', '', '', colour.dim(h.error?.split('\n')[0] ?? '')],
    ),
  ];
  const head = v.problem ? bad(`VIP ${where}: ${v.problem}`) : good(`VIP ${where}: held by ${v.holders[0]}`);
  const out = [head, table(rows)];
  for (const h of v.hosts.filter((x) => x.reachable && x.statsError)) out.push(colour.yellow(`${h.name}: haproxy's view of the masters could not be read: ${h.statsError}`));
  return out;
}
