/**
 * One static nginx for nodes of different Debian releases: a lab of its own whose node-1 runs
 * bookworm (glibc 2.36), node-2 bullseye (glibc 2.31) and node-3 trixie (glibc 2.41, OpenSSH 10,
 * systemd 257), its master trixie too, as clusters built by hand over the years are. The binary is
 * built once on this machine (bookworm) and must run on all three.
 */
import { execFile, spawnSync } from 'node:child_process';
import os from 'node:os';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { machineId } from '../../src/build/cache.js';
import type { SshConnection } from '../../src/connect/ssh.js';
import { quote } from '../../src/util/quote.js';
import { BIN, k8sha, ROOT } from '../helpers/cli.js';
import { deployJson, type DeployJson } from '../helpers/deploy.js';
import { scratchDir, withNodeOfLab } from '../helpers/lab.js';

const DIR = path.join(ROOT, '.lab-test-mixed');
const NGINX = '/opt/k8s/kube-nginx';
let inventory: string;
let nodes: { name: string; address: string; os: string }[];
let master: { name: string; address: string };

const onNode = <T>(node: { name: string; address: string }, fn: (c: SshConnection) => Promise<T>): Promise<T> => withNodeOfLab(DIR, node, fn);

beforeAll(async () => {
  await k8sha(['lab', 'down', '--dir', DIR]);
  const up = await k8sha(['lab', 'up', '--dir', DIR, '--nodes', '3', '--masters', '1', '--os', 'bookworm,bullseye,trixie', '--masters-os', 'trixie', '--json']);
  if (up.code !== 0) throw new Error(up.stderr);
  const info = JSON.parse(up.stdout);
  nodes = info.nodes;
  master = info.masters[0];
  inventory = info.inventory;
});

afterAll(async () => {
  if (!process.env.K8S_HA_KEEP_LAB) await k8sha(['lab', 'down', '--dir', DIR]);
});

describe.sequential('a lab of bookworm, bullseye and trixie nodes', () => {
  it('runs the release each host was given: trixie with OpenSSH 10 and systemd 257, reached over ssh2', async () => {
    expect(nodes.map((n) => n.os)).toEqual(['bookworm', 'bullseye', 'trixie']);
    const release = 'echo "$(. /etc/os-release; echo $VERSION_CODENAME) $(getconf GNU_LIBC_VERSION)"';
    const seen = await Promise.all(nodes.map((n) => onNode(n, (c) => c.execOk(release))));
    expect(seen).toEqual(['bookworm glibc 2.36\n', 'bullseye glibc 2.31\n', 'trixie glibc 2.41\n']);
    expect(await onNode(master, (c) => c.execOk(release))).toBe('trixie glibc 2.41\n');
    const trixie = await onNode(nodes[2]!, (c) => c.execOk('ssh -V 2>&1; systemctl --version | head -n1'));
    expect(trixie).toMatch(/^OpenSSH_10\.\d+/);
    expect(trixie).toMatch(/^systemd 257\b/m);
  });

  it('one static nginx, built once, runs and is verified on all three: no node falls back to kube-lb', async () => {
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
    for (const f of facts) expect(f.sha256).toBe(facts[0]!.sha256);
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

  it('a build node as the store (build.store HOST:/PATH): filled over SFTP; a dead holder\'s lock there taken over; read by a controller with an empty cache (build, --check, deploy) that changes nothing; a folder others may write to refused', async () => {
    const work = fs.mkdtempSync(path.join(scratchDir(), 'node-store-'));
    const host = nodes[0]!;
    const root = '/srv/k8s-ha-store';
    await onNode(host, (c) => c.execOk(`rm -rf ${root} && install -d -m 2775 ${root}`));
    const file = path.join(work, 'inventory.node-store.yaml');
    const inv = YAML.parse(fs.readFileSync(inventory, 'utf8'));
    inv.lb.impl = 'auto';
    inv.build.store = `${host.name}:${root}`;
    inv.nodes[1].lb = { impl: 'kube-lb' };
    fs.writeFileSync(file, YAML.stringify(inv));

    // The first controller: this checkout and its cache, which has both artifacts: it puts them there.
    const a = await deployJson(['-i', file]);
    expect(a.code, a.stderr).toBe(0);
    const onStore = (await onNode(host, (c) => c.execOk(`cd ${root} && find . -type f | sort && sha256sum builds/*/kube-nginx kube-lb/*/kube-lb && stat -c '%a %n' builds builds/* kube-lb kube-lb/*`))).split('\n');
    expect(onStore.filter((l) => l.startsWith('./'))).toEqual([expect.stringMatching(/^\.\/builds\/[0-9a-f]{16}\/build\.json$/), expect.stringMatching(/^\.\/builds\/[0-9a-f]{16}\/kube-nginx$/), expect.stringMatching(/^\.\/kube-lb\/[0-9a-f]{16}\/build\.json$/), expect.stringMatching(/^\.\/kube-lb\/[0-9a-f]{16}\/kube-lb$/)]);
    // No lock, no partial file left; folders keep the store's group bits.
    expect(onStore.filter((l) => /^\d+ /.test(l)).map((l) => l.split(' ')[0])).toEqual(['2775', '2775', '2775', '2775']);
    const storedSha = Object.fromEntries(onStore.filter((l) => /^[0-9a-f]{64} /.test(l)).map((l) => [l.includes('kube-lb') ? 'kube-lb' : 'nginx', l.split(' ')[0]]));
    // node-2 runs kube-lb, the others nginx: each the store's bytes.
    const running = await Promise.all(nodes.map((n, i) => onNode(n, (c) => c.execOk(i === 1 ? 'sha256sum /opt/k8s/kube-lb/sbin/kube-lb' : `sha256sum ${NGINX}/sbin/kube-nginx`))));
    expect(running.map((r) => r.split(' ')[0])).toEqual([storedSha.nginx, storedSha['kube-lb'], storedSha.nginx]);

    // A second controller, an empty cache, and kube-lb's entry gone from the store but for a lock a
    // process of this machine left when it died: `k8s-ha build` takes nginx from the node, takes the
    // lock over (over SFTP), makes kube-lb again (the same bytes: builds are reproducible) and puts it back.
    const files = () => onNode(host, (c) => c.execOk(`cd ${root} && find . -type f | sort`));
    const listed = await files();
    const kubeLbDir = /\.\/kube-lb\/([0-9a-f]{16})\//.exec(listed)![1]!;
    const dead = spawnSync('true').pid;
    await onNode(host, (c) => c.execOk(`cd ${root}/kube-lb/${kubeLbDir} && rm kube-lb build.json && printf '%s\\n' ${quote(`${dead} ${os.hostname()} ${machineId()}`)} > .lock`));
    const env = { ...process.env, K8S_HA_CACHE_DIR: path.join(work, 'cache-b') };
    const built = await promisify(execFile)('node', [BIN, 'build', '--json', '-i', file], { cwd: work, env, maxBuffer: 1 << 24, timeout: 170_000 }).catch((e: { code: number; stdout: string; stderr: string }) => e);
    const artifacts = (JSON.parse(built.stdout) as { artifacts: { kind: string; sha256: string; stored: string }[] }).artifacts;
    expect(artifacts.map((x) => [x.kind, x.sha256, x.stored])).toEqual([
      ['nginx', storedSha.nginx, expect.stringMatching(new RegExp(`^${host.name}:${root}/builds/[0-9a-f]{16}/kube-nginx$`))],
      ['kube-lb', storedSha['kube-lb'], expect.stringMatching(new RegExp(`^${host.name}:${root}/kube-lb/[0-9a-f]{16}/kube-lb$`))],
    ]);
    expect(await files()).toBe(listed);
    // --check from a third, empty cache reads the store: nothing unknown, nothing to change.
    const check = await promisify(execFile)('node', [BIN, 'deploy', '--check', '--json', '-i', file], { cwd: work, env: { ...env, K8S_HA_CACHE_DIR: path.join(work, 'cache-c') }, maxBuffer: 1 << 24, timeout: 170_000 }).catch((e: { code: number; stdout: string; stderr: string }) => e);
    const checked = JSON.parse(check.stdout) as DeployJson & { build: string };
    expect(checked.build, check.stderr).toMatch(/nginx 1\.22\.1 found in the store; kube-lb \S+ \(Bun [\d.]+\) for x86_64 found in the store/);
    expect(checked.totals).toMatchObject({ changed: 0, failed: 0 });
    expect(fs.existsSync(path.join(work, 'cache-c', 'builds'))).toBe(false);
    const b = await promisify(execFile)('node', [BIN, 'deploy', '--json', '-i', file], { cwd: work, env, maxBuffer: 1 << 24, timeout: 170_000 }).catch((e: { code: number; stdout: string; stderr: string }) => e);
    const second = JSON.parse(b.stdout) as DeployJson & { build: string };
    expect(second.ok, b.stderr).toBe(true);
    expect(second.totals).toMatchObject({ changed: 0, failed: 0 });
    expect(second.build).toMatch(/^nginx 1\.22\.1 \(static, musl, runs on any x86_64 Linux\) from the cache on controller .*; kube-lb \S+ \(Bun [\d.]+\) from the cache/);

    // A store folder others may write to is refused once reached, before anything is built or changed.
    await onNode(host, (c) => c.execOk(`chmod 777 ${root}`));
    const refused = await k8sha(['deploy', '-i', file]);
    expect(refused.code).toBe(4);
    expect(refused.stderr).toContain(`build.store in ${file}: ${host.name}:${root} is writable by every user of that host (mode 2777): any of them could put a binary on every node; chmod o-w ${root}`);
    expect(refused.stdout + refused.stderr).not.toMatch(/^node-\d: /m);
    await onNode(host, (c) => c.execOk(`rm -rf ${root}`));
  }, 240_000);
  it("trixie's haproxy (3.0, from its packages) as the node's balancer, lb.impl haproxy: its config passes haproxy -c there, and it is verified through 127.0.0.1:8443", async () => {
    const trixie = nodes[2]!;
    const file = path.join(scratchDir(), 'inventory.trixie-haproxy.yaml');
    const inv = YAML.parse(fs.readFileSync(inventory, 'utf8'));
    inv.nodes[2].lb = { impl: 'haproxy' };
    fs.writeFileSync(file, YAML.stringify(inv));
    const d = await deployJson(['-i', file, '--limit', trixie.name]);
    expect(d.code, d.stderr).toBe(0);
    const h = d.report.hosts[trixie.name]!;
    expect(h.impl).toMatchObject({ impl: 'haproxy' });
    expect(h.verified).toMatchObject({ state: 'active (running)', status: 200 });
    expect(await onNode(trixie, (c) => c.execOk('haproxy -v | head -n1'))).toMatch(/^HAProxy version 3\.0\./);
    expect(await onNode(trixie, (c) => c.execOk('systemctl is-active kube-haproxy kube-nginx; true'))).toBe('active\ninactive\n');
  });
});
