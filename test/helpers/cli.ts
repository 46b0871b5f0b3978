import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = path.join(ROOT, 'bin', 'k8s-ha.js');

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run the k8s-ha command line exactly as a user would (built CLI, no TTY). */
export function k8sha(args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<CliResult> {
  return runCli(process.execPath, [BIN, ...args], options);
}

/** Any copy of the command line (an installed package's, the single executable), as a user would run it: no TTY, no colour. */
export function runCli(command: string, args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd ?? ROOT,
      env: { ...process.env, NO_COLOR: '1', ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b) => (stdout += b));
    child.stderr.on('data', (b) => (stderr += b));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

export interface RunningCli {
  /** Resolves once stderr (progress) or stdout has printed a line matching `re`. */
  waitFor(re: RegExp, timeoutMs?: number): Promise<void>;
  signal(sig: NodeJS.Signals): void;
  done: Promise<CliResult>;
  output(): { stdout: string; stderr: string };
}

/** Start the CLI and keep hold of it, to send it signals as a user at a terminal would. */
export function startK8sha(args: string[], options: { env?: NodeJS.ProcessEnv } = {}): RunningCli {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...process.env, NO_COLOR: '1', ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  const listeners = new Set<() => void>();
  const changed = () => listeners.forEach((l) => l());
  child.stdout.on('data', (b) => ((stdout += b), changed()));
  child.stderr.on('data', (b) => ((stderr += b), changed()));
  const done = new Promise<CliResult>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code: code ?? (signal ? 128 + (signal === 'SIGKILL' ? 9 : 15) : null), stdout, stderr }));
  });
  return {
    waitFor: (re, timeoutMs = 60_000) =>
      new Promise((resolve, reject) => {
        const check = () => {
          if (re.test(stderr) || re.test(stdout)) {
            listeners.delete(check);
            clearTimeout(timer);
            resolve();
          }
        };
        const timer = setTimeout(() => {
          listeners.delete(check);
          reject(new Error(`no line matching ${re} within ${timeoutMs} ms:\n${stderr}\n${stdout}`));
        }, timeoutMs);
        listeners.add(check);
        void done.then(() => {
          if (listeners.has(check)) {
            listeners.delete(check);
            clearTimeout(timer);
            check();
            reject(new Error(`the CLI ended before printing ${re}:\n${stderr}\n${stdout}`));
          }
        });
        check();
      }),
    signal: (sig) => child.kill(sig),
    done,
    output: () => ({ stdout, stderr }),
  };
}
