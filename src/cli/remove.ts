/**
 * `k8s-ha remove -i inventory.yaml`: take the node-local balancer off nodes (engine/remove.ts),
 * with progress on stderr and a recap (or one JSON object) on stdout.
 */
import { Command, Option } from 'commander';
import { ExitCode } from '../errors.js';
import { duration } from './deploy.js';
import { EXIT_CODES, inventoryOption, JSON_SCHEMA_VERSION, positive, privateKeyOption, traceIf, userOption, verboseOption } from './flags.js';
import type { RemoveEvent, RemoveReport } from '../engine/remove.js';
import type { HostResult } from '../engine/results.js';

interface RemoveFlags {
  inventory: string;
  limit?: string[];
  serial: string;
  repointTo?: string;
  repointTimeout: number;
  force?: boolean;
  vip?: boolean;
  check?: boolean;
  concurrency: number;
  waitLock: number;
  acceptNewHostKeys?: boolean;
  json?: boolean;
  user?: string;
  privateKey?: string;
  verbose?: boolean;
}

export function removeExitCode(r: RemoveReport): number {
  if (r.interrupted) return ExitCode.interrupted;
  if (!r.ok) return ExitCode.hosts;
  if (r.check && Object.values(r.hosts).some((h) => h.steps.some((s) => s.status === 'changed'))) return ExitCode.pending;
  return ExitCode.ok;
}

/** A progress line on stderr for each event worth a line. */
export function progressLine(e: RemoveEvent): string | undefined {
  if (e.type === 'start') return `${e.check ? 'checking' : 'removing the node-local balancer from'} ${e.nodes.length} node${e.nodes.length === 1 ? '' : 's'} (run ${e.runId})${e.warnings.map((w) => `\nwarning: ${w}`).join('')}`;
  if (e.type === 'batch') return `-- remove batch ${e.index}/${e.total}: ${e.nodes.join(', ')}`;
  if (e.type === 'host' && (e.phase === 'repointing' || e.phase === 'removing' || e.phase === 'waiting for the lock' || e.phase === 'recovering')) return `${e.name}: ${e.phase}${e.detail ? ` (${e.detail})` : ''}`;
  if (e.type === 'host-done') return `${e.result.name}: ${e.result.status}${e.result.error ? `: ${e.result.error.split('\n')[0]}` : ''}`;
  return undefined;
}

function hostLines(h: HostResult, check: boolean): string[] {
  const lines = [`${h.name} (${h.address}${h.via ? ` via ${h.via}` : ''}): ${check && h.status === 'changed' ? 'would change' : h.status}`];
  if (h.recovered) lines.push(`  found an unfinished run: ${h.recovered}`);
  for (const s of h.steps) lines.push(`  ${check && s.status === 'changed' ? `would ${s.name}` : s.name}: ${s.summary}`);
  if (h.status !== 'ok' && h.status !== 'changed' && h.error && !h.steps.some((s) => s.error === h.error)) lines.push(`  error: ${h.error}`);
  if (h.hint && h.status !== 'ok' && h.status !== 'changed') lines.push(`  hint: ${h.hint}`);
  return lines;
}

export function renderRemove(r: RemoveReport): string {
  const hosts = Object.values(r.hosts);
  const t = r.totals;
  const counts = (['changed', 'ok', 'failed', 'unreachable', 'locked', 'skipped'] as const).filter((k) => t[k]).map((k) => `${t[k]} ${k === 'changed' && r.check ? 'with changes pending' : k}`);
  const out = [...hosts.flatMap((h) => hostLines(h, r.check)), ''];
  if (r.stopped) out.push(`stopped: ${r.stopped}; the nodes after it were not touched`);
  out.push(`${r.check ? 'remove --check' : 'remove'}: ${hosts.length} node${hosts.length === 1 ? '' : 's'}: ${counts.join(', ') || 'none'} (${(r.durationMs / 1000).toFixed(1)} s)`);
  return out.join('\n') + '\n';
}

export function removeCommand(setExit: (code: number) => void): Command {
  return new Command('remove')
    .description(
      "take the node-local balancer off nodes: point their kubeconfigs back where they pointed before k8s-ha (or --repoint-to), check kubelet and kube-proxy connect there, " +
        'then stop the balancer and remove every file, unit, user, image and folder k8s-ha put there; in batches of --serial',
    )
    .addOption(inventoryOption())
    .addOption(userOption())
    .addOption(privateKeyOption())
    .addOption(verboseOption())
    .option('--check', 'show what would be repointed and removed on each node; changes nothing (exit 5 when something would be)')
    .option('--repoint-to <url>', 'point every kubeconfig that names the balancer here (https://ADDRESS:PORT), in place of where it pointed before k8s-ha')
    .addOption(new Option('--repoint-timeout <duration>', 'how long each restarted kubelet or kube-proxy has to run and connect to its new server').argParser(duration('--repoint-timeout', '10m', '1s')).default(30_000, '30s'))
    .option('--force', 'stop the balancer even while other processes are still connected through its port (they are named otherwise, and the node refused)')
    .option('--vip', "take the VIP layer off instead: keepalived and haproxy stopped and k8s-ha's files removed on the VIP hosts (vip.hosts, or every master once the inventory has no vip:), the holder last")
    .option('--serial <n|n%>', 'nodes per batch; a failed batch stops the run', '25%')
    .option('--limit <nodes>', 'only these nodes, comma-separated', (v) => v.split(',').map((s) => s.trim()).filter(Boolean))
    .option('--concurrency <n>', 'at most this many SSH sessions at once', positive('--concurrency'), 64)
    .addOption(new Option('--wait-lock <duration>', 'wait this long for nodes another k8s-ha run holds, instead of reporting them locked').argParser(duration('--wait-lock', '24h')).default(0, '0s: do not wait'))
    .option('--accept-new-host-keys', 'trust host keys never seen before and record them (never changed ones)')
    .option('--json', 'print one JSON object on stdout; progress lines go to stderr')
    .addHelpText(
      'after',
      `
Examples:
  k8s-ha remove -i inventory.yaml --limit node-7 --check    what would be repointed and removed on node-7
  k8s-ha remove -i inventory.yaml --limit node-7            node-7 back to the apiserver it used before
  k8s-ha remove -i inventory.yaml --vip --check             what taking the VIP off its hosts would do
  k8s-ha remove -i inventory.yaml --repoint-to https://10.0.0.100:6443 --serial 2
                                                            every node onto your own load balancer, two at a time
${EXIT_CODES}`,
    )
    .action(async (o: RemoveFlags) => {
      await traceIf(o.verbose);
      const [{ runRemove }, { parseSerial }] = await Promise.all([import('../engine/remove.js'), import('../engine/roll.js')]);
      const control = new AbortController();
      let signals = 0;
      const onSignal = (sig: NodeJS.Signals) => {
        signals++;
        if (signals === 1) {
          process.stderr.write(`${sig}: finishing the nodes under way (each node's script runs to its end); no other node is started. A second signal leaves now: rerun the same remove to finish.\n`);
          control.abort(sig);
          return;
        }
        process.stderr.write(`${sig}: leaving now; the nodes under way finish on their own: rerun the same remove to finish\n`);
        process.exit(ExitCode.interrupted);
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      let report: RemoveReport;
      try {
        report = await runRemove(
          {
            inventoryFile: o.inventory,
            limit: o.limit,
            concurrency: o.concurrency,
            acceptNewHostKeys: !!o.acceptNewHostKeys,
            check: !!o.check,
            serial: parseSerial(o.serial),
            repointTo: o.repointTo,
            repointTimeoutMs: o.repointTimeout,
            force: !!o.force,
            vip: !!o.vip,
            waitLockMs: o.waitLock,
            sshUser: o.user,
            identityFile: o.privateKey,
          },
          (e) => {
            const line = progressLine(e);
            if (line) process.stderr.write(line + '\n');
          },
          { signal: control.signal },
        );
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
      if (o.json) process.stdout.write(JSON.stringify({ schemaVersion: JSON_SCHEMA_VERSION, ...report }) + '\n');
      else process.stdout.write(renderRemove(report));
      setExit(removeExitCode(report));
    });
}
