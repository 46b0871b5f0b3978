/** Parsers of flag values shared by the commands: a bad value is a usage error naming the flag. */
import { InvalidArgumentError, Option } from 'commander';

/** A whole number of at least 1 (`--concurrency`, `--probes`). */
export function positive(what: string) {
  return (v: string) => {
    if (!/^\d+$/.test(v) || Number(v) < 1) throw new InvalidArgumentError(`${what} must be a whole number of at least 1.`);
    return Number(v);
  };
}

/**
 * -i, and what every command that logs in to hosts takes alike: the inventory (or K8S_HA_INVENTORY,
 * for a shell that works on one cluster), and -u / --private-key, as `ssh -l` and `ssh -i` give them
 * (in place of the inventory's ssh.user and ssh.identityFile; a host's own ssh: still wins).
 */
export const inventoryOption = () => new Option('-i, --inventory <file>', 'inventory YAML').env('K8S_HA_INVENTORY').makeOptionMandatory();
export const userOption = () => new Option('-u, --user <name>', "log in as this user on every host (in place of the inventory's ssh.user)");
export const privateKeyOption = () => new Option('--private-key <file>', "log in with this private key (in place of the inventory's ssh.identityFile)");

export const verboseOption = () => new Option('-v, --verbose', 'say each SSH login (user, address, bastion, the host key checked) and each command run (its kind, size, exit and time) on stderr');

/** -v: SSH's trace on stderr, shown never obeyed (a host name may hold anything). */
export async function traceIf(verbose: boolean | undefined): Promise<void> {
  if (!verbose) return;
  const [{ SshConnection }, { printable }] = await Promise.all([import('../connect/ssh.js'), import('../util/printable.js')]);
  SshConnection.trace = (line) => process.stderr.write(`debug: ${printable(line)}\n`);
}

/**
 * The layout of every --json object (deploy, status, build, and a run that fails before its
 * report), raised when a field changes meaning or goes away; new fields do not raise it.
 */
export const JSON_SCHEMA_VERSION = 1;

/** Exit codes as every command's --help ends with them. */
export const EXIT_CODES = `
Exit codes:
  0    success
  1    anything else (a bug in k8s-ha says so)
  2    bad input: flags, inventory, playbook; said before any connection
  3    some hosts failed, were unreachable or locked (status: some node down)
  4    the nginx or kube-lb build failed: nothing was touched on any node
  5    deploy --check, remove --check: changes are pending
  6    status: nothing down, but some nodes could not be told
  7    status: the cluster's apiservers differ from the inventory's masters
  130  interrupted (SIGINT or SIGTERM)`;
