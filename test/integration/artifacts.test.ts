/**
 * What k8s-ha builds is the same wherever it is built: `k8s-ha build` run by three controllers that
 * share nothing (their own cache, working folder, user, and Node.js version) gives one kube-lb, byte
 * for byte, compiled onto the Bun the package pins; and kube-lb for the other CPU architecture too,
 * onto the pinned Bun package for it, downloaded and checked against the lock's sha512. No lab host
 * is touched (the build needs none).
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCa } from '../../src/lab/pki.js';
import { ROOT } from '../helpers/cli.js';

const exec = promisify(execFile);
const NOBODY = 65534;
let dir: string;
let inventory: string;
/** The same, with build.architectures naming both. */
let both: string;

interface Built {
  ok: boolean;
  artifacts: { kind: string; arch: string | null; path: string | null; sha256: string }[];
}

/** `k8s-ha build --json` as a controller: a command prefix (another user, another Node.js), its own cache and folder. */
async function build(prefix: string[], cache: string, cwd: string, inv = inventory): Promise<Built> {
  const [cmd, ...args] = [...prefix, 'env', `K8S_HA_CACHE_DIR=${cache}`, `HOME=${cwd}`, 'node', path.join(ROOT, 'bin', 'k8s-ha.js'), 'build', '-i', inv, '--json'];
  const r = await exec(cmd!, args, { cwd, maxBuffer: 1 << 24, timeout: 170_000 });
  return JSON.parse(r.stdout) as Built;
}

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-artifacts-'));
  // Readable by the second controller's user; each controller's own folders are its own, 0700.
  fs.chmodSync(dir, 0o755);
  fs.writeFileSync(path.join(dir, 'ca.crt'), (await createCa('artifacts test CA')).cert);
  inventory = path.join(dir, 'inventory.yaml');
  const lines = ['masters:', '  - {name: master-1, address: 192.0.2.10}', 'nodes:', '  - {name: node-1, address: 192.0.2.20}', 'lb: {impl: kube-lb}', `tls: {caFile: ${path.join(dir, 'ca.crt')}}`];
  fs.writeFileSync(inventory, [...lines, ''].join('\n'));
  both = path.join(dir, 'inventory-both.yaml');
  fs.writeFileSync(both, [...lines, 'build: {architectures: [x86_64, aarch64]}', ''].join('\n'));
  for (const home of ['a', 'b', 'c']) fs.mkdirSync(path.join(dir, home), { mode: 0o700 });
  fs.chownSync(path.join(dir, 'b'), NOBODY, NOBODY);
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('k8s-ha build', () => {
  it('gives the same kube-lb, byte for byte, to controllers with other folders, caches, users and Node.js versions', async () => {
    const a = await build([], path.join(dir, 'a', 'cache'), path.join(dir, 'a'), both);
    const b = await build(['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups'], path.join(dir, 'b', 'cache'), path.join(dir, 'b'));
    // Node.js 22 from the npm registry (this machine's is another major version): what runs the controller does not matter.
    const c = await build(['npm', 'exec', '--yes', '--package=node@22', '--'], path.join(dir, 'c', 'cache'), path.join(dir, 'c'));
    const here = process.arch === 'arm64' ? 'aarch64' : 'x86_64';
    const kubeLb = (x: Built, arch = here) => x.artifacts.find((y) => y.kind === 'kube-lb' && y.arch === arch)!;
    for (const x of [a, b, c]) expect(x.ok).toBe(true);
    expect(a.artifacts.map((y) => `${y.kind} ${y.arch}`)).toEqual(['kube-lb x86_64', 'kube-lb aarch64']);
    for (const x of [b, c]) expect(x.artifacts.map((y) => `${y.kind} ${y.arch}`)).toEqual([`kube-lb ${here}`]);
    expect(new Set([a, b, c].map((x) => kubeLb(x).path)).size).toBe(3);
    expect(kubeLb(b).path!.startsWith(path.join(dir, 'b'))).toBe(true);
    expect(fs.statSync(kubeLb(b).path!).uid).toBe(NOBODY);
    expect(kubeLb(b).sha256).toBe(kubeLb(a).sha256);
    expect(kubeLb(c).sha256).toBe(kubeLb(a).sha256);
    // Each one's ELF header: 64-bit, little-endian, an executable, for its CPU (e_machine 62 x86-64, 183 aarch64).
    const elf = (file: string) => {
      const h = fs.readFileSync(file).subarray(0, 20);
      return [h.subarray(0, 4).toString('latin1'), h[4], h[5], h.readUInt16LE(16), h.readUInt16LE(18)];
    };
    expect(elf(kubeLb(a, 'x86_64').path!)).toEqual(['\x7fELF', 2, 1, 2, 62]);
    expect(elf(kubeLb(a, 'aarch64').path!)).toEqual(['\x7fELF', 2, 1, 2, 183]);
    expect(kubeLb(a, 'aarch64').sha256).not.toBe(kubeLb(a, 'x86_64').sha256);
  }, 170_000);
});
