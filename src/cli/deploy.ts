/** `k8s-ha deploy -i inventory.yaml`: parse, call the engine, render progress and the recap. */
import chalk from 'chalk';
import { Command, InvalidArgumentError } from 'commander';
import { Listr, ListrLogger, PRESET_TIMER, ProcessOutput } from 'listr2';
import { ExitCode } from '../errors.js';
import { buildArtifacts, closeAll, deployNode, prepareDeploy, report, type DeployReport, type DeployRun } from '../engine/deploy.js';
import type { HostResult } from '../engine/results.js';
import { mapLimit } from '../util/pool.js';
import { displayPath } from '../util/paths.js';
import { table } from './ui.js';

function positive(what: string) {
  return (v: string) => {
    if (!/^\d+$/.test(v) || Number(v) < 1) throw new InvalidArgumentError(`${what} must be a whole number of at least 1.`);
    return Number(v);
  };
}

export function deployCommand(setExit: (code: number) => void): Command {
  return new Command('deploy')
    .description('build nginx with the stream module, roll it out to every node in parallel, and verify each end to end')
    .requiredOption('-i, --inventory <file>', 'inventory YAML')
    .option('--playbook <file>', 'playbook YAML (default: playbooks/kube-nginx.yaml)')
    .option('--limit <nodes>', 'only these nodes, comma-separated', (v) => v.split(',').map((s) => s.trim()).filter(Boolean))
    .option('--concurrency <n>', 'nodes worked on at once', positive('--concurrency'), 64)
    .option('--accept-new-host-keys', 'trust host keys never seen before and record them (never changed ones)')
    .option('--json', 'print one JSON object on stdout; progress goes to stderr')
    .action(async (o: { inventory: string; playbook?: string; limit?: string[]; concurrency: number; acceptNewHostKeys?: boolean; json?: boolean }) => {
      const run = await prepareDeploy({
        inventoryFile: o.inventory,
        playbookFile: o.playbook,
        limit: o.limit,
        concurrency: o.concurrency,
        acceptNewHostKeys: !!o.acceptNewHostKeys,
      });
      for (const w of run.loaded.warnings) process.stderr.write(`${chalk.yellow('warning:')} ${w}\n`);
      try {
        await runDeploy(run, !!o.json);
      } finally {
        closeAll(run);
      }
      const r = report(run);
      if (o.json) process.stdout.write(JSON.stringify(r) + '\n');
      else process.stdout.write(renderRecap(run, r));
      if (!r.ok) setExit(ExitCode.hosts);
    });
}

async function runDeploy(run: DeployRun, json: boolean): Promise<void> {
  const stream = json ? process.stderr : process.stdout;
  const live = Boolean(stream.isTTY) && !process.env.CI && process.env.TERM !== 'dumb';
  const logger = new ListrLogger({ processOutput: new ProcessOutput(stream, process.stderr), useIcons: live });
  const options = {
    renderer: (live ? 'default' : 'simple') as 'default',
    fallbackRenderer: 'simple' as const,
    rendererOptions: { logger, timer: PRESET_TIMER, collapseSubtasks: false } as never,
    fallbackRendererOptions: { logger, timer: PRESET_TIMER } as never,
  };
  const inv = run.loaded.inventory;
  const list = new Listr(
    [
      {
        title: `Build nginx ${inv.nginx.version} on ${inv.build.host}`,
        task: async (_: unknown, task) => {
          task.title = await buildArtifacts(run, (line) => (task.output = line));
        },
      },
      {
        title: `Deploy to ${run.nodes.length} node${run.nodes.length === 1 ? '' : 's'} (${Math.min(run.options.concurrency, run.nodes.length)} at a time)`,
        task: async (_: unknown, task) => {
          // Hosts run through mapLimit so --concurrency holds; each host is its own line.
          return task.newListr(
            run.nodes.map((node) => ({
              title: node.name,
              task: async (_c: unknown, t) => {
                await gate(run, async () => {
                  const r = await deployNode(run, node, (line) => (t.output = line));
                  t.title = hostLine(r);
                  if (r.status === 'failed' || r.status === 'unreachable') throw new Error(hostLine(r));
                });
              },
            })),
            { concurrent: true, exitOnError: false },
          );
        },
      },
    ],
    { ...options, exitOnError: true },
  );
  await list.run();
}

/** At most --concurrency hosts in flight, whatever listr does. */
const gates = new WeakMap<DeployRun, { active: number; queue: (() => void)[] }>();
async function gate(run: DeployRun, fn: () => Promise<void>): Promise<void> {
  let g = gates.get(run);
  if (!g) gates.set(run, (g = { active: 0, queue: [] }));
  const gg = g;
  if (gg.active >= run.options.concurrency) await new Promise<void>((r) => gg.queue.push(r));
  gg.active++;
  try {
    await fn();
  } finally {
    gg.active--;
    gg.queue.shift()?.();
  }
}
void mapLimit;

function hostLine(r: HostResult): string {
  const counts = `ok=${r.ok} changed=${r.changed} failed=${r.failed}`;
  if (r.status === 'unreachable') return `${r.name}: unreachable: ${r.error?.split('\n')[0] ?? ''}`;
  if (r.status === 'failed') return `${r.name}: ${counts}: ${r.error?.split('\n')[0] ?? 'failed'}`;
  return `${r.name}: ${counts}${r.verified ? `, verified through ${r.verified.backend ?? 'an apiserver'}` : ''}`;
}

const STATUS_COLOUR = { ok: chalk.green, changed: chalk.yellow, failed: chalk.red, unreachable: chalk.red } as const;

export function renderRecap(run: DeployRun, r: DeployReport): string {
  const out: string[] = [''];
  const hosts = run.nodes.map((n) => run.results.find((h) => h.name === n.name)).filter((h): h is HostResult => !!h);
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
        h.verified ? `${h.verified.state}, /readyz ${h.verified.status} via 127.0.0.1 from ${h.verified.backend ?? '?'}` : '',
      ]),
    ),
  );
  const t = r.totals;
  out.push(`totals: ${t.changed} changed, ${t.ok} ok, ${t.failed} failed, ${t.unreachable} unreachable`);
  for (const h of hosts.filter((x) => x.status === 'failed' || x.status === 'unreachable')) {
    out.push('', chalk.red(`${h.name} (${h.address}) ${h.status}:`));
    out.push(...(h.error ?? '').split('\n').map((l) => `  ${l}`));
    if (h.hint) out.push(`  ${chalk.yellow('fix:')} ${h.hint}`);
    const failedStep = h.steps.find((s) => s.status === 'failed');
    const hint = failedStep && run.playbook.raw.find((s) => s.name === failedStep.name)?.hint;
    if (hint) out.push(`  ${chalk.yellow('hint:')} ${hint}`);
    if (h.journal) out.push(`  last lines of the journal:`, ...h.journal.split('\n').map((l) => `    ${l}`));
  }
  return out.join('\n') + '\n';
}
