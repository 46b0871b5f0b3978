import { spawn } from 'node:child_process';
import { CommandError } from '../errors.js';
import { quote, shellCommand } from './quote.js';

export interface ExecResult {
  stdout: string;
  stderr: string;
  code: number | null;
  signal: string | null;
}

export interface ExecOptions {
  /** Data written to the child's standard input, then closed. */
  input?: string | Buffer;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Kill the child after this many milliseconds. */
  timeoutMs?: number;
  /** Called with each chunk of stdout/stderr as it arrives (progress). */
  onOutput?: (chunk: string) => void;
}

/**
 * Process groups started with a deadline (detached: a terminal's Ctrl-C no longer reaches them):
 * killed on the way out, however the process leaves, so no make runs on after a second Ctrl-C.
 */
const groups = new Set<number>();
let groupsHooked = false;
function trackGroup(pid: number): void {
  if (!groupsHooked) {
    groupsHooked = true;
    process.on('exit', () => {
      for (const g of groups) {
        try {
          process.kill(-g, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    });
  }
  groups.add(pid);
}

/** Run a program on this machine (no shell) and collect its output. Never throws on a non-zero exit. */
export function run(file: string, args: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
      // With a deadline, a group of its own: what the child started (make, a shell's sleep) dies with it.
      detached: options.timeoutMs !== undefined,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timer: NodeJS.Timeout | undefined;
    if (options.timeoutMs !== undefined && child.pid !== undefined) trackGroup(child.pid);
    if (options.timeoutMs) {
      timer = setTimeout(() => {
        try {
          process.kill(-child.pid!, 'SIGKILL');
        } catch {
          child.kill('SIGKILL');
        }
      }, options.timeoutMs);
    }
    child.stdout.on('data', (b: Buffer) => {
      out.push(b);
      options.onOutput?.(b.toString());
    });
    child.stderr.on('data', (b: Buffer) => {
      err.push(b);
      options.onOutput?.(b.toString());
    });
    child.on('error', (e) => {
      if (timer) clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      if (child.pid !== undefined) groups.delete(child.pid);
      resolve({
        stdout: Buffer.concat(out).toString(),
        stderr: Buffer.concat(err).toString(),
        code,
        signal,
      });
    });
    child.stdin.on('error', () => {
      /* the child may exit before reading its input; its exit code tells the story */
    });
    child.stdin.end(options.input ?? '');
  });
}

/** Run a program and return its stdout; a non-zero exit throws a CommandError naming the command. */
export async function runOk(
  file: string,
  args: readonly string[],
  options: ExecOptions & { step?: string; hint?: string } = {},
): Promise<string> {
  const r = await run(file, args, options);
  if (r.code !== 0) {
    throw new CommandError('this machine', shellCommand([file, ...args]), r.code, r.signal, r.stderr || r.stdout, {
      step: options.step,
      hint: options.hint,
    });
  }
  return r.stdout;
}

/** True when `file` can be found on PATH. */
export async function onPath(file: string): Promise<boolean> {
  try {
    const r = await run("sh", ["-c", `command -v ${quote(file)}`]);
    return r.code === 0;
  } catch {
    return false;
  }
}
