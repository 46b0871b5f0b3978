/**
 * How a deploy looks: events in, text out. Three ways, chosen for where the output goes: live
 * task lists in a terminal (listr2), plain lines for CI logs and pipes, and plain lines on stderr
 * with one JSON report on stdout (--json). The recap and --check views are built from the report alone.
 */
import { describeMastersChange } from '../cluster/read.js';
import { colour } from './colour.js';
import { UNSETTLED, type HostPhase } from '../engine/host.js';
import type { DeployEvent, DeployReport, HostReport, Phase } from '../engine/run.js';
import type { HostResult } from '../engine/results.js';
import { displayPath } from '../util/paths.js';
import { nextDeployDoes } from '../engine/scripts.js';
import { shellCommand } from '../util/quote.js';
import { table } from './ui.js';
import { vipLabel, type VipReport } from '../engine/vip.js';
import { formatHostPort } from '../util/hostport.js';
import { printableDeep } from '../util/printable.js';
import { byCause, causeLine, ownCause, type Failure } from './causes.js';


/** What the renderers know, from the events alone: each node's current phase and its result. */
export class Tracker {
  readonly phase = new Map<string, HostPhase>();
  readonly done = new Map<string, HostResult>();
  inventoryFile = '';

  on(e: DeployEvent): void {
    if (e.type === 'start') this.inventoryFile = e.inventoryFile;
    if (e.type === 'host-phase') this.phase.set(e.name, e.phase);
    if (e.type === 'host-done') {
      this.phase.delete(e.result.name);
      this.done.set(e.result.name, e.result);
    }
  }

  /** Nodes whose state is not known if we leave now: new files may be live and not verified. */
  unsettled(): { name: string; phase: HostPhase }[] {
    return [...this.phase].filter(([, p]) => UNSETTLED.has(p)).map(([name, phase]) => ({ name, phase }));
  }
}

export interface Renderer {
  emit: (e: DeployEvent) => void;
  stop: () => Promise<void>;
  tracker: Tracker;
}

const counts = (r: Pick<HostResult, 'ok' | 'changed' | 'failed'>) => `ok=${r.ok} changed=${r.changed} failed=${r.failed}`;

/** One line for a node that is done. */
export function hostLine(r: HostResult): string {
  if (r.status === 'unreachable') return `${r.name}: unreachable: ${ownCause(r.name, r.error)}`;
  if (r.status === 'locked') return `${r.name}: not touched, ${r.error ?? 'locked by another run'}`;
  if (r.status === 'skipped') return `${r.name}: not reached: ${r.error ?? ''}`;
  const recovered = r.recovered ? ` [earlier run: ${r.recovered}]` : '';
  if (r.status === 'failed') {
    return `${r.name}: ${counts(r)}: ${r.error ? ownCause(r.name, r.error) : 'failed'}${r.rollback ? ` (${r.rollback.ok ? 'restored' : 'NOT restored'})` : ''}${recovered}`;
  }
  return `${r.name}: ${counts(r)}${r.verified ? `, verified through ${r.verified.backend ?? 'an apiserver'}` : ''}${recovered}`;
}

function stoppingLine(e: Extract<DeployEvent, { type: 'interrupted' }>): string {
  const busy = e.inFlight.map((f) => `${f.name} (${f.phase})`).join(', ');
  return `stopping (${e.signal}): ${busy ? `finishing ${busy}` : 'no node is being changed'}; no new nodes will start; press Ctrl-C again to abort now`;
}

const waitLine = (e: Extract<DeployEvent, { type: 'verify-wait' }>) =>
  `${e.name}: verifying: ${e.waitingFor}, ${Math.round(e.elapsedMs / 1000)} s of ${Math.round(e.deadlineMs / 1000)} s`;

/** Plain lines, one per thing that happened: for CI logs, pipes and --json (on stderr). */
export function plainRenderer(stream: NodeJS.WritableStream): Renderer {
  const tracker = new Tracker();
  const lastWait = new Map<string, number>();
  /** Causes of hosts unreachable or locked said so far: a host failing for one already said is left to the recap, which lists it. */
  const causes: Failure[] = [];
  let lastBuild = 0;
  const say = (line: string) => stream.write(line + '\n');
  const emit = (event: DeployEvent) => {
    // Hosts' text (errors, journal lines, build output) is shown, never obeyed by the terminal.
    const e = printableDeep(event);
    tracker.on(e);
    switch (e.type) {
      case 'start':
        for (const w of e.warnings) say(`${colour.yellow('warning:')} ${w}`);
        say(`${e.check ? 'check' : 'deploy'} ${e.runId}: ${e.nodes.length} node${e.nodes.length === 1 ? '' : 's'} from ${displayPath(e.inventoryFile)}, at most ${e.concurrency} at a time`);
        break;
      case 'phase':
        say(colour.bold(`== ${e.title}`));
        break;
      case 'note':
        say(`note: ${e.line}`);
        break;
      case 'phase-done':
        say(`   ${e.summary}`);
        break;
      case 'build-output':
        // A compile prints hundreds of progress lines: one every 2 s is enough to see it move. Anything else is said.
        if (!/^(make: compiled|configure: )/.test(e.line) || Date.now() - lastBuild > 2000) {
          lastBuild = Date.now();
          say(`   ${e.line}`);
        }
        break;
      case 'host-phase':
        if (e.phase !== 'locking' && e.phase !== 'connecting') say(`${e.name}: ${e.phase}${e.detail ? `: ${e.detail}` : ''}`);
        break;
      case 'verify-wait':
        if (Date.now() - (lastWait.get(e.name) ?? 0) >= 3000) {
          lastWait.set(e.name, Date.now());
          say(waitLine(e));
        }
        break;
      case 'host-done': {
        const r = e.result;
        if (r.status === 'unreachable' || r.status === 'locked') {
          const f = { name: r.name, address: r.address, status: r.status, error: r.error, hint: r.hint };
          causes.push(f);
          const alike = byCause(causes).find((g) => g.names.includes(r.name))!.names;
          if (alike.length === 1) say(colour.red(hostLine(r)));
          else if (alike.length === 2) say(colour.red(`${r.name}: ${r.status}, as ${alike[0]}; more hosts failing alike are not listed one by one until the end`));
          break;
        }
        say(r.status === 'failed' ? colour.red(hostLine(r)) : hostLine(r));
        break;
      }
      case 'batch':
        say(`-- ${e.phase} batch ${e.index}/${e.total}: ${e.nodes.join(', ')}`);
        break;
      case 'batch-done':
        if (e.stopped) say(colour.red(`-- ${e.phase} stopped after batch ${e.index}: ${e.stopped}`));
        break;
      case 'interrupted':
        say(colour.yellow(stoppingLine(e)));
        break;
    }
  };
  return { emit, tracker, stop: async () => undefined };
}

const PHASES: { phase: Phase; title: string }[] = [
  { phase: 'build', title: 'Build' },
  { phase: 'plan', title: 'Connect, lock and plan' },
  { phase: 'apply', title: 'Apply' },
  { phase: 'roll', title: 'Roll' },
  { phase: 'repoint', title: 'Repoint kubeconfigs' },
  { phase: 'vip', title: 'VIP (haproxy + keepalived)' },
];

function deferred<T>() {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** A live task list for a terminal: one task per phase, the nodes at work shown under it. */
async function liveRenderer(): Promise<Renderer> {
  const { Listr } = await import('listr2');
  const tracker = new Tracker();
  const started = new Map(PHASES.map((p) => [p.phase, deferred<string>()]));
  const finished = new Map(PHASES.map((p) => [p.phase, deferred<string>()]));
  const ended = deferred<undefined>();
  const lines = new Map<string, string>();
  const notes: string[] = [];
  let output: ((text: string) => void) | undefined;
  const refresh = () => output?.([...notes, ...lines.values()].join('\n'));
  const list = new Listr(
    PHASES.map((p) => ({
      title: p.title,
      task: async (_: unknown, task: { title: string; output: string; skip: (m?: string) => void }) => {
        const title = await Promise.race([started.get(p.phase)!.promise, ended.promise]);
        if (title === undefined) return task.skip(`${p.title}: not needed`);
        task.title = title;
        output = (text) => (task.output = text);
        const summary = await Promise.race([finished.get(p.phase)!.promise, ended.promise]);
        output = undefined;
        lines.clear();
        if (summary) task.title = `${title}: ${summary}`;
      },
    })),
    // The deploy command handles SIGINT itself (finish, restore, exit 130): listr2's own handler would exit 127 at once.
    { concurrent: false, exitOnError: false, registerSignalListeners: false, rendererOptions: { collapseSubtasks: false, outputBar: Infinity } as never },
  );
  const running = list.run().catch(() => undefined);
  const emit = (event: DeployEvent) => {
    const e = printableDeep(event);
    tracker.on(e);
    if (e.type === 'start') for (const w of e.warnings) notes.push(`${colour.yellow('warning:')} ${w}`);
    if (e.type === 'note') notes.push(`note: ${e.line}`);
    if (e.type === 'phase') started.get(e.phase)!.resolve(e.title);
    if (e.type === 'phase-done') finished.get(e.phase)!.resolve(e.summary);
    if (e.type === 'build-output') lines.set('build', e.line);
    if (e.type === 'host-phase') lines.set(e.name, `${e.name}: ${e.phase}${e.detail ? `: ${e.detail}` : ''}`);
    if (e.type === 'verify-wait') lines.set(e.name, waitLine(e));
    if (e.type === 'host-done') {
      if (e.result.status === 'ok' || e.result.status === 'changed') lines.delete(e.result.name);
      else lines.set(e.result.name, colour.red(hostLine(e.result)));
    }
    if (e.type === 'batch') notes.splice(0, notes.length, `${e.phase} batch ${e.index}/${e.total}: ${e.nodes.join(', ')}`);
    if (e.type === 'interrupted') notes.push(colour.yellow(stoppingLine(e)));
    refresh();
  };
  return {
    emit,
    tracker,
    stop: async () => {
      ended.resolve(undefined);
      await running;
    },
  };
}

/** Live in a terminal; plain lines in CI, in a pipe, or on stderr beside --json. */
export async function chooseRenderer(json: boolean): Promise<Renderer> {
  const stream = json ? process.stderr : process.stdout;
  // A terminal that reports no width (0 columns: a serial console, some CI runners' pseudo-terminals)
  // would have the live list wrapped one character per line: plain lines read right there.
  const width = (stream as NodeJS.WriteStream).columns;
  const live = Boolean(stream.isTTY) && !process.env.CI && process.env.TERM !== 'dumb' && Number(width) >= 20;
  return live ? liveRenderer() : plainRenderer(stream);
}

/** What a second Ctrl-C prints before leaving at once. */
export function abortNowText(tracker: Tracker, sig: string): string {
  const unknown = tracker.unsettled();
  const again = `k8s-ha ${shellCommand(process.argv.slice(2))}`;
  const lines = [colour.red(`aborted (${sig} twice): leaving now`)];
  if (unknown.length) {
    lines.push(colour.red(`state unknown on: ${unknown.map((u) => `${u.name} (was ${u.phase})`).join(', ')}`));
    lines.push('  each keeps a journal of the change in flight (/var/lib/k8s-ha/journal); the next deploy verifies it and restores the previous files if verify fails');
    lines.push(`  repair with: ${again}`);
  } else lines.push('no node was being changed: every node runs its previous or its verified new configuration');
  return lines.join('\n') + '\n';
}

const STATUS_COLOUR = { ok: colour.green, changed: colour.yellow, failed: colour.red, unreachable: colour.red, skipped: colour.magenta, locked: colour.red } as const;

/** nginx or kube-lb, `(auto)` when the inventory left the choice to k8s-ha, and a switch that did not happen. */
function implLabel(h: HostReport): string {
  const i = h.impl;
  if (!i) return '';
  const auto = i.wanted === 'auto' ? ' (auto)' : '';
  if (i.from && i.running && i.running !== i.impl) return `${i.running} (switch to ${i.impl}${auto} not applied)`;
  if (!i.running) return `${i.impl}${auto} (state unknown)`;
  return `${i.impl}${auto}`;
}

function colourDiff(diff: string): string {
  return diff
    .split('\n')
    .map((l) => (l.startsWith('+') && !l.startsWith('+++') ? colour.green(l) : l.startsWith('-') && !l.startsWith('---') ? colour.red(l) : l))
    .join('\n');
}

export function renderRecap(report: DeployReport, withDiff: boolean): string {
  const r = printableDeep(report);
  const out: string[] = [''];
  const hosts = Object.entries(r.hosts);
  if (withDiff) for (const [name, h] of hosts) for (const ch of h.check?.changes ?? []) if (ch.diff) out.push(colour.dim(`--- ${name}: ${ch.step}`), colourDiff(ch.diff));
  if (r.masters) out.push(...describeMastersChange(r.masters));
  out.push(colour.bold(`RECAP  ${displayPath(r.inventoryFile)}, ${hosts.length} node${hosts.length === 1 ? '' : 's'}, ${(r.durationMs / 1000).toFixed(1)} s, run ${r.runId}${r.interrupted ? colour.yellow(`, INTERRUPTED (${r.interrupted.signal})`) : ''}`));
  out.push(
    table(
      hosts.map(([name, h]) => [
        name,
        h.via ? `${h.address} ${colour.dim(`via ${h.via}`)}` : h.address,
        STATUS_COLOUR[h.status](h.status),
        `ok=${h.ok}`,
        `changed=${h.changed}`,
        `failed=${h.failed}`,
        implLabel(h),
        h.batch ? `batch ${h.batch}` : '',
        // Only a passed verify is shown here; a failed one is explained below the table.
        h.verified && h.config === 'new' && h.status !== 'failed' ? `${h.verified.state}, /readyz ${h.verified.status} via ${r.listen} from ${h.verified.backend ?? '?'}` : '',
      ]),
    ),
  );
  for (const [name, h] of hosts) if (h.impl?.why) out.push(colour.yellow(`${name}: ${h.impl.impl} (lb.impl auto): ${h.impl.why}`));
  for (const [name, h] of hosts) if (h.recovered) out.push(colour.yellow(`${name}: an unfinished earlier run was found: ${h.recovered}`));
  const t = r.totals;
  if (r.bastionLogins) out.push(colour.dim(`through bastions: ${r.bastionLogins} bastion login${r.bastionLogins === 1 ? '' : 's'} for ${hosts.filter(([, h]) => h.via).length} nodes`));
  out.push(
    `totals: ${t.changed} changed, ${t.ok} ok, ${t.failed} failed, ${t.unreachable} unreachable` +
      `${t.locked ? `, ${t.locked} locked by another run` : ''}${t.skipped ? `, ${t.skipped} not reached` : ''}`,
  );
  const by = (state: HostReport['config']) => hosts.filter(([, h]) => h.config === state).map(([n]) => n);
  if (r.roll?.stoppedAfter || r.interrupted) {
    if (r.roll?.stoppedAfter) out.push(colour.red(`roll stopped after batch ${r.roll.stoppedAfter} of ${r.roll.batches.length}: ${r.roll.reason}`));
    if (r.interrupted) out.push(colour.yellow(`interrupted by ${r.interrupted.signal}: nodes already committing were verified (and restored when that failed); no other node was started`));
    out.push(`  running the new configuration: ${by('new').join(', ') || 'none'}`);
    out.push(`  running the previous configuration: ${by('previous').join(', ') || 'none'}`);
    if (by('unknown').length) out.push(colour.red(`  unknown (could not restore): ${by('unknown').join(', ')}`));
    out.push('  fix the cause, then run the same deploy again: it picks up where this run stopped');
  }
  if (r.vip) out.push(...vipRecap(r.vip));
  const vipFailed = Object.entries(r.vip?.hosts ?? {}).map(([n, h]) => [vipLabel(n), h] as const);
  const failedHosts = [...hosts, ...vipFailed].filter(([, x]) => x.status === 'failed' || x.status === 'unreachable' || x.status === 'locked');
  // Hosts unreachable or locked for one cause: said once, with the hosts it cost.
  const alike = byCause(failedHosts.filter(([, h]) => h.status !== 'failed').map(([name, h]) => ({ name, address: h.address, status: h.status, error: h.error, hint: h.hint })));
  for (const g of alike.filter((x) => x.names.length > 1)) {
    out.push('', colour.red(`${causeLine(g, 'hosts')}`));
    if (g.hint) out.push(`  ${colour.yellow('fix:')} ${g.hint}`);
  }
  const grouped = new Set(alike.filter((x) => x.names.length > 1).flatMap((x) => x.names));
  for (const [name, h] of failedHosts.filter(([n]) => !grouped.has(n))) {
    out.push('', colour.red(`${name} (${h.address}) ${h.status}:`));
    out.push(...[ownCause(name, h.error), ...(h.error ?? '').split('\n').slice(1)].map((l) => `  ${l}`));
    if (h.rollback) out.push(`  ${h.rollback.ok ? colour.green('restored:') : colour.red('NOT restored:')} ${h.rollback.detail}`);
    if (h.hint) out.push(`  ${colour.yellow('fix:')} ${h.hint}`);
    if ('stepHint' in h && h.stepHint) out.push(`  ${colour.yellow('hint:')} ${h.stepHint}`);
    if (h.journal) out.push(`  last lines of the journal:`, ...h.journal.split('\n').map((l) => `    ${l}`));
  }
  return out.join('\n') + '\n';
}

/** The VIP: who holds it, whether it answers, and each VIP host's line. */
function vipRecap(v: VipReport): string[] {
  const where = formatHostPort(v.address, v.port);
  const head = v.error
    ? colour.red(`VIP ${where}: ${v.error}`)
    : v.through
      ? colour.green(`VIP ${where}: held by ${v.holders?.join(', ')}; ${v.through.summary}`)
      : `VIP ${where}: ${v.holders?.length === 1 ? `held by ${v.holders[0]}` : 'not proven'}`;
  return [
    '',
    colour.bold(head),
    table(
      Object.entries(v.hosts).map(([name, h]) => [
        vipLabel(name),
        h.via ? `${h.address} ${colour.dim(`via ${h.via}`)}` : h.address,
        STATUS_COLOUR[h.status](h.status),
        `ok=${h.ok}`,
        `changed=${h.changed}`,
        `failed=${h.failed}`,
        h.heldBefore ? 'held the VIP' : '',
        v.rolled.includes(name) ? `rolled ${v.rolled.indexOf(name) + 1}/${v.rolled.length}` : '',
        h.verified && h.status !== 'failed' ? `${h.verified.state}, /readyz ${h.verified.status} from ${h.verified.backend ?? '?'}` : '',
      ]),
    ),
  ];
}

export function renderCheck(report: DeployReport, withDiff: boolean): string {
  const r = printableDeep(report);
  const out: string[] = ['', colour.bold(`CHECK  ${displayPath(r.inventoryFile)}: nothing was built, installed or changed on any host`)];
  if (r.build) out.push(colour.dim(`build: ${r.build}`));
  if (r.masters) out.push(...describeMastersChange(r.masters));
  let pending = 0;
  let pendingVip = 0;
  /** Hosts that could not be checked, said once per cause after the rest. */
  const unchecked: Failure[] = [];
  for (const [name, h] of Object.entries(r.hosts)) {
    if (h.unfinished) out.push(colour.yellow(`${name}: an unfinished run ${h.unfinished.run} (${h.unfinished.by}, ${h.unfinished.state}): ${nextDeployDoes(h.unfinished.state)}`));
    if (!h.check) {
      unchecked.push({ name, address: h.address, status: h.status, error: h.error, hint: h.hint });
      continue;
    }
    const unknown = h.steps.filter((s) => s.status === 'skipped' && /unknown/.test(s.summary));
    if (!h.check.changes.length) {
      out.push(`${colour.green(name)}: up to date${unknown.length ? ` (${unknown.map((s) => `${s.name}: ${s.summary}`).join('; ')})` : ''}`);
      continue;
    }
    pending++;
    out.push(`${colour.yellow(name)} (${implLabel(h)}): ${h.check.service === 'nothing' ? 'no restart or reload' : `would ${h.check.service}`}`);
    for (const ch of h.check.changes) {
      out.push(`  ${ch.step}: ${ch.summary}`);
      if (withDiff && ch.diff) out.push(...colourDiff(ch.diff).split('\n').map((l) => `    ${l}`));
    }
    for (const s of unknown) out.push(`  ${s.name}: ${s.summary}`);
  }
  for (const [name, h] of Object.entries(r.vip?.hosts ?? {})) {
    const label = vipLabel(name);
    if (!h.check) {
      unchecked.push({ name: label, address: h.address, status: h.status, error: h.error, hint: h.hint });
      continue;
    }
    if (!h.check.changes.length) {
      out.push(`${colour.green(label)}: up to date${h.heldBefore ? ' (holds the VIP)' : ''}`);
      continue;
    }
    pendingVip++;
    out.push(`${colour.yellow(label)}${h.heldBefore ? ' (holds the VIP: it would change last)' : ''}: ${h.check.service === 'nothing' ? 'no restart or reload' : `would ${h.check.service}`}`);
    for (const ch of h.check.changes) {
      out.push(`  ${ch.step}: ${ch.summary}`);
      if (withDiff && ch.diff) out.push(...colourDiff(ch.diff).split('\n').map((l) => `    ${l}`));
    }
  }
  for (const g of byCause(unchecked)) {
    out.push(colour.red(causeLine(g, 'hosts')));
    if (g.hint) out.push(`  ${colour.yellow('fix:')} ${g.hint}`);
  }
  if (r.vip?.error) out.push(colour.red(`VIP ${formatHostPort(r.vip.address, r.vip.port)}: ${r.vip.error}`));
  // Counted as the JSON counts them: nodes (totals), and VIP hosts apart.
  const plural = (n: number, one: string) => (n ? `${n} ${one}${n === 1 ? '' : 's'}` : '');
  const hostsText = (nodes: number, vip: number) => [plural(nodes, 'node'), plural(vip, 'VIP host')].filter(Boolean).join(' and ');
  const uncheckedNodes = Object.values(r.hosts).filter((h) => !h.check).length;
  const pendingLine = pending || pendingVip ? `${hostsText(pending, pendingVip)} would change` : '';
  const uncheckedLine = unchecked.length ? `${hostsText(uncheckedNodes, unchecked.length - uncheckedNodes)} could not be checked` : '';
  out.push(
    '',
    unchecked.length
      ? `${[pendingLine, uncheckedLine].filter(Boolean).join('; ')} (exit 3)`
      : pending || pendingVip
        ? `${pendingLine} (exit 5)`
        : 'every node is up to date',
  );
  return out.join('\n') + '\n';
}
