/** The k8s-ha command line: parse, dispatch, and one catch that maps errors to exit codes. */
import { Command, CommanderError } from 'commander';
import { ExitCode, InternalError, K8sHaError, UsageError } from '../errors.js';
import { buildCommand } from './build.js';
import { deployCommand } from './deploy.js';
import { removeCommand } from './remove.js';
import fs from 'node:fs';
import path from 'node:path';
import { statusCommand } from './status.js';
import { reportError } from './ui.js';
import { JSON_SCHEMA_VERSION } from './flags.js';
import { isExecutable, packageFile, packageRoot } from '../util/paths.js';

/** The package's own version: package.json is the one place it is written. */
export const VERSION = (JSON.parse(fs.readFileSync(packageFile('package.json'), 'utf8')) as { version: string }).version;

/** The lab comes with a clone of the repository, not with an installed package (which leaves dist/lab out). */
const hasLab = () => !isExecutable() && fs.existsSync(path.join(packageRoot(), 'dist', 'lab', 'lab.js'));

function noLab(): Command {
  return new Command('lab')
    .description('the test lab (in a clone of the repository only)')
    .allowUnknownOption()
    .allowExcessArguments()
    .action(() => {
      throw new UsageError('the lab is not part of an installed k8s-ha: it runs from a clone of the repository (npm ci, then npm run demo)', { hint: 'clone the repository where Docker runs, and run k8s-ha lab from there' });
    });
}

export async function main(argv: string[]): Promise<number> {
  let exitCode: number = ExitCode.ok;
  const setExit = (code: number) => {
    exitCode = Math.max(exitCode, code);
  };
  const program = new Command('k8s-ha')
    .description('Make the Kubernetes apiserver highly available from every node: a node-local load balancer, built, rolled out and verified over SSH.')
    .version(VERSION)
    .showSuggestionAfterError(true)
    .exitOverride()
    .configureOutput({
      // Commander's own usage errors go through reportError so they look like ours.
      outputError: () => undefined,
    });
  program.addCommand(deployCommand(setExit));
  program.addCommand(statusCommand(setExit));
  program.addCommand(removeCommand(setExit));
  program.addCommand(buildCommand());
  program.addCommand(
    new Command('inventory').description('write an inventory from what you already have').addCommand(
      new Command('import')
        .description('read an Ansible inventory (INI or YAML; kubespray\'s groups kube_control_plane and kube_node) and print a k8s-ha inventory of the same hosts')
        .argument('<file>', 'the Ansible inventory (hosts.ini, hosts.yaml)')
        .option('-o, --out <file>', 'write it to this file (which must not exist) instead of stdout')
        .addHelpText('after', '\nExample:\n  k8s-ha inventory import inventory/mycluster/hosts.yaml -o k8s-ha.yaml && k8s-ha deploy --check -i k8s-ha.yaml\n')
        .action(async (file: string, o: { out?: string }) => {
          const { importInventory } = await import('./inventory.js');
          await importInventory(file, o.out);
        }),
    ),
  );
  program.addCommand(
    new Command('schema')
      .description("print the inventory's JSON Schema, for editors (yaml-language-server) and tools")
      .addHelpText('after', '\nExample:\n  k8s-ha schema > inventory.schema.json     # then, as the first line of the inventory:\n                                            # yaml-language-server: $schema=inventory.schema.json\n')
      .action(async () => {
        const { inventoryJsonSchema } = await import('../inventory/json-schema.js');
        process.stdout.write(JSON.stringify(inventoryJsonSchema(VERSION), null, 2) + '\n');
      }),
  );
  program.addCommand(hasLab() ? (await import('./lab.js')).labCommand(setExit) : noLab());
  for (const c of [program, ...program.commands, ...program.commands.flatMap((c) => c.commands)]) {
    c.exitOverride().configureOutput({ outputError: () => undefined });
  }

  try {
    await program.parseAsync(argv, { from: 'user' });
    return exitCode;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.exitCode === 0 || err.code === 'commander.helpDisplayed' || err.code === 'commander.version') return 0;
      if (err.code === 'commander.help') return 0;
      const message = err.message.replace(/^error: /, '');
      // A command that is not one: its name is no path to help.
      const where = err.code === 'commander.unknownCommand' ? '' : commandPath(argv);
      return failed(argv, new UsageError(message, { hint: `see \`k8s-ha ${where}--help\`` }));
    }
    return failed(argv, err);
  }
}

/**
 * The error on stderr, and, when --json was asked for, as JSON on stdout too: a run that fails
 * before its report (a bad inventory, a build that fails) still gives a script something to read.
 */
function failed(argv: string[], err: unknown): number {
  const code = reportError(err);
  const end = argv.indexOf('--');
  if ((end < 0 ? argv : argv.slice(0, end)).includes('--json')) {
    const known = err instanceof K8sHaError && !(err instanceof InternalError);
    const error = known ? { message: err.message, ...(err.hint ? { hint: err.hint } : {}) } : { message: `internal error: ${(err as Error)?.message ?? String(err)}` };
    process.stdout.write(JSON.stringify({ schemaVersion: JSON_SCHEMA_VERSION, ok: false, exitCode: code, error }) + '\n');
  }
  return code;
}

function commandPath(argv: string[]): string {
  const words = [];
  for (const a of argv) {
    if (a.startsWith('-')) break;
    words.push(a);
    if (words.length === 2) break;
  }
  return words.length ? words.join(' ') + ' ' : '';
}
