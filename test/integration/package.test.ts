/**
 * k8s-ha as operators install it, not as this checkout runs it: packed (`npm pack`, as a release
 * is), installed into an empty folder with its dependencies (`npm install TARBALL`, from the cache
 * npm ci filled), and run from there against the shared lab. The installed copy must see exactly
 * what the checkout sees: the same kube-lb identity (the same bundle, so the same dependency
 * versions: the package carries its lock as npm-shrinkwrap.json) and the same plan per node.
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
let dir: string;
let tarball: string;
let installed: string;

/** The installed copy's command, as `npx k8s-ha` or a PATH entry would start it. */
const installedK8sha = (args: string[]): Promise<CliResult> => runCli(path.join(dir, 'node_modules', '.bin', 'k8s-ha'), args, { cwd: dir });

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(scratchDir(), 'installed-'));
  // npm pack as a release makes it, less its prepare step (npm run build), which the suite ran
  // already: prepack (the lock as npm-shrinkwrap.json, dist checked), pack, postpack.
  await run('npm', ['run', 'prepack'], { cwd: ROOT });
  const packed = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], { cwd: ROOT, maxBuffer: 1 << 24 }).finally(() => run('npm', ['run', 'postpack'], { cwd: ROOT }));
  const info = (JSON.parse(packed.stdout) as { filename: string; files: { path: string }[] }[])[0]!;
  tarball = path.join(dir, info.filename);
  fs.writeFileSync(path.join(dir, 'package.json'), '{"private": true}\n');
  await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', tarball], { cwd: dir, maxBuffer: 1 << 24 });
  installed = path.join(dir, 'node_modules', 'k8s-ha');
}, 180_000);

describe('the packed package, installed into an empty folder', () => {
  it('ships what runs, and not the lab, its compose file or source maps; carries its lock; leaves none behind here', async () => {
    const files = (await run('tar', ['tzf', tarball])).stdout.split('\n').filter(Boolean);
    expect(files).toContain('package/LICENSE');
    expect(files).toContain('package/npm-shrinkwrap.json');
    expect(files).toContain('package/docs/benchmarks.md');
    expect(files).toContain('package/inventory/inventory.example.yaml');
    expect(files).toContain('package/dist/build/runtime-pins.json');
    expect(files).toContain('package/dist/inventory.schema.json');
    expect(files).toContain('package/docs/inventory.md');
    expect(files.filter((f) => /\.map$|^package\/dist\/(lab|executable|kube-lb)\/|docker-compose|^package\/(src|test|scripts)\//.test(f))).toEqual([]);
    // What runs, not what was built here (a 110 MB executable made by npm run build:executable or build:kube-lb).
    expect(fs.statSync(tarball).size).toBeLessThan(2_000_000);
    expect(fs.existsSync(path.join(ROOT, 'npm-shrinkwrap.json'))).toBe(false);
    // The lab's own dependencies are not installed with it.
    for (const dep of ['@peculiar/x509', 'reflect-metadata', 'vitest', 'typescript']) expect([dep, fs.existsSync(path.join(dir, 'node_modules', dep))]).toEqual([dep, false]);
  });

  it("--version is package.json's; --help lists the commands; lab says where it lives; a bad inventory names the example it ships", async () => {
    const version = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
    expect((await installedK8sha(['--version'])).stdout).toBe(`${version}\n`);
    const help = await installedK8sha(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^ {2}deploy\|reconfigure /m);
    expect(help.stdout).toMatch(/^ {2}status /m);
    expect(help.stdout).toMatch(/^ {2}build /m);
    // The schema it prints is the one it ships.
    const schema = await installedK8sha(['schema']);
    expect(schema.code).toBe(0);
    expect(JSON.parse(schema.stdout)).toEqual(JSON.parse(fs.readFileSync(path.join(installed, 'dist', 'inventory.schema.json'), 'utf8')));
    const labCmd = await installedK8sha(['lab', 'up']);
    expect(labCmd.code).toBe(2);
    expect(labCmd.stderr).toContain('the lab is not part of an installed k8s-ha: it runs from a clone of the repository');
    const missing = await installedK8sha(['deploy', '--check', '-i', 'nowhere.yaml']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain(`an example: ${path.join(installed, 'inventory', 'inventory.example.yaml')}`);
    expect(fs.existsSync(path.join(installed, 'inventory', 'inventory.example.yaml'))).toBe(true);
  });

  it('makes the same kube-lb as this checkout (same identity and sha256, found in the cache: nothing built), and --check plans the same on every lab node', async () => {
    const kubeLb = inventoryVariant('installed-kube-lb', (i) => (i.lb.impl = 'kube-lb'));
    const here = await k8sha(['build', '--json', '-i', kubeLb]);
    expect(here.code, here.stderr).toBe(0);
    const there = await installedK8sha(['build', '--json', '-i', kubeLb]);
    expect(there.code, there.stderr).toBe(0);
    const artifact = (r: CliResult) => (JSON.parse(r.stdout) as { artifacts: { kind: string; identity: string; sha256: string }[] }).artifacts.find((a) => a.kind === 'kube-lb')!;
    expect(artifact(there)).toMatchObject({ identity: artifact(here).identity, sha256: artifact(here).sha256 });
    expect((JSON.parse(there.stdout) as { summary: string }).summary).toMatch(/kube-lb \S+ \(Bun [\d.]+\) from the cache/);

    const plan = (r: CliResult) => {
      const j = JSON.parse(r.stdout) as { build: string; totals: unknown; hosts: Record<string, { status: string; check?: { service: string; changes: { step: string; summary: string }[] } }> };
      return { build: j.build, totals: j.totals, hosts: Object.fromEntries(Object.entries(j.hosts).map(([n, h]) => [n, { status: h.status, service: h.check?.service, changes: h.check?.changes.map((c) => `${c.step}: ${c.summary}`) }])) };
    };
    const a = await k8sha(['deploy', '--check', '--json', '-i', lab().inventory]);
    const b = await installedK8sha(['deploy', '--check', '--json', '-i', lab().inventory]);
    expect(b.code).toBe(a.code);
    expect(plan(b)).toEqual(plan(a));
    expect(Object.keys(plan(b).hosts).sort()).toEqual(lab().nodes.map((n) => n.name).sort());
  }, 120_000);
});
