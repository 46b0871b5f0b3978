// What the benchmark scripts share: run the real CLI and time it, and print a table.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { SshConnection } from '../dist/connect/ssh.js';
import { mapLimit } from '../dist/util/pool.js';

export const bin = new URL('../bin/k8s-ha.js', import.meta.url).pathname;

/** Run `k8s-ha ARGS`; throws with its output when it fails. Returns wall time and stdout (parsed with json). */
export function cli(args, { json = false } = {}) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' }, maxBuffer: 64 << 20 });
  const wallMs = Math.round(Number(process.hrtime.bigint() - t0) / 1e6);
  if (r.status !== 0) {
    process.stderr.write(r.stdout + r.stderr);
    throw new Error(`k8s-ha ${args.join(' ')} exited ${r.status}`);
  }
  return { wallMs, out: json ? JSON.parse(r.stdout) : r.stdout };
}

/**
 * `k8s-ha ARGS` without blocking: a bench that reads a client's output (or sends requests) while a fault
 * is applied must not stall, or everything of that time would be stamped when the call returns.
 * Resolves with stdout and the exit code; rejects on an exit other than 0 or `ok`'s codes.
 */
export function cliAsync(args, { ok = [0] } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], { env: { ...process.env, NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('close', (code) => (ok.includes(code) ? resolve({ code, out }) : reject(new Error(`k8s-ha ${args.join(' ')} exited ${code}:\n${out}${err}`))));
  });
}

/** Best effort, never throws: for cleanup in `finally`. */
/**
 * The folder for a benchmark's lab: `given` (made by lab up if absent, kept afterwards), else a fresh
 * name under the system's temporary folder, not yet made (lab up makes it; labDown removes it).
 */
export function labDir(bench, given) {
  if (given) return path.resolve(given);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `k8s-ha-bench-${bench}-`));
  fs.rmdirSync(dir);
  return dir;
}

export function labDown(dir) {
  spawnSync(process.execPath, [bin, 'lab', 'down', '--dir', dir], { stdio: 'ignore' });
  // The bench's own files beside the lab's (its inventory variants, playbooks): the folder goes too.
  fs.rmSync(dir, { recursive: true, force: true });
}

/**
 * The options of a bench that applies faults: --rounds, --faults (some of `all`, all by default),
 * --lag MS (the `lagging` fault's cache lag) and --keep (leave the lab up). Throws on a fault it
 * does not know or a lag that is not whole milliseconds.
 */
export function faultBenchArgs(all, { rounds }) {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string', default: String(rounds) },
      faults: { type: 'string', default: all.join(',') },
      lag: { type: 'string', default: '2000' },
      keep: { type: 'boolean', default: false },
    },
  });
  const faults = values.faults.split(',').map((f) => f.trim());
  for (const f of faults) if (!all.includes(f)) throw new Error(`--faults: no fault "${f}"; use some of ${all.join(', ')}`);
  if (!/^\d{1,6}$/.test(values.lag)) throw new Error(`--lag: whole milliseconds, got "${values.lag}"`);
  return { values, faults };
}

/** Rows of cells; the first column left-aligned, the others right-aligned. */
export function printTable(rows) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i] ?? '').length)));
  for (const r of rows) console.log(r.map((c, i) => (i === 0 ? String(c).padEnd(widths[i]) : String(c ?? '').padStart(widths[i]))).join('  '));
}

/** CPU busy fraction over `ms`, from /proc/stat (the load average counts sleeping container processes here). */
export async function busy(ms) {
  const read = () => fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].split(/\s+/).slice(1).map(Number);
  const a = read();
  await new Promise((r) => setTimeout(r, ms));
  const d = read().map((x, i) => x - a[i]);
  const total = d.reduce((x, y) => x + y, 0);
  return total ? 1 - (d[3] + d[4]) / total : 0;
}

/** Wait (up to 60 s) until the CPUs are at least 80% idle over a second; returns the time waited. */
export async function settle() {
  const t = performance.now();
  while ((await busy(1000)) > 0.2 && performance.now() - t < 60_000);
  return Math.round(performance.now() - t);
}

/**
 * The floor a deploy is compared with: every node of `setup` logged in to over SSH, running `true`,
 * at most `concurrency` at once; the best of `runs`. Returns the best and every run's time, in ms.
 */
export async function sshFloor(setup, concurrency, runs = 3) {
  const times = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await mapLimit(setup.nodes, concurrency, async (n) => {
      const c = await SshConnection.open(setup.targets.get(n.name));
      await c.exec('true');
      c.close();
    });
    times.push(Math.round(performance.now() - t0));
  }
  return { ms: Math.min(...times), runsMs: times };
}
