/**
 * One static nginx for nodes of different Debian releases: a lab of its own whose node-1 runs
 * bookworm (glibc 2.36) and node-2 bullseye (glibc 2.31), as clusters built by hand over the years
 * do. The binary is built once on this machine (bookworm) and must run on both.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SshConnection } from '../../src/connect/ssh.js';
import { BIN, k8sha, ROOT } from '../helpers/cli.js';
import { deployJson, type DeployJson } from '../helpers/deploy.js';
import { scratchDir, withNodeOfLab } from '../helpers/lab.js';

const DIR = path.join(ROOT, '.lab-test-mixed');
const NGINX = '/opt/k8s/kube-nginx';
let inventory: string;
let nodes: { name: string; address: string; os: string }[];

const onNode = <T>(node: { name: string; address: string }, fn: (c: SshConnection) => Promise<T>): Promise<T> => withNodeOfLab(DIR, node, fn);

beforeAll(async () => {
  await k8sha(['lab', 'down', '--dir', DIR]);
  const up = await k8sha(['lab', 'up', '--dir', DIR, '--nodes', '2', '--masters', '1', '--os', 'bookworm,bullseye', '--json']);
  if (up.code !== 0) throw new Error(up.stderr);
  const info = JSON.parse(up.stdout);
  nodes = info.nodes;
  inventory = info.inventory;
});

afterAll(async () => {
  if (!process.env.K8S_HA_KEEP_LAB) await k8sha(['lab', 'down', '--dir', DIR]);
});

describe.sequential('a lab of bookworm and bullseye nodes', () => {
  it('runs the release each node was given', async () => {
    expect(nodes.map((n) => n.os)).toEqual(['bookworm', 'bullseye']);
    const seen = await Promise.all(nodes.map((n) => onNode(n, (c) => c.execOk('. /etc/os-release; echo "$VERSION_CODENAME $(getconf GNU_LIBC_VERSION)"'))));
    expect(seen).toEqual(['bookworm glibc 2.36\n', 'bullseye glibc 2.31\n']);
  });

  it('one static nginx, built once, runs and is verified on both: no node falls back to kube-lb', async () => {
    const auto = path.join(scratchDir(), 'inventory.mixed-auto.yaml');
    const inv = YAML.parse(fs.readFileSync(inventory, 'utf8'));
    inv.lb.impl = 'auto';
    fs.writeFileSync(auto, YAML.stringify(inv));
    const d = await deployJson(['-i', auto]);
    expect(d.code, d.stderr).toBe(0);
    for (const n of nodes) {
      const h = d.report.hosts[n.name]!;
      expect(h.impl).toMatchObject({ wanted: 'auto', impl: 'nginx' });
      expect(h.verified).toMatchObject({ state: 'active (running)', status: 200 });
    }
    expect(d.report.hosts[nodes[0]!.name]!.steps.find((s) => s.name === 'build nginx')!.summary).toMatch(/static, musl, runs on any x86_64 Linux/);
    const facts = await Promise.all(
      nodes.map((n) =>
        onNode(n, async (c) => ({
          sha256: (await c.execOk(`sha256sum ${NGINX}/sbin/kube-nginx`)).split(' ')[0],
          // ldd: "not a dynamic executable", exit 1, whatever the node's glibc.
          ldd: await c.exec(`ldd ${NGINX}/sbin/kube-nginx`),
          version: await c.execOk(`${NGINX}/sbin/kube-nginx -v 2>&1`),
          test: await c.execOk(`${NGINX}/sbin/kube-nginx -t -p ${NGINX} -c ${NGINX}/conf/kube-nginx.conf 2>&1`),
          parsePid: (await c.execOk("journalctl -u kube-nginx --no-pager -o cat | grep -c 'Failed to parse PID' || true")).trim(),
        })),
      ),
    );
    expect(facts[0]!.sha256).toBe(facts[1]!.sha256);
    for (const f of facts) {
      expect(f.ldd.code).toBe(1);
      expect(f.ldd.stdout + f.ldd.stderr).toMatch(/not a dynamic executable/);
      expect(f.version).toBe('nginx version: nginx/1.22.1\n');
      expect(f.test).toMatch(/test is successful/);
      expect(f.parsePid).toBe('0');
    }
    // A reload (config changed) and a restart leave no PID-file complaint either.
    for (const n of nodes) await onNode(n, (c) => c.execOk('systemctl reload kube-nginx && systemctl restart kube-nginx && systemctl is-active kube-nginx'));
    for (const n of nodes) expect((await onNode(n, (c) => c.execOk("journalctl -u kube-nginx --no-pager -o cat | grep -c 'Failed to parse PID' || true"))).trim()).toBe('0');
  });

  it('two controllers with their own caches and one shared store deploy in turn: the second, on another Node.js, builds nothing and changes nothing', async () => {
    const work = fs.mkdtempSync(path.join(scratchDir(), 'controllers-'));
    // The store as operators share it: their group may write to it, others may not.
    const store = path.join(work, 'store');
    fs.mkdirSync(store);
    fs.chmodSync(store, 0o2775);
    const file = path.join(work, 'inventory.store.yaml');
    const inv = YAML.parse(fs.readFileSync(inventory, 'utf8'));
    inv.lb.impl = 'auto';
    inv.build.store = store;
    // One node on kube-lb: both artifacts go through the store.
    inv.nodes[1].lb = { impl: 'kube-lb' };
    fs.writeFileSync(file, YAML.stringify(inv));

    // The first controller: this checkout and its cache, which has nginx already (the case above).
    const a = await deployJson(['-i', file]);
    expect(a.code, a.stderr).toBe(0);
    expect(a.report.hosts[nodes[1]!.name]!.impl).toMatchObject({ impl: 'kube-lb' });
    expect(a.report.hosts[nodes[1]!.name]!.verified).toMatchObject({ state: 'active (running)', status: 200 });
    expect(fs.readdirSync(store).sort()).toEqual(['builds', 'kube-lb']);

    // The second: Node.js 22 from the npm registry (not this machine's), an empty cache of its own, another home.
    const cache = path.join(work, 'cache-b');
    const r = await promisify(execFile)('npm', ['exec', '--yes', '--package=node@22', '--', 'node', BIN, 'deploy', '--json', '-i', file], {
      cwd: work,
      env: { ...process.env, K8S_HA_CACHE_DIR: cache, HOME: work },
      maxBuffer: 1 << 24,
      timeout: 170_000,
    }).catch((e: { code: number; stdout: string; stderr: string }) => e);
    const b = JSON.parse(r.stdout) as DeployJson;
    expect(b.ok, r.stderr).toBe(true);
    expect(b.totals).toMatchObject({ changed: 0, failed: 0 });
    for (const n of nodes) expect([n.name, b.hosts[n.name]!.status, b.hosts[n.name]!.changed]).toEqual([n.name, 'ok', 0]);
    // Nothing was built: both came from the store, into the second controller's own cache (0700).
    const build = (b as DeployJson & { build: string }).build;
    expect(build).toMatch(/^nginx 1\.22\.1 \(static, musl, runs on any x86_64 Linux\) from the store \(built on controller .*\), [\d.]+ MB, sha256 [0-9a-f]{12}; kube-lb \S+ \(Bun [\d.]+\) from the store \(one executable, x86_64\)/);
    expect(build).not.toMatch(/\) built /);
    expect((fs.statSync(cache).mode & 0o777).toString(8)).toBe('700');
    expect(fs.readdirSync(cache).sort()).toEqual(['builds', 'kube-lb']);
  }, 180_000);
});
