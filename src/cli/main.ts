/** The k8s-ha command line: parse, dispatch, and one catch that maps errors to exit codes. */
import { Command, CommanderError } from 'commander';
import { ExitCode, UsageError } from '../errors.js';
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
      return reportError(new UsageError(message, { hint: `see \`k8s-ha ${commandPath(argv)}--help\`` }));
    }
    return reportError(err);
  }
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
