/** Bad input is refused before anything is created; `lab down` removes exactly what the lab made. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { labId } from '../../src/lab/state.js';
import { run } from '../../src/util/exec.js';
import { k8sha, ROOT } from '../helpers/cli.js';

async function labLeftovers(dir: string): Promise<{ containers: string[]; networks: string[] }> {
  const id = labId(dir);
  const c = await run('docker', ['ps', '-aq', '--filter', `label=io.k8s-ha.lab=${id}`]);
  const n = await run('docker', ['network', 'ls', '-q', '--filter', `name=^${id}$`]);
  return { containers: c.stdout.split('\n').filter(Boolean), networks: n.stdout.split('\n').filter(Boolean) };
}

describe('lab up refuses bad input with one clear line, exit 2, and creates nothing', () => {
  const dir = path.join(ROOT, '.lab-test-bad');

  it.each([
    [['--nodes', '0'], /--nodes must be a whole number from 1 to 200/],
    [['--nodes', '201'], /--nodes must be a whole number from 1 to 200/],
    [['--masters', 'three'], /--masters must be a whole number from 1 to 200/],
    [['--subnet', '10.1.2.0/24'], /--subnet must be an IPv4 \/16/],
    [['--bogus'], /unknown option '--bogus'/],
  ])('lab up %j', async (args, message) => {
    const r = await k8sha(['lab', 'up', '--dir', dir, ...args]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(message);
    expect(r.stderr).toMatch(/\n {2}fix: /);
    expect(fs.existsSync(dir)).toBe(false);
    expect(await labLeftovers(dir)).toEqual({ containers: [], networks: [] });
  });

  it('a directory holding something else', async () => {
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'important.txt'), 'not a lab');
    try {
      const r = await k8sha(['lab', 'up', '--dir', dir]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/holds files that are not a k8s-ha lab \(important\.txt\)/);
      expect(fs.readdirSync(dir)).toEqual(['important.txt']);
      expect(await labLeftovers(dir)).toEqual({ containers: [], networks: [] });
      // lab down must not touch it either.
      expect((await k8sha(['lab', 'down', '--dir', dir])).code).toBe(2);
      expect(fs.readdirSync(dir)).toEqual(['important.txt']);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  // Runs the CLI as `nobody`, from a copy of what it needs in a folder that user can read (the
  // checkout may sit in a home folder nobody cannot enter, as CI's does).
  it('no Docker engine, for a user who cannot install one', async () => {
    const copy = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-nobody-'));
    fs.chmodSync(copy, 0o755);
    try {
      for (const part of ['bin', 'dist', 'package.json', 'node_modules']) {
        // Hard links where the folders share a file system (instant), else a copy.
        const linked = await run('cp', ['-al', path.join(ROOT, part), copy]);
        if (linked.code !== 0) expect((await run('cp', ['-r', path.join(ROOT, part), copy])).code).toBe(0);
      }
      const r = await run('runuser', ['-u', 'nobody', '--', 'env', 'HOME=/tmp', 'NO_COLOR=1', process.execPath, path.join(copy, 'bin/k8s-ha.js'), 'lab', 'up', '--dir', '/tmp/k8s-ha-nobody-lab']);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toMatch(/k8s-ha: error: no Docker engine answers `docker info`\n {2}fix: install and start Docker Engine/);
      expect(fs.existsSync('/tmp/k8s-ha-nobody-lab')).toBe(false);
    } finally {
      fs.rmSync(copy, { recursive: true, force: true });
    }
  });
});

describe('a lab from up to down', () => {
  it('comes up small, refuses a size change while up, and down leaves no container, network or file behind', async () => {
    const dir = path.join(ROOT, '.lab-test-down');
    const up = await k8sha(['lab', 'up', '--dir', dir, '--nodes', '1', '--masters', '1', '--json']);
    expect(up.code, up.stderr).toBe(0);
    const info = JSON.parse(up.stdout);
    expect(info.nodes).toHaveLength(1);
    expect(info.masters).toHaveLength(1);
    expect((await labLeftovers(dir)).containers).toHaveLength(3);

    const resize = await k8sha(['lab', 'up', '--dir', dir, '--nodes', '2', '--masters', '1']);
    expect(resize.code).toBe(2);
    expect(resize.stderr).toMatch(/a lab of 1 nodes and 1 masters is already in .*\n {2}fix: run `k8s-ha lab down --dir/);

    const down = await k8sha(['lab', 'down', '--dir', dir]);
    expect(down.code).toBe(0);
    expect(down.stdout).toMatch(/Removed lab k8s-ha-lab-test-down-[0-9a-f]{6}: 3 containers, its network, its files/);
    expect(await labLeftovers(dir)).toEqual({ containers: [], networks: [] });
    expect(fs.existsSync(dir)).toBe(false);

    const again = await k8sha(['lab', 'down', '--dir', dir]);
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/nothing to remove/);
  });

  it('a lab whose folder was deleted by hand: lab up removes the containers and network it left, then starts afresh', async () => {
    const dir = path.join(ROOT, '.lab-test-orphans');
    expect((await k8sha(['lab', 'up', '--dir', dir, '--nodes', '1', '--masters', '1'])).code).toBe(0);
    fs.rmSync(dir, { recursive: true });
    const up = await k8sha(['lab', 'up', '--dir', dir, '--nodes', '1', '--masters', '1']);
    expect(up.code, up.stderr).toBe(0);
    expect(up.stdout).toMatch(/removed 3 containers and a network left by an earlier lab in this folder/);
    expect((await labLeftovers(dir)).containers).toHaveLength(3);
    expect((await k8sha(['lab', 'status', '--dir', dir])).code).toBe(0);
    expect((await k8sha(['lab', 'down', '--dir', dir])).code).toBe(0);
    expect(await labLeftovers(dir)).toEqual({ containers: [], networks: [] });
  });
});
