/** How k8s-ha talks to a person: task lists, colours, and errors. */
import { colour } from './colour.js';
import { InternalError, K8sHaError } from '../errors.js';
import { printable } from '../util/printable.js';
import type { Step } from '../lab/lab.js';


export interface OutputMode {
  /** Machine output on stdout; everything for people goes to stderr. */
  json: boolean;
}

/** listr2 options: live in a terminal, plain lines in CI logs; on stderr when stdout carries JSON. */
async function listrOptions(json: boolean) {
  const { ListrLogger, PRESET_TIMER, ProcessOutput } = await import('listr2');
  const stream = json ? process.stderr : process.stdout;
  const live = Boolean(stream.isTTY) && !process.env.CI && process.env.TERM !== 'dumb';
  const logger = new ListrLogger({ processOutput: new ProcessOutput(stream, process.stderr), useIcons: live });
  return {
    renderer: (live ? 'default' : 'simple') as 'default',
    fallbackRenderer: 'simple' as const,
    rendererOptions: { logger, timer: PRESET_TIMER, collapseSubtasks: false, collapseErrors: false, showErrorMessage: true } as never,
    fallbackRendererOptions: { logger, timer: PRESET_TIMER } as never,
  };
}

/** Run steps as a listr2 task list (loaded only when a command runs one). */
export async function runSteps<C>(steps: Step<C>[], ctx: C, mode: OutputMode): Promise<C> {
  const { Listr } = await import('listr2');
  const list = new Listr<C>(
    steps.map((s) => ({
      title: s.title,
      task: async (c: C, task) => {
        const result = await s.run(c, (line) => {
          task.output = line;
        });
        if (result) task.title = `${s.title}: ${result}`;
      },
    })),
    { ctx, exitOnError: true, ...(await listrOptions(mode.json)) },
  );
  return list.run();
}

/** Print an error the way every k8s-ha command does; returns the exit code. */
export function reportError(err: unknown): number {
  if (err instanceof K8sHaError && !(err instanceof InternalError)) {
    // Messages quote hosts and files (stderr, a hostile value in the inventory): shown, never obeyed by the terminal.
    process.stderr.write(`${colour.red('k8s-ha: error:')} ${printable(err.message)}\n`);
    if (err.hint) process.stderr.write(`${colour.yellow('  fix:')} ${printable(err.hint)}\n`);
    return err.exitCode;
  }
  const e = err as Error;
  process.stderr.write(`${colour.red('k8s-ha: internal error:')} ${e?.stack ?? String(err)}\n`);
  process.stderr.write('  this is a bug in k8s-ha; please report it with the output above\n');
  return 1;
}

export function table(rows: string[][]): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, visible(cell).length)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell + ' '.repeat(widths[i]! - visible(cell).length))).join('  ').trimEnd()).join('\n');
}

function visible(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/\u001b\[[0-9;]*m/g, '');
}
