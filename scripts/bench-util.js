// What the benchmark scripts share: run the real CLI and time it, and print a table.
import { spawnSync } from 'node:child_process';

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

/** Best effort, never throws: for cleanup in `finally`. */
export function labDown(dir) {
  spawnSync(process.execPath, [bin, 'lab', 'down', '--dir', dir], { stdio: 'ignore' });
}

/** Rows of cells; the first column left-aligned, the others right-aligned. */
export function printTable(rows) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i] ?? '').length)));
  for (const r of rows) console.log(r.map((c, i) => (i === 0 ? String(c).padEnd(widths[i]) : String(c ?? '').padStart(widths[i]))).join('  '));
}
