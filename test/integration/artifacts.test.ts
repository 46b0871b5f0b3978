/**
 * What k8s-ha builds is the same wherever it is built: `k8s-ha build` run by three controllers that
 * share nothing (their own cache, working folder, temporary folder, user, and Node.js version) gives
 * one kube-lb, byte for byte, compiled onto the Bun the package pins, and one static nginx from the
 * lab mirror's tarball (nginx linked to glibc: test/unit/build-tree.test.ts); and kube-lb for the other CPU architecture too, onto the
 * pinned Bun package for it, downloaded and checked against the lock's sha512. No lab host is
 * touched (only the mirror is read).
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCa } from '../../src/lab/pki.js';
import YAML from 'yaml';
import { ROOT } from '../helpers/cli.js';
import { lab } from '../helpers/lab.js';

const exec = promisify(execFile);
const NOBODY = 65534;
let dir: string;
let inventory: string;
/** The same, with build.architectures naming both, and nginx (lb.impl auto builds both). */
let both: string;
/** nginx too, for the controller's architecture. */
let withNginx: string;

interface Built {
  ok: boolean;
  artifacts: { kind: string; arch: string | null; path: string | null; sha256: string; identity: string | null }[];
}

/** `k8s-ha build --json` as a controller: a command prefix (another user, another Node.js), its own cache and folder. */
async function build(prefix: string[], cache: string, cwd: string, inv = inventory): Promise<Built> {
  // Each its own temporary folder, of another length: the build folders differ in name and length.
  const tmp = path.join(cwd, `tmp-${'x'.repeat(path.basename(cwd).charCodeAt(0) - 96)}`);
  fs.mkdirSync(tmp, { recursive: true, mode: 0o700 });
  fs.chownSync(tmp, fs.statSync(cwd).uid, fs.statSync(cwd).gid);
  const [cmd, ...args] = [...prefix, 'env', `K8S_HA_CACHE_DIR=${cache}`, `HOME=${cwd}`, `TMPDIR=${tmp}`, 'node', path.join(ROOT, 'bin', 'k8s-ha.js'), 'build', '-i', inv, '--json'];
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
  // The lab mirror's nginx tarball, as the lab inventory names it.
  const nginx = `nginx: ${JSON.stringify(YAML.parse(fs.readFileSync(lab().inventory, 'utf8')).nginx)}`;
  const auto = lines.map((l) => (l.startsWith('lb:') ? 'lb: {impl: auto}' : l));
  fs.writeFileSync(both, [...auto, nginx, 'build: {architectures: [x86_64, aarch64]}', ''].join('\n'));
  withNginx = path.join(dir, 'inventory-nginx.yaml');
  fs.writeFileSync(withNginx, [...auto, nginx, ''].join('\n'));
  for (const home of ['a', 'b', 'c']) fs.mkdirSync(path.join(dir, home), { mode: 0o700 });
  fs.chownSync(path.join(dir, 'b'), NOBODY, NOBODY);
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('k8s-ha build', () => {
  it('gives the same kube-lb, byte for byte, to controllers with other folders, caches, users and Node.js versions', async () => {
    const nobody = ['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups'];
    // Two at once: the machine has two cores.
    const [a, b] = await Promise.all([build([], path.join(dir, 'a', 'cache'), path.join(dir, 'a'), both), build(nobody, path.join(dir, 'b', 'cache'), path.join(dir, 'b'), withNginx)]);
    // Node.js 22 from the npm registry (this machine's is another major version): what runs the controller does not matter.
    const c = await build(['npm', 'exec', '--yes', '--package=node@22', '--'], path.join(dir, 'c', 'cache'), path.join(dir, 'c'));
    const here = process.arch === 'arm64' ? 'aarch64' : 'x86_64';
    const kubeLb = (x: Built, arch = here) => x.artifacts.find((y) => y.kind === 'kube-lb' && y.arch === arch)!;
    for (const x of [a, b, c]) expect(x.ok).toBe(true);
    expect(a.artifacts.map((y) => `${y.kind} ${y.arch}`)).toEqual([`nginx ${here}`, 'kube-lb x86_64', 'kube-lb aarch64']);
    expect(b.artifacts.map((y) => `${y.kind} ${y.arch}`)).toEqual([`nginx ${here}`, `kube-lb ${here}`]);
    expect(c.artifacts.map((y) => `${y.kind} ${y.arch}`)).toEqual([`kube-lb ${here}`]);
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

    // nginx, built by root and by nobody in folders of other names and lengths: one file, one identity.
    const nginx = (x: Built) => x.artifacts.find((y) => y.kind === 'nginx')!;
    expect(nginx(b).path).not.toBe(nginx(a).path);
    expect(fs.statSync(nginx(b).path!).uid).toBe(NOBODY);
    expect(nginx(b).sha256).toBe(nginx(a).sha256);
    expect(nginx(a).identity).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(nginx(b).identity).toBe(nginx(a).identity);
    expect(kubeLb(b).identity).toBe(kubeLb(a).identity);

  }, 170_000);
});
