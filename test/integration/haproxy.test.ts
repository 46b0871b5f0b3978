/**
 * lb.impl: haproxy on the nodes: haproxy from Debian's package (no compiler, no build), run by its
 * own kube-haproxy.service, with active TLS /readyz checks. Switched from kube-nginx and back under
 * traffic, like the nginx <-> kube-lb hand-over. The last test puts every node back on kube-nginx,
 * as the other test files expect.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { httpsGet } from '../../src/connect/https-probe.js';
import { k8sha } from '../helpers/cli.js';
import { deployJson, deployWatchingGaps, expectOneShortGap, inventoryVariant } from '../helpers/deploy.js';
import { lab, withNode } from '../helpers/lab.js';
import { withLoad } from '../helpers/load.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/**
 * docs/haproxy.md: either way one balancer lets go of the port and the other starts on
 * it, as in a switch to nginx; each node's longest gap between answered requests, as the lab tests hold it.
 */
const SWITCH_MS = 2500;
let haproxyInv: string;
const inventory = () => (haproxyInv ??= inventoryVariant('haproxy', (inv) => (inv.lb.impl = 'haproxy')));


async function units(node: { name: string; address: string }) {
  return withNode(node, async (c) => {
    const out = await c.exec('systemctl is-active kube-haproxy kube-nginx; systemctl is-enabled kube-haproxy kube-nginx');
    const [haproxyActive, nginxActive, haproxyEnabled, nginxEnabled] = out.stdout.trim().split('\n');
    return { haproxyActive, nginxActive, haproxyEnabled, nginxEnabled };
  });
}

/** Set once the last test has deployed the lab's inventory and seen every node back on kube-nginx. */
let backOnNginx = false;

afterAll(async () => {
  // Only when a test failed on the way: otherwise the last test's deploy already left every node as the other files expect.
  if (!backOnNginx) await deployJson(['-i', lab().inventory, '--serial', '100%']);
});

describe.sequential('lb.impl: haproxy on the nodes', () => {
  it('switches every node from kube-nginx to kube-haproxy under traffic, verified through 127.0.0.1:8443', async () => {
    const base = await deployJson(['-i', lab().inventory, '--serial', '100%']);
    expect(base.code, base.stderr).toBe(0);
    const { result, reports } = await withLoad(lab().nodes, () => deployWatchingGaps(['-i', inventory(), '--serial', '100%']));
    const { d, gaps } = result;
    expect(d.code, d.stderr).toBe(0);
    for (const n of lab().nodes) {
      const h = d.report.hosts[n.name]!;
      expect(h.impl).toMatchObject({ wanted: 'haproxy', impl: 'haproxy' });
      expect(h.steps.find((s) => s.name === 'service')!.summary).toMatch(/switch from kube-nginx.*disable kube-nginx/);
      expect(h.verified).toMatchObject({ state: 'active (running)', status: 200 });
      expect(await units(n)).toEqual({ haproxyActive: 'active', nginxActive: 'inactive', haproxyEnabled: 'enabled', nginxEnabled: 'disabled' });
    }
    // nginx lets go, haproxy starts the moment the port is free: one short gap, the only time requests went unanswered.
    gaps.forEach((g, i) => expectOneShortGap('kube-nginx -> kube-haproxy', lab().nodes[i]!.name, g, SWITCH_MS, reports[i]));

    await withNode(lab().nodes[0]!, async (c) => {
      // From the node's own packages: no compiler on the node, none needed.
      expect((await c.exec('command -v gcc')).code).not.toBe(0);
      const unit = await c.execOk('systemctl cat kube-haproxy');
      expect(unit).toMatch(/^ExecStart=\/usr\/sbin\/haproxy -Ws -f \$CONFIG -p \$PIDFILE$/m);
      expect(unit).toMatch(/^Type=notify$/m);
      expect(await c.execOk('haproxy -c -q -f /etc/haproxy/kube-haproxy.cfg && echo valid')).toBe('valid\n');
      const cfg = await c.execOk('cat /etc/haproxy/kube-haproxy.cfg');
      expect(cfg).toContain('bind 127.0.0.1:8443');
      expect(cfg).toMatch(/check check-ssl verify required ca-file \/etc\/haproxy\/kube-haproxy-ca\.crt/);
      for (const m of lab().masters) expect(cfg).toContain(`server ${m.name} ${m.address}:6443`);
    });

    const s = await k8sha(['status', '-i', inventory(), '--json']);
    expect(s.code, s.stderr).toBe(0);
    for (const n of JSON.parse(s.stdout).nodes) {
      expect(n).toMatchObject({ impl: 'haproxy', wanted: 'haproxy', service: 'active (running)', healthy: true });
      // The version the node's own package has (2.6 on Debian 12, 3.0 on 13).
      const own = (await withNode(lab().nodes.find((x) => x.name === n.name)!, (c) => c.execOk('haproxy -v | head -n1'))).match(/version (\S+)/)![1];
      expect(n.version).toBe(`haproxy/${own}`);
      expect(Object.values(n.drift).every((x) => x === 'ok')).toBe(true);
    }
    const again = await deployJson(['-i', inventory()]);
    expect(again.report.totals.changed).toBe(0);
  });

  it('a master made unready is taken out by haproxy\'s own checks: requests through every node keep being answered', async () => {
    await k8sha(['lab', 'master', '--dir', lab().dir, 'master-2', 'unready']);
    try {
      // fall 2 at inter 2s / fastinter 1s: out within about 3 s.
      await sleep(4000);
      const seen = await withNode(lab().nodes[0]!, async (c) => {
        const by = new Set<string>();
        for (let i = 0; i < 12; i++) {
          const r = await httpsGet(() => c.connectFromHost('127.0.0.1', 8443), { path: '/version', ca: lab().caPem, servername: 'kubernetes', timeoutMs: 5000 });
          expect(r.status).toBe(200);
          by.add(JSON.parse(r.body).standin);
        }
        return by;
      });
      expect(seen.has('master-2')).toBe(false);
      expect(seen.size).toBeGreaterThan(1);
    } finally {
      await k8sha(['lab', 'master', '--dir', lab().dir, 'master-2', 'ready']);
    }
  });

  it('switches every node back to kube-nginx under traffic; kube-haproxy is stopped and disabled', async () => {
    const { d, gaps } = await deployWatchingGaps(['-i', lab().inventory, '--serial', '100%']);
    expect(d.code, d.stderr).toBe(0);
    for (const n of lab().nodes) {
      expect(d.report.hosts[n.name]!.steps.find((s) => s.name === 'service')!.summary).toMatch(/switch from kube-haproxy.*disable kube-haproxy/);
      expect(await units(n)).toEqual({ haproxyActive: 'inactive', nginxActive: 'active', haproxyEnabled: 'disabled', nginxEnabled: 'enabled' });
    }
    gaps.forEach((g, i) => expectOneShortGap('kube-haproxy -> kube-nginx', lab().nodes[i]!.name, g, SWITCH_MS));
    backOnNginx = true;
  });
});
