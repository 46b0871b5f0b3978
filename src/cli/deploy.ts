/**
 * `k8s-ha deploy -i inventory.yaml` (alias `reconfigure`): parse the flags, run the engine with a
 * renderer chosen for where the output goes, handle Ctrl-C, and map the report to an exit code.
 * The engine is loaded only when the command runs, so `k8s-ha --help` stays quick.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { ExitCode } from '../errors.js';
import { durationMs, durationProblem } from '../util/duration.js';
import { EXIT_CODES, inventoryOption, JSON_SCHEMA_VERSION, positive, privateKeyOption, traceIf, userOption, verboseOption } from './flags.js';
import type { DeployReport } from '../engine/run.js';

function percent(v: string): number {
  if (!/^\d+$/.test(v) || Number(v) > 100) throw new InvalidArgumentError('--max-fail-percent must be a whole number from 0 to 100.');
  return Number(v);
}

export function duration(flag: string, max: string, min?: string) {
  const maxMs = durationMs(max);
  const minMs = min ? durationMs(min) : 0;
  return (v: string) => {
    const problem = durationProblem(v);
    if (problem) throw new InvalidArgumentError(`${flag} ${problem}.`);
    const ms = durationMs(v);
    if (ms > maxMs) throw new InvalidArgumentError(`${flag} must be at most ${max}.`);
    if (ms < minMs) throw new InvalidArgumentError(`${flag} must be at least ${min}.`);
    return ms;
  };
}

interface DeployFlags {
  inventory: string;
  playbook?: string;
  limit?: string[];
  concurrency: number;
  acceptNewHostKeys?: boolean;
  askPass?: boolean;
  json?: boolean;
  check?: boolean;
  diff?: boolean;
  serial: string;
  maxFailPercent: number;
  repointKubeconfigs?: boolean;
  verifyTimeout: number;
  repointTimeout: number;
  waitLock: number;
  mastersFromCluster?: boolean;
  kubeconfig?: string;
  minMasters?: number;
  user?: string;
  privateKey?: string;
  verbose?: boolean;
}

/** Exit code of a deploy report: interrupted 130, something failed or locked 3, --check pending 5. */
export function exitCodeOf(r: DeployReport): number {
  if (r.interrupted) return ExitCode.interrupted;
  if (!r.ok) return ExitCode.hosts;
  if (r.check && [...Object.values(r.hosts), ...Object.values(r.vip?.hosts ?? {})].some((h) => h.check?.changes.length)) return ExitCode.pending;
  return ExitCode.ok;
}

/** --ask-pass: the keys every node (and bastion) would use, unlocked before the run draws anything. */
export async function askPassphrases(options: { inventoryFile: string; limit?: string[]; playbookFile?: string; acceptNewHostKeys?: boolean; sshUser?: string; identityFile?: string }): Promise<void> {
  const [{ loadSetup }, { unlockKeys }] = await Promise.all([import('../engine/deploy.js'), import('./ask-pass.js')]);
  const setup = await loadSetup({ concurrency: 1, acceptNewHostKeys: false, ...options });
  await unlockKeys(setup.targets.values());
}

export function deployCommand(setExit: (code: number) => void): Command {
  return new Command('deploy')
    .alias('reconfigure')
    .description(
      'build the node-local balancer (nginx with the stream module, or kube-lb as one executable: lb.impl), roll it out to every node, ' +
        'verify each end to end; nodes whose running balancer would be restarted, reloaded or replaced go in batches (--serial)',
    )
    .addOption(inventoryOption())
    .addOption(userOption())
    .addOption(privateKeyOption())
    .addOption(verboseOption())
    .option('--check', 'show what would change on each node; builds, installs and writes nothing anywhere (exit 5 when changes are pending)')
    .option('--diff', 'show unified diffs of the config and unit files that change')
    .option('--serial <n|n%>', 'nodes per batch when a running balancer would be restarted, reloaded or replaced (and for --repoint-kubeconfigs)', '25%')
    .option('--max-fail-percent <p>', 'failed nodes (percent of those rolled) a roll tolerates before it stops', percent, 0)
    .option('--repoint-kubeconfigs', "once a node's balancer is verified, point its kubelet and kube-proxy kubeconfigs at it (original kept), restart them in batches of --serial and check they connect")
    .option('--limit <nodes>', 'only these nodes, comma-separated', (v) => v.split(',').map((s) => s.trim()).filter(Boolean))
    .option('--concurrency <n>', 'at most this many SSH sessions, uploads and verify probes at once', positive('--concurrency'), 64)
    .addOption(new Option('--verify-timeout <duration>', 'how long verify waits for an apiserver to answer through the local port, per node').argParser(duration('--verify-timeout', '10m')).default(15_000, '15s'))
    .addOption(new Option('--repoint-timeout <duration>', 'with --repoint-kubeconfigs: how long each restarted kubelet or kube-proxy has to run and connect through the local balancer').argParser(duration('--repoint-timeout', '10m', '1s')).default(30_000, '30s'))
    .addOption(new Option('--wait-lock <duration>', 'wait this long for nodes another k8s-ha run holds, instead of reporting them locked').argParser(duration('--wait-lock', '24h')).default(0, '0s: do not wait'))
    .option('--masters-from-cluster', "take the masters from the cluster (its kubernetes Service's endpoints) instead of the inventory, show the difference, and roll the nodes to them; unsafe lists are refused (docs/control-plane.md)")
    .option('--kubeconfig <file>', "with --masters-from-cluster: ask the cluster with this kubeconfig's credentials instead of the inventory's cluster.kubeconfig")
    .option('--min-masters <n>', 'with --masters-from-cluster: the fewest apiservers the cluster may name (default: a majority of the inventory\'s masters)', positive('--min-masters'))
    .option('--accept-new-host-keys', 'trust host keys never seen before and record them (never changed ones)')
    .option('--ask-pass', 'ask on the terminal for the passphrase of protected keys ssh-agent does not hold (asked once per key, kept in memory only)')
    .option('--playbook <file>', 'playbook YAML replacing the built-in one of the same name (kube-nginx or kube-lb)')
    .option('--json', 'print one JSON object on stdout; progress lines go to stderr')
    .addHelpText(
      'after',
      `
Examples:
  k8s-ha deploy -i inventory.yaml                      build, roll out and verify on every node
  k8s-ha deploy -i inventory.yaml --check --diff       what would change, with diffs; touches nothing
  k8s-ha deploy -i inventory.yaml --limit node-1       one node only
  k8s-ha deploy -i inventory.yaml --serial 1 --repoint-kubeconfigs
                                                       one node at a time, then kubelet and kube-proxy onto it
  K8S_HA_INVENTORY=prod.yaml k8s-ha deploy -u ops --private-key ~/.ssh/ops_ed25519
${EXIT_CODES}`,
    )
    .action(async (o: DeployFlags) => {
      await traceIf(o.verbose);
      const [{ runDeploy }, { parseSerial }, render] = await Promise.all([import('../engine/run.js'), import('../engine/roll.js'), import('./deploy-render.js')]);
      const serial = parseSerial(o.serial);
      const options = {
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
        verifyTimeoutMs: o.verifyTimeout,
        repointTimeoutMs: o.repointTimeout,
        waitLockMs: o.waitLock,
        mastersFromCluster: !!o.mastersFromCluster,
        kubeconfig: o.kubeconfig,
        minMasters: o.minMasters,
        sshUser: o.user,
        identityFile: o.privateKey,
      };
      if (o.askPass) await askPassphrases(options);
      const renderer = await render.chooseRenderer(!!o.json);
      const control = new AbortController();
      let signals = 0;
      const onSignal = (sig: NodeJS.Signals) => {
        signals++;
        if (signals === 1) {
          control.abort(sig);
          return;
        }
        // Second signal: leave now. The nodes keep their journals; the same deploy puts them right.
        void renderer.stop();
        process.stderr.write(render.abortNowText(renderer.tracker, sig));
        process.exit(ExitCode.interrupted);
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      let report: DeployReport;
      try {
        report = await runDeploy(options, renderer.emit, { signal: control.signal });
      } finally {
        await renderer.stop();
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
      if (o.json) process.stdout.write(JSON.stringify({ schemaVersion: JSON_SCHEMA_VERSION, ...report }) + '\n');
      else process.stdout.write(report.check ? render.renderCheck(report, !!o.diff) : render.renderRecap(report, !!o.diff));
      setExit(exitCodeOf(report));
    });
}
