/**
 * k8s-ha as one file per CPU architecture, with no Node.js: `npm run build:executable` compiles the
 * CLI onto the pinned Bun with its files inside. Run from a folder of its own against the shared
 * lab, it must do what this checkout does: log in over SSH (ssh2 on Bun), plan the same on every
 * node, and make the same kube-lb (compiling it with itself, onto the pinned runtime it downloads
 * and verifies) with the same identity and sha256.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { k8sha, ROOT, runCli, type CliResult } from '../helpers/cli.js';
import { inventoryVariant } from '../helpers/deploy.js';
import { lab, scratchDir } from '../helpers/lab.js';

const run = promisify(execFile);
const exe = (arch: string) => path.join(ROOT, 'dist', 'executable', `k8s-ha-linux-${arch}`);
let dir: string;
let built: { arch: string; path: string; bytes: number; sha256: string }[];

/** The executable, started from a folder with no k8s-ha in it, with a PATH of the system's commands less Node.js and npm. */
const single = (args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> => runCli(exe('x86_64'), args, { cwd: dir, env: { PATH: path.join(dir, 'bin'), ...env } });

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(scratchDir(), 'executable-'));
  // The system's commands (sh, uname...), as a host without Node.js has them: node, npm and npx left out.
  fs.mkdirSync(path.join(dir, 'bin'));
  for (const d of ['/usr/local/bin', '/usr/bin', '/bin']) {
    for (const f of fs.readdirSync(d)) {
      if (!/^(node|nodejs|npm|npx|corepack)$/.test(f) && !fs.existsSync(path.join(dir, 'bin', f))) fs.symlinkSync(path.join(d, f), path.join(dir, 'bin', f));
    }
  }
  const r = await run(process.execPath, [path.join(ROOT, 'scripts', 'build-executable.js'), '--arch', 'x86_64,aarch64'], { cwd: ROOT, maxBuffer: 1 << 24 });
  built = (JSON.parse(r.stdout) as { executables: typeof built }).executables;
}, 300_000);

describe('the single executable', () => {
  it('is an ELF executable for each architecture; --version and --help answer without Node.js; the lab is not in it', async () => {
    expect(built.map((b) => b.arch)).toEqual(['x86_64', 'aarch64']);
    expect((await run('file', ['-b', exe('x86_64')])).stdout).toMatch(/^ELF 64-bit LSB executable, x86-64/);
    expect((await run('file', ['-b', exe('aarch64')])).stdout).toMatch(/^ELF 64-bit LSB executable, ARM aarch64/);
    const version = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
    expect(await single(['--version'])).toMatchObject({ code: 0, stdout: `${version}\n` });
    const help = await single(['--help']);
    for (const cmd of ['deploy|reconfigure', 'status', 'build', 'inventory', 'schema']) expect(help.stdout).toMatch(new RegExp(`^ {2}${cmd.replace('|', '\\|')} `, 'm'));
    expect((await single(['lab', 'up'])).stderr).toContain('the lab is not part of an installed k8s-ha');
  });

  it('makes kube-lb itself, from an empty cache: the same identity and sha256 as this checkout', async () => {
    const inv = inventoryVariant('executable-kube-lb', (i) => (i.lb.impl = 'kube-lb'));
    const here = await k8sha(['build', '--json', '-i', inv]);
    expect(here.code, here.stderr).toBe(0);
    const there = await single(['build', '--json', '-i', inv], { K8S_HA_CACHE_DIR: path.join(dir, 'cache') });
    expect(there.code, there.stderr).toBe(0);
    const kubeLb = (r: CliResult) => (JSON.parse(r.stdout) as { artifacts: { kind: string; identity: string; sha256: string }[]; summary: string }).artifacts.find((a) => a.kind === 'kube-lb')!;
    expect(kubeLb(there)).toMatchObject({ identity: kubeLb(here).identity, sha256: kubeLb(here).sha256 });
    expect((JSON.parse(there.stdout) as { summary: string }).summary).toMatch(/kube-lb \S+ \(Bun [\d.]+\) built \(one executable, x86_64\)/);
  }, 180_000);

  it('logs in over SSH and plans the same as this checkout on every lab node (deploy --check), and status reaches every node', async () => {
    const plan = (r: CliResult) => {
      const j = JSON.parse(r.stdout) as { build: string; totals: unknown; hosts: Record<string, { status: string; check?: { service: string; changes: { step: string; summary: string }[] } }> };
      return { build: j.build, totals: j.totals, hosts: Object.fromEntries(Object.entries(j.hosts).map(([n, h]) => [n, { status: h.status, service: h.check?.service, changes: h.check?.changes.map((c) => `${c.step}: ${c.summary}`) }])) };
    };
    const a = await k8sha(['deploy', '--check', '--json', '-i', lab().inventory]);
    const b = await single(['deploy', '--check', '--json', '-i', lab().inventory]);
    expect(b.code, b.stderr).toBe(a.code);
    expect(plan(b)).toEqual(plan(a));
    const st = await single(['status', '--json', '-i', lab().inventory]);
    const nodes = (JSON.parse(st.stdout) as { nodes: { name: string; reachable: boolean }[] }).nodes;
    expect(nodes.map((n) => [n.name, n.reachable])).toEqual(lab().nodes.map((n) => [n.name, true]));
  }, 120_000);
});
