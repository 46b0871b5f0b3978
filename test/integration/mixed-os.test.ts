/**
 * One static nginx for nodes of different Debian releases: a lab of its own whose node-1 runs
 * bookworm (glibc 2.36) and node-2 bullseye (glibc 2.31), as clusters built by hand over the years
 * do. The binary is built once on this machine (bookworm) and must run on both.
 */
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SshConnection } from '../../src/connect/ssh.js';
import { k8sha, ROOT } from '../helpers/cli.js';
import { deployJson } from '../helpers/deploy.js';
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
});
