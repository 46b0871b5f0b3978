/** The k8s-ha command line: parse, dispatch, and one catch that maps errors to exit codes. */
import { Command, CommanderError } from 'commander';
import { ExitCode, InternalError, K8sHaError, UsageError } from '../errors.js';
import { buildCommand } from './build.js';
import { deployCommand } from './deploy.js';
import { labCommand } from './lab.js';
import { statusCommand } from './status.js';
import { reportError } from './ui.js';

export const VERSION = '0.1.0';

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
  program.addCommand(buildCommand());
  program.addCommand(labCommand(setExit));
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
    process.stdout.write(JSON.stringify({ ok: false, exitCode: code, error }) + '\n');
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
