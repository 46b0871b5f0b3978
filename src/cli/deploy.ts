/** `k8s-ha deploy -i inventory.yaml` (alias `reconfigure`): parse, call the engine, render progress and the recap. */
import chalk from 'chalk';
import { Command, InvalidArgumentError } from 'commander';
import { Listr, type ListrTask } from 'listr2';
import { ExitCode } from '../errors.js';
import { checkNode, type NodeCheck } from '../engine/check.js';
import {
  applyNow,
  buildArtifacts,
  buildsNeeded,
  closeAll,
  implOf,
  endCheck,
  planNode,
  playbookOf,
  prepareDeploy,
  report,
  rollBatch,
  rollPlan,
  skipRest,
  type DeployReport,
  type DeployRun,
  type NodeImpl,
} from '../engine/deploy.js';
import { configState, DEFAULT_SERIAL, failed, parseSerial, type RollPlan } from '../engine/roll.js';
import type { HostResult } from '../engine/results.js';
import { displayPath } from '../util/paths.js';
import { mapLimit } from '../util/pool.js';
import { listrOptions, table } from './ui.js';

function positive(what: string) {
  return (v: string) => {
    if (!/^\d+$/.test(v) || Number(v) < 1) throw new InvalidArgumentError(`${what} must be a whole number of at least 1.`);
    return Number(v);
  };
}

function percent(v: string): number {
  if (!/^\d+$/.test(v) || Number(v) > 100) throw new InvalidArgumentError('--max-fail-percent must be a whole number from 0 to 100.');
  return Number(v);
}

interface DeployFlags {
  inventory: string;
  playbook?: string;
  limit?: string[];
  concurrency: number;
  acceptNewHostKeys?: boolean;
  json?: boolean;
  check?: boolean;
  diff?: boolean;
  serial: string;
  maxFailPercent: number;
  repointKubeconfigs?: boolean;
}

export function deployCommand(setExit: (code: number) => void): Command {
  return new Command('deploy')
    .alias('reconfigure')
    .description(
      'build the node-local balancer (nginx with the stream module, or kube-lb as one executable: lb.impl), roll it out to every node, ' +
        'verify each end to end; nodes whose running balancer would be restarted, reloaded or replaced go in batches (--serial)',
    )
    .requiredOption('-i, --inventory <file>', 'inventory YAML')
    .option('--check', 'show what would change on each node and touch nothing (exit 5 when changes are pending)')
    .option('--diff', 'show unified diffs of the config and unit files that change')
    .option('--serial <n|n%>', 'nodes per batch when a running balancer would be restarted, reloaded or replaced', DEFAULT_SERIAL)
    .option('--max-fail-percent <p>', 'failed nodes (percent of those rolled) a roll tolerates before it stops', percent, 0)
    .option('--repoint-kubeconfigs', 'once a node\'s balancer is verified, point its kubelet and kube-proxy kubeconfigs at it (backup kept) and restart them')
    .option('--limit <nodes>', 'only these nodes, comma-separated', (v) => v.split(',').map((s) => s.trim()).filter(Boolean))
    .option('--concurrency <n>', 'nodes connected to and worked on at once', positive('--concurrency'), 64)
    .option('--accept-new-host-keys', 'trust host keys never seen before and record them (never changed ones)')
    .option('--playbook <file>', 'playbook YAML replacing the built-in one of the same name (kube-nginx or kube-lb)')
    .option('--json', 'print one JSON object on stdout; progress goes to stderr')
    .action(async (o: DeployFlags) => {
      const serial = parseSerial(o.serial);
      const run = await prepareDeploy({
        inventoryFile: o.inventory,
        playbookFile: o.playbook,
        limit: o.limit,
        concurrency: o.concurrency,
        acceptNewHostKeys: !!o.acceptNewHostKeys,
        check: !!o.check,
        diff: !!o.diff,
        serial,
        maxFailPercent: o.maxFailPercent,
        repointKubeconfigs: !!o.repointKubeconfigs,
      });
      for (const w of run.loaded.warnings) process.stderr.write(`${chalk.yellow('warning:')} ${w}\n`);
      try {
        // A failed build stops everything (exit 4, no node touched); host failures never do: their lists carry on.
        await new Listr(tasks(run), { ...listrOptions(!!o.json), exitOnError: true }).run();
      } finally {
        closeAll(run);
      }
      if (o.check) {
        const checks = run.nodes.flatMap((n) => run.prepared.filter((p) => p.o.node.name === n.name)).map((p) => checkNode(p, !!o.diff));
        endCheck(run);
        const pending = checks.filter((c) => c.changes.length).length;
        if (o.json) process.stdout.write(JSON.stringify(checkJson(run, checks)) + '\n');
        else process.stdout.write(renderCheck(run, checks, !!o.diff));
        const broken = run.results.some(failed);
        setExit(broken ? ExitCode.hosts : pending ? ExitCode.pending : ExitCode.ok);
        return;
      }
      const r = report(run);
      if (o.json) process.stdout.write(JSON.stringify(r) + '\n');
      else process.stdout.write(renderRecap(run, r, o.diff ? run.prepared.map((p) => checkNode(p, true)) : []));
      if (!r.ok) setExit(ExitCode.hosts);
    });
}

function tasks(run: DeployRun): ListrTask[] {
  const inv = run.loaded.inventory;
  let plan: RollPlan | undefined;
  let stopped = false;
  const n = run.nodes.length;
  const first: ListrTask[] = [
    {
      title: buildTitle(run),
      task: async (_: unknown, task) => {
        task.title = await buildArtifacts(run, (line) => (task.output = line));
      },
    },
    {
      title: `Connect to ${n} node${n === 1 ? '' : 's'} and plan`,
      task: async (_: unknown, task) => {
        let done = 0;
        await mapLimit(run.nodes, run.options.concurrency, async (node) => {
          await planNode(run, node, () => undefined);
          task.output = `${++done}/${n} planned`;
        });
        const pending = run.prepared.filter((p) => p.plan.steps.some((s) => s.plan?.changes.length)).length;
        const down = run.results.length;
        task.title =
          `Planned ${run.prepared.length} of ${n} nodes: ${pending} with changes` +
          (down ? `; cannot work on ${run.results.map((r) => `${r.name} (${r.status})`).join(', ')}` : '');
      },
    },
  ];
  return first.concat(run.options.check ? [] : [
    {
      title: 'Apply',
      task: (_: unknown, task) => {
        plan = rollPlan(run);
        if (!plan.immediate.length) {
          task.skip('nothing to apply at once');
          return;
        }
        task.title = `Apply to ${plan.immediate.length} node${plan.immediate.length === 1 ? '' : 's'} at once (no running balancer is restarted, reloaded or replaced)`;
        return task.newListr(
          plan.immediate.map((p) => ({
            title: p.o.node.name,
            task: async (_c: unknown, t) => {
              const r = await applyNow(run, p, (line) => (t.output = line));
              t.title = hostLine(r);
              if (failed(r)) throw new Error(hostLine(r));
            },
          })),
          { concurrent: run.options.concurrency, exitOnError: false },
        );
      },
    },
    {
      title: 'Roll',
      skip: () => !plan?.batches.length,
      task: (_: unknown, task) => {
        const p = plan!;
        task.title = `Roll ${p.batches.flat().length} node${p.batches.flat().length === 1 ? '' : 's'} with a running balancer, ${p.batches[0]!.length} at a time (${p.batches.length} batch${p.batches.length === 1 ? '' : 'es'}; stop after ${p.failLimit + 1} failure${p.failLimit ? 's' : ''})`;
        return task.newListr(
          p.batches.map((batch, i) => ({
            title: `batch ${i + 1}/${p.batches.length}: ${batch.map((h) => h.o.node.name).join(', ')}`,
            task: async (_c: unknown, t) => {
              if (stopped) return t.skip(`not reached: the roll stopped`);
              const { results, stop } = await rollBatch(run, p, i, (name) => (line) => (t.output = `${name}: ${line}`));
              t.title = `batch ${i + 1}/${p.batches.length}: ${results.map(hostLine).join('; ')}`;
              if (stop) {
                stopped = true;
                skipRest(run, p, i + 1);
                throw new Error(`roll stopped after batch ${i + 1}: ${run.roll?.reason}`);
              }
              if (results.some(failed)) throw new Error(t.title);
            },
          })),
          { concurrent: false, exitOnError: false },
        );
      },
    },
  ]);
}

function buildTitle(run: DeployRun): string {
  const inv = run.loaded.inventory;
  const need = buildsNeeded(run);
  const parts = [
    need.nginx && inv.nginx ? `nginx ${inv.nginx.version} on ${inv.build.host}` : '',
    need.kubeLb ? 'kube-lb on the controller' : '',
  ].filter(Boolean);
  return parts.length ? `Build ${parts.join(' and ')}` : 'Build';
}

function hostLine(r: HostResult): string {
  const counts = `ok=${r.ok} changed=${r.changed} failed=${r.failed}`;
  if (r.status === 'unreachable') return `${r.name}: unreachable: ${r.error?.split('\n')[0] ?? ''}`;
  if (r.status === 'failed') {
    return `${r.name}: ${counts}: ${r.error?.split('\n')[0] ?? 'failed'}${r.rollback ? ` (${r.rollback.ok ? 'restored' : 'NOT restored'})` : ''}`;
  }
  return `${r.name}: ${counts}${r.verified ? `, verified through ${r.verified.backend ?? 'an apiserver'}` : ''}`;
}

const STATUS_COLOUR = { ok: chalk.green, changed: chalk.yellow, failed: chalk.red, unreachable: chalk.red, skipped: chalk.magenta } as const;

export function renderRecap(run: DeployRun, r: DeployReport, diffs: NodeCheck[]): string {
  const out: string[] = [''];
  const hosts = run.nodes.map((n) => run.results.find((h) => h.name === n.name)).filter((h): h is HostResult => !!h);
  for (const c of diffs) for (const ch of c.changes) if (ch.diff) out.push(chalk.dim(`--- ${c.name}: ${ch.step}`), colourDiff(ch.diff));
  out.push(chalk.bold(`RECAP  ${displayPath(run.options.inventoryFile)}, ${hosts.length} node${hosts.length === 1 ? '' : 's'}, ${(r.durationMs / 1000).toFixed(1)} s`));
  out.push(
    table(
      hosts.map((h) => [
        h.name,
        h.address,
        STATUS_COLOUR[h.status](h.status),
        `ok=${h.ok}`,
        `changed=${h.changed}`,
        `failed=${h.failed}`,
        implLabel(run, h.name, r.hosts[h.name]?.impl),
        h.batch ? `batch ${h.batch}` : '',
        // Only a passed verify is shown here; a failed one is explained below the table.
        h.verified && !failed(h) ? `${h.verified.state}, /readyz ${h.verified.status} via ${run.loaded.inventory.lb.listen} from ${h.verified.backend ?? '?'}` : '',
      ]),
    ),
  );
  for (const h of hosts) {
    const i = run.impls.get(h.name);
    if (i?.why) out.push(chalk.yellow(`${h.name}: ${i.impl} (lb.impl auto): ${i.why}`));
  }
  const t = r.totals;
  out.push(`totals: ${t.changed} changed, ${t.ok} ok, ${t.failed} failed, ${t.unreachable} unreachable${t.skipped ? `, ${t.skipped} not reached` : ''}`);
  if (r.roll?.stoppedAfter) {
    out.push(chalk.red(`roll stopped after batch ${r.roll.stoppedAfter} of ${r.roll.batches.length}: ${r.roll.reason}`));
    const by = (state: ReturnType<typeof configState>) => hosts.filter((h) => configState(h) === state).map((h) => h.name);
    const [neu, old, unknown] = [by('new'), by('previous'), by('unknown')];
    out.push(`  running the new configuration: ${neu.join(', ') || 'none'}`);
    out.push(`  running the previous configuration: ${old.join(', ') || 'none'}`);
    if (unknown.length) out.push(chalk.red(`  unknown (could not restore): ${unknown.join(', ')}`));
    out.push('  fix the cause, then run the same deploy again: it picks up where the roll stopped');
  }
  for (const h of hosts.filter((x) => x.status === 'failed' || x.status === 'unreachable')) {
    out.push('', chalk.red(`${h.name} (${h.address}) ${h.status}:`));
    out.push(...(h.error ?? '').split('\n').map((l) => `  ${l}`));
    if (h.rollback) out.push(`  ${h.rollback.ok ? chalk.green('restored:') : chalk.red('NOT restored:')} ${h.rollback.detail}`);
    if (h.hint) out.push(`  ${chalk.yellow('fix:')} ${h.hint}`);
    const failedStep = h.steps.find((s) => s.status === 'failed');
    const node = run.nodes.find((n) => n.name === h.name)!;
    const hint = failedStep && playbookOf(run, node).raw.find((s) => s.name === failedStep.name)?.hint;
    if (hint) out.push(`  ${chalk.yellow('hint:')} ${hint}`);
    if (h.journal) out.push(`  last lines of the journal:`, ...h.journal.split('\n').map((l) => `    ${l}`));
  }
  return out.join('\n') + '\n';
}

/** nginx or kube-lb, `(auto)` when the inventory left the choice to k8s-ha, and a switch that did not happen. */
function implLabel(run: DeployRun, name: string, after?: NodeImpl): string {
  const i = after ?? run.impls.get(name);
  if (!i) return '';
  const auto = i.wanted === 'auto' ? ' (auto)' : '';
  if (after?.from && after.running !== after.impl) return `${after.running ?? 'unknown'} (switch to ${after.impl}${auto} not applied)`;
  if (after && !after.running) return `${i.impl}${auto} (state unknown)`;
  return `${i.impl}${auto}`;
}

function colourDiff(diff: string): string {
  return diff
    .split('\n')
    .map((l) => (l.startsWith('+') && !l.startsWith('+++') ? chalk.green(l) : l.startsWith('-') && !l.startsWith('---') ? chalk.red(l) : l))
    .join('\n');
}

function checkJson(run: DeployRun, checks: NodeCheck[]) {
  return {
    check: true,
    pending: checks.filter((c) => c.changes.length).length,
    nodes: Object.fromEntries([
      ...checks.map((c) => [c.name, { status: c.changes.length ? 'pending' : 'ok', service: c.service, changes: c.changes }]),
      ...run.results.map((r) => [r.name, { status: r.status, error: r.error }]),
    ]),
  };
}

function renderCheck(run: DeployRun, checks: NodeCheck[], withDiff: boolean): string {
  const out: string[] = ['', chalk.bold(`CHECK  ${displayPath(run.options.inventoryFile)}: nothing was changed on any node`)];
  for (const c of checks) {
    if (!c.changes.length) {
      out.push(`${chalk.green(c.name)}: up to date`);
      continue;
    }
    out.push(`${chalk.yellow(c.name)} (${implLabel(run, c.name)}): ${c.service === 'nothing' ? 'no restart or reload' : `would ${c.service}`}`);
    for (const ch of c.changes) {
      out.push(`  ${ch.step}: ${ch.summary}`);
      if (withDiff && ch.diff) out.push(...colourDiff(ch.diff).split('\n').map((l) => `    ${l}`));
    }
  }
  for (const r of run.results) out.push(`${chalk.red(r.name)}: ${r.status}: ${r.error?.split('\n')[0] ?? ''}`);
  const pending = checks.filter((c) => c.changes.length).length;
  out.push('', pending ? `${pending} node${pending === 1 ? '' : 's'} would change (exit ${ExitCode.pending})` : 'every node is up to date');
  return out.join('\n') + '\n';
}
