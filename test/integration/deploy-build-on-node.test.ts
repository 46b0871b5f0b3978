/**
 * `build.host: node-1`, as the seed compiles on its first node: the node has no
 * compiler, so the build installs gcc and make with apt first. A lab of its own,
 * since that changes the node for good.
 */
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SshConnection } from '../../src/connect/ssh.js';
import { k8sha, ROOT } from '../helpers/cli.js';
import type { DeployJson } from '../helpers/deploy.js';
import { scratchDir, withNodeOfLab } from '../helpers/lab.js';

const DIR = path.join(ROOT, '.lab-test-build');
let inventory: string;
let node: { name: string; address: string };

const onNode = <T>(fn: (c: SshConnection) => Promise<T>): Promise<T> => withNodeOfLab(DIR, node, fn);

beforeAll(async () => {
  // This test changes its node for good (it installs a compiler): always start from a fresh lab.
  await k8sha(['lab', 'down', '--dir', DIR]);
  const up = await k8sha(['lab', 'up', '--dir', DIR, '--nodes', '1', '--masters', '1', '--json']);
  if (up.code !== 0) throw new Error(up.stderr);
  const info = JSON.parse(up.stdout);
  node = info.nodes[0];
  const inv = YAML.parse(fs.readFileSync(info.inventory, 'utf8'));
  inv.build = { host: node.name };
  inventory = path.join(scratchDir(), 'inventory.build.yaml');
  fs.writeFileSync(inventory, YAML.stringify(inv));
});

afterAll(async () => {
  if (!process.env.K8S_HA_KEEP_LAB) await k8sha(['lab', 'down', '--dir', DIR]);
});

/**
 * Every apt source replaced: `unreachable` points at a port where nothing answers; `empty` at a
 * repository on the node itself that answers and holds no package (the toolchain truly cannot be
 * had). The returned function puts them back.
 */
async function breakApt(kind: 'unreachable' | 'empty'): Promise<() => Promise<void>> {
  const source =
    kind === 'unreachable'
      ? 'echo "deb http://127.0.0.1:9/debian bookworm main" > /etc/apt/sources.list'
      : 'mkdir -p /root/empty-repo && : > /root/empty-repo/Packages && printf "Origin: empty\\nLabel: empty\\n" > /root/empty-repo/Release && ' +
        'echo "deb [trusted=yes] file:/root/empty-repo ./" > /etc/apt/sources.list';
  await onNode((c) => c.execOk(`mkdir -p /root/apt-saved && mv /etc/apt/sources.list /etc/apt/sources.list.d /root/apt-saved/ 2>/dev/null; mkdir -p /etc/apt/sources.list.d && ${source}`));
  return async () => {
    await onNode((c) => c.execOk('rm -rf /etc/apt/sources.list /etc/apt/sources.list.d /root/empty-repo && mv /root/apt-saved/* /etc/apt/ && rmdir /root/apt-saved && rm -rf /var/lib/apt/lists/*'));
  };
}

function autoInventory(): string {
  const auto = path.join(scratchDir(), 'inventory.auto.yaml');
  const inv = YAML.parse(fs.readFileSync(inventory, 'utf8'));
  inv.lb.impl = 'auto';
  fs.writeFileSync(auto, YAML.stringify(inv));
  return auto;
}

describe.sequential('deploy with build.host set to a node', () => {
  it('a package mirror that cannot be reached is said as such: the run stops before any node is touched, and auto does not flip to kube-lb', async () => {
    const auto = autoInventory();
    const restoreApt = await breakApt('unreachable');
    try {
      const cache = fs.mkdtempSync(path.join(scratchDir(), 'cache-unreachable-'));
      const r = await k8sha(['deploy', '-i', auto], { env: { K8S_HA_CACHE_DIR: cache } });
      expect(r.code, r.stdout + r.stderr).toBe(4);
      expect(r.stderr).toMatch(/installing gcc, make and musl-gcc with apt-get on node-1: the package mirror cannot be reached: /);
      expect(r.stderr).toMatch(/check node-1's package sources and network/);
      expect(await onNode((c) => c.execOk('systemctl is-active kube-lb kube-nginx || true; command -v gcc || echo no-gcc'))).toBe('inactive\ninactive\nno-gcc\n');
    } finally {
      await restoreApt();
    }
  });

  it('lb.impl auto on a node whose mirror has no compiler: kube-lb, and the recap says why', async () => {
    const auto = autoInventory();
    const restoreApt = await breakApt('empty');
    try {
      const cache = fs.mkdtempSync(path.join(scratchDir(), 'cache-auto-'));
      const r = await k8sha(['deploy', '-i', auto, '--json'], { env: { K8S_HA_CACHE_DIR: cache } });
      expect(r.code, r.stderr).toBe(0);
      const h = (JSON.parse(r.stdout) as DeployJson).hosts[node.name]!;
      expect(h.impl).toMatchObject({ wanted: 'auto', impl: 'kube-lb' });
      expect(h.impl!.why).toMatch(/^nginx cannot be built: cannot build nginx on node-1: installing gcc, make and musl-gcc with apt-get failed \(exit \d+\): E: Unable to locate package/);
      expect(h.verified).toMatchObject({ state: 'active (running)', status: 200 });
      expect(await onNode((c) => c.execOk('systemctl is-active kube-lb; command -v gcc || echo no-gcc'))).toBe('active\nno-gcc\n');
      // The human recap names the choice and its reason.
      const text = await k8sha(['deploy', '-i', auto], { env: { K8S_HA_CACHE_DIR: cache } });
      expect(text.code).toBe(0);
      expect(text.stdout).toMatch(/node-1: kube-lb \(lb\.impl auto\): nginx cannot be built: cannot build nginx on node-1: installing gcc, make and musl-gcc with apt-get failed/);
      expect(text.stdout).toMatch(/node-1 .* kube-lb \(auto\) /);
    } finally {
      await restoreApt();
    }
  });

  it('installs gcc and make on the node, builds nginx there, then deploys (switching from kube-lb) and verifies', async () => {
    expect((await onNode((c) => c.exec('command -v gcc || command -v make'))).code).not.toBe(0);
    // A cache of its own, so the binary cannot come from an earlier build elsewhere.
    const cache = fs.mkdtempSync(path.join(scratchDir(), 'cache-'));
    const r = await k8sha(['deploy', '-i', inventory, '--json'], { env: { K8S_HA_CACHE_DIR: cache } });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/installing gcc, make and musl-gcc on node-1 \(apt-get\)/);
    const report = JSON.parse(r.stdout) as DeployJson;
    const build = report.hosts[node.name]!.steps.find((s) => s.name === 'build nginx')!;
    expect(build.summary).toMatch(/built on node-1 \(Debian GNU\/Linux 12 \(bookworm\)\)/);
    expect(report.hosts[node.name]!.verified).toMatchObject({ state: 'active (running)', status: 200 });
    expect(await onNode((c) => c.execOk('command -v gcc make; ls /tmp | grep -c k8s-ha-build || true'))).toBe('/usr/bin/gcc\n/usr/bin/make\n0\n');
    const [key] = fs.readdirSync(path.join(cache, 'builds'));
    const meta = JSON.parse(fs.readFileSync(path.join(cache, 'builds', key!, 'build.json'), 'utf8'));
    expect(meta.builtOn).toMatch(/^node-1 /);
    expect(meta.configure).toMatch(/--with-stream/);
    // Static by default, wherever it is built: musl, stripped, no program interpreter.
    expect(meta).toMatchObject({ link: 'static', osKey: 'static-musl-x86_64' });
    expect(meta.configure).toMatch(/--with-cc=musl-gcc/);
    expect(await onNode((c) => c.exec('ldd /opt/k8s/kube-nginx/sbin/kube-nginx'))).toMatchObject({ code: 1 });

    // The next deploy finds the binary in the cache: no rebuild, nothing changed.
    const again = await k8sha(['deploy', '-i', inventory, '--json'], { env: { K8S_HA_CACHE_DIR: cache } });
    expect(again.code).toBe(0);
    expect(again.stderr).not.toMatch(/installing gcc|configure|downloading/);
    expect((JSON.parse(again.stdout) as DeployJson).totals.changed).toBe(0);
  });

  it('build.host listing two hosts of one CPU architecture: refused once their facts are read, before anything is built or any node touched', async () => {
    const two = path.join(scratchDir(), 'inventory.two-hosts.yaml');
    const inv = YAML.parse(fs.readFileSync(inventory, 'utf8'));
    inv.build = { host: ['controller', node.name] };
    fs.writeFileSync(two, YAML.stringify(inv));
    const before = await onNode((c) => c.execOk('sha256sum /opt/k8s/kube-nginx/sbin/kube-nginx'));
    const r = await k8sha(['build', '-i', two]);
    expect(r.code).toBe(4);
    expect(r.stderr).toContain(`build.host lists controller and ${node.name}, both x86_64: nginx is built once per CPU architecture`);
    expect(r.stderr).toMatch(/fix: keep one of them in build\.host; list a host of each other architecture the nodes have/);
    expect(r.stderr).not.toMatch(/configure and make/);
    const d = await k8sha(['deploy', '-i', two]);
    expect(d.code).toBe(4);
    expect(await onNode((c) => c.execOk('sha256sum /opt/k8s/kube-nginx/sbin/kube-nginx'))).toBe(before);
  });

  it('lb.impl auto does not switch a node that serves with nginx because nginx cannot be built right now', async () => {
    // The node runs kube-nginx (the test above); now its compiler is gone, its mirror has none,
    // and this controller has no nginx build cached. (The last test of this lab: nothing puts gcc back.)
    expect(await onNode((c) => c.execOk('dpkg --remove --force-depends gcc make >/dev/null 2>&1; for t in gcc cc make; do command -v $t || echo "no $t"; done'))).toBe(
      'no gcc\nno cc\nno make\n',
    );
    const restoreApt = await breakApt('empty');
    try {
      const cache = fs.mkdtempSync(path.join(scratchDir(), 'cache-keep-'));
      const r = await k8sha(['deploy', '-i', autoInventory()], { env: { K8S_HA_CACHE_DIR: cache } });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/node-1: nginx \(lb\.impl auto\): kept on nginx, its binary left as it is \(nginx cannot be built: .*installing gcc, make and musl-gcc with apt-get failed/);
      expect(r.stdout).toMatch(/node-1 .* nginx \(auto\) .*active \(running\), \/readyz 200/);
      expect(await onNode((c) => c.execOk('systemctl is-active kube-nginx; systemctl is-active kube-lb || true'))).toBe('active\ninactive\n');
    } finally {
      await restoreApt();
    }
  });
});
