/**
 * kube-lb deployed by `k8s-ha deploy` (lb.impl: kube-lb) on the lab, and failed the ways
 * apiservers fail: /readyz turning red, a stopped container, a hung host. Then a reload
 * with a changed list, a bad config, and the switch both ways between kube-nginx and
 * kube-lb under traffic. Tests run in order; the last one puts every node back on
 * kube-nginx, as the other test files expect.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { pinnedBun } from '../../src/build/kube-lb.js';
import { httpsGet } from '../../src/connect/https-probe.js';
import { SshConnection } from '../../src/connect/ssh.js';
import { k8sha } from '../helpers/cli.js';
import { deployJson, deployWatchingGaps, expectOneShortGap, inventoryVariant } from '../helpers/deploy.js';
import { kubeLbMetrics as metrics, lab, nodeTarget, restoreMasters, withNode } from '../helpers/lab.js';
import { withLoad } from '../helpers/load.js';
import { openWatch, watchesOn } from '../helpers/watch.js';
import { STANDIN_SHUTDOWN_DELAY_MS } from '../../src/lab/images.js';

const KUBE_LB = '/opt/k8s/kube-lb';
/** docs/kube-lb.md, "Switching": each node's longest gap between answered requests during a switch, as the lab tests hold it. */
const SWITCH_TO_KUBE_LB_MS = 1500;
const SWITCH_TO_NGINX_MS = 2500;
/** docs/kube-lb.md, its table: a hung apiserver is marked down and its connections closed within 3 s. */
const FROZEN_CLOSED_MS = 3000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let kubeLbInv: string;
const inventory = () => (kubeLbInv ??= inventoryVariant('kube-lb', (inv) => (inv.lb.impl = 'kube-lb')));

async function master(name: string, action: string): Promise<void> {
  const r = await k8sha(['lab', 'master', '--dir', lab().dir, name, action]);
  if (r.code !== 0) throw new Error(`lab master ${name} ${action}: ${r.stderr}`);
}

/** Which stand-in answers a fresh request through the node's local port. */
async function who(c: SshConnection): Promise<string> {
  const r = await httpsGet(() => c.connectFromHost('127.0.0.1', 8443), { path: '/version', ca: lab().caPem, servername: 'kubernetes', timeoutMs: 5000 });
  expect(r.status).toBe(200);
  return JSON.parse(r.body).standin;
}


/** Units as systemd reports them on each node. */
async function units(node: { name: string; address: string }) {
  return withNode(node, async (c) => {
    const out = await c.exec('systemctl is-active kube-lb kube-nginx; systemctl is-enabled kube-lb kube-nginx');
    const [lbActive, nginxActive, lbEnabled, nginxEnabled] = out.stdout.trim().split('\n');
    const pid = (await c.execOk('systemctl show -p MainPID --value kube-lb')).trim();
    return { lbActive, nginxActive, lbEnabled, nginxEnabled, pid };
  });
}


/** Set once the last test has deployed the lab's inventory and seen every node back on kube-nginx and healthy. */
let backOnNginx = false;

afterAll(async () => {
  // Whatever happened above: every master healthy, every node back on kube-nginx (the last test's
  // deploy did that unless a test failed on the way).
  await restoreMasters();
  if (!backOnNginx) await deployJson(['-i', lab().inventory, '--serial', '100%']);
});

describe.sequential('kube-lb deployed with lb.impl: kube-lb', () => {
  it('switches every node from kube-nginx to kube-lb under traffic; kube-nginx is disabled only once kube-lb is verified', async () => {
    const base = await deployJson(['-i', lab().inventory, '--serial', '100%']);
    expect(base.code, base.stderr).toBe(0);
    // Every node in one batch: each node's hand-over is what is measured (one at a time is roll.test's).
    const { result, reports } = await withLoad(lab().nodes, () => deployWatchingGaps(['-i', inventory(), '--serial', '100%']));
    const { d, gaps } = result;
    expect(d.code, d.stderr).toBe(0);
    for (const n of lab().nodes) {
      const h = d.report.hosts[n.name]!;
      expect(h.impl).toMatchObject({ wanted: 'kube-lb', impl: 'kube-lb' });
      expect(h.batch).toBeGreaterThan(0); // a switch disturbs a running balancer: it rolls
      expect(h.steps.find((s) => s.name === 'service')!.summary).toMatch(/switch from kube-nginx.*disable kube-nginx/);
      expect(h.verified).toMatchObject({ state: 'active (running)', status: 200 });
      expect(await units(n)).toMatchObject({ lbActive: 'active', nginxActive: 'inactive', lbEnabled: 'enabled', nginxEnabled: 'disabled' });
    }
    // The port changed hands on every node: requests through it went unanswered for one short gap, and only then.
    gaps.forEach((g, i) => expectOneShortGap('kube-nginx -> kube-lb', lab().nodes[i]!.name, g, SWITCH_TO_KUBE_LB_MS, reports[i]));

    await withNode(lab().nodes[0]!, async (c) => {
      // One executable, on a node with no Node.js, no Bun and no compiler: the runtime this package pins is inside.
      expect((await c.exec('command -v node nodejs bun gcc')).code).not.toBe(0);
      expect(await c.execOk(`stat -c '%a %U' ${KUBE_LB}/sbin/kube-lb; ${KUBE_LB}/sbin/kube-lb --version`)).toBe(`755 root\nkube-lb 0.1.0 (Bun ${pinnedBun().version})\n`);
      expect(await c.execOk(`${KUBE_LB}/sbin/kube-lb --check-config ${KUBE_LB}/conf/kube-lb.yaml`)).toMatch(/: ok \(4 backends, listen 127\.0\.0\.1:8443\)/);
      const unit = await c.execOk('systemctl cat kube-lb');
      expect(unit).toMatch(/^ExecStartPre=\/opt\/k8s\/kube-lb\/sbin\/kube-lb --check-config \/opt\/k8s\/kube-lb\/conf\/kube-lb\.yaml$/m);
      expect(unit).toMatch(/^ExecReload=\/bin\/kill -HUP \$MAINPID$/m);
      expect(unit).toMatch(/^Restart=always$/m);
      // Started only once it holds the port and has checked every master; descriptors for 8192 connections.
      expect(unit).toMatch(/^ExecStartPost=\/opt\/k8s\/kube-lb\/sbin\/kube-lb --wait-ready \/opt\/k8s\/kube-lb\/conf\/kube-lb\.yaml \$\{MAINPID\}$/m);
      expect((await c.execOk('systemctl show -p LimitNOFILE --value kube-lb')).trim()).toBe('16640');
      // The runtime is compiled in: nothing of it is set on the node.
      expect((await c.execOk('systemctl show -p Environment --value kube-lb')).trim()).toBe('');
      expect(await c.execOk('journalctl -u kube-lb --no-pager -o cat | grep -c "is ready: it holds 127.0.0.1:8443 and has checked every backend" || true')).not.toBe('0\n');
      // Its own user, none of root's capabilities, the system read-only.
      const pid = (await c.execOk('systemctl show -p MainPID --value kube-lb')).trim();
      expect((await c.execOk(`ps -o user= -p ${pid}`)).trim()).toBe('kube-lb');
      const shown = Object.fromEntries(
        (await c.execOk('systemctl show -p User -p NoNewPrivileges -p ProtectSystem -p ProtectHome -p PrivateTmp -p CapabilityBoundingSet kube-lb'))
          .trim()
          .split('\n')
          .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
      );
      expect(shown).toEqual({ User: 'kube-lb', NoNewPrivileges: 'yes', ProtectSystem: 'strict', ProtectHome: 'yes', PrivateTmp: 'yes', CapabilityBoundingSet: '' });
      // Every master checked and up, as its metrics say.
      const m = await metrics(c);
      for (const x of lab().masters) expect(m).toContain(`kube_lb_backend_up{backend="${x.name}",address="${x.address}:6443"} 1`);
    });

    const s = await k8sha(['status', '-i', inventory(), '--json']);
    expect(s.code, s.stderr).toBe(0);
    const status = JSON.parse(s.stdout);
    for (const n of status.nodes) {
      expect(n).toMatchObject({ impl: 'kube-lb', wanted: 'kube-lb', service: 'active (running)', healthy: true, version: `kube-lb 0.1.0 (Bun ${pinnedBun().version})` });
      expect(Object.values(n.drift).every((x) => x === 'ok')).toBe(true);
    }
    // A second deploy changes nothing.
    const again = await deployJson(['-i', inventory()]);
    expect(again.report.totals.changed).toBe(0);
  });

  it('nodes restarted together do not check the apiservers in step, and each checks at its interval', async () => {
    const nodes = lab().nodes;
    const m1 = lab().masters[0]!;
    // The worst case for a herd: every node's kube-lb restarted at the same moment.
    await Promise.all(nodes.map((n) => withNode(n, (c) => c.execOk('systemctl restart kube-lb'))));
    // Then, on every node at once, kube-lb's own record of when its last check of m1 ended, read 160 times 50 ms apart.
    const poll =
      `for i in $(seq 160); do exec 3<>/dev/tcp/127.0.0.1/8444 && printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3 && ` +
      `grep '^kube_lb_backend_last_check_timestamp_seconds{backend="${m1.name}"' <&3; exec 3<&-; sleep 0.05; done | awk '{print $2}' | uniq`;
    const times = await Promise.all(nodes.map((n) => withNode(n, async (c) => (await c.execOk(poll)).trim().split('\n').map(Number).filter((t) => t > 0))));
    for (const [i, t] of times.entries()) {
      const gaps = t.slice(1).map((x, k) => x - t[k]!);
      const mean = gaps.reduce((a, b) => a + b, 0) / gaps.length;
      console.log(`${nodes[i]!.name}: ${t.length} checks of ${m1.name} over ${(t.at(-1)! - t[0]!).toFixed(1)} s, gaps ${gaps.map((g) => g.toFixed(3)).join(' ')}`);
      // The rate matches the 1 s interval (+-20%, plus each check's own few ms)...
      expect(t.length).toBeGreaterThanOrEqual(5);
      expect(mean).toBeGreaterThan(0.8);
      expect(mean).toBeLessThan(1.3);
      // ...and the waits vary: no fixed beat.
      expect(Math.max(...gaps) - Math.min(...gaps)).toBeGreaterThan(0.05);
    }
    // In step, every check of the first node would have one within 20 ms on each other node.
    const near = (list: number[], x: number) => list.some((y) => Math.abs(x - y) < 0.02);
    const inStep = times[0]!.filter((x) => times.slice(1).every((other) => near(other, x))).length;
    console.log(`checks of ${nodes[0]!.name} with one within 20 ms on every other node: ${inStep} of ${times[0]!.length}`);
    expect(inStep / times[0]!.length).toBeLessThan(0.5);
  });

  it('a master whose /readyz turns red: within 3 s no new connection reaches it and its watches are closed', async () => {
    await withNode(lab().nodes[0]!, async (c) => {
      const w = await watchesOn(c, ['master-1', 'master-2']);
      const t0 = Date.now();
      await master('master-1', 'unready');
      try {
        const closedAt = await Promise.race([w['master-1']!.closed, sleep(3000).then(() => 0)]);
        expect(closedAt, 'the watch on the unready master was not closed within 3 s').toBeGreaterThan(0);
        console.log(`unready master-1: its watch closed after ${closedAt - t0} ms`);
        const seen = new Set<string>();
        for (let i = 0; i < 12; i++) seen.add(await who(c));
        expect(seen.has('master-1')).toBe(false);
        expect(seen.size).toBeGreaterThan(1);
        // The healthy master's watch goes on.
        const before = w['master-2']!.events();
        await sleep(1500);
        expect(w['master-2']!.isClosed()).toBe(false);
        expect(w['master-2']!.events()).toBeGreaterThan(before);
        expect(await metrics(c)).toMatch(/kube_lb_backend_up\{backend="master-1",[^}]*\} 0/);
      } finally {
        await master('master-1', 'ready');
        w['master-2']!.close();
      }
      // Back in service once its checks pass again.
      let back = false;
      for (let i = 0; i < 30 && !back; i++) {
        back = /kube_lb_backend_up\{backend="master-1",[^}]*\} 1/.test(await metrics(c));
        if (!back) await sleep(200);
      }
      expect(back).toBe(true);
      const journal = await c.execOk('journalctl -u kube-lb --no-pager -o cat');
      expect(journal).toMatch(/backend master-1 \(\S+\) is DOWN: its health check fails: HTTP 500; no new connections, closing its \d+/);
    });
  });

  it('a master stopped: requests keep being answered by the others, and it is marked down', async () => {
    await withNode(lab().nodes[1]!, async (c) => {
      await master('master-2', 'stop');
      try {
        // Every request succeeds: a refused dial moves on to the next master before the client notices.
        const answers: string[] = [];
        for (let i = 0; i < 12; i++) answers.push(await who(c));
        expect(answers).not.toContain('master-2');
        let down = false;
        for (let i = 0; i < 20 && !down; i++) {
          down = /kube_lb_backend_up\{backend="master-2",[^}]*\} 0/.test(await metrics(c));
          if (!down) await sleep(200);
        }
        expect(down).toBe(true);
      } finally {
        await master('master-2', 'start');
      }
    });
  });

  it("a master shutting down (SIGTERM): out of new connections within 3 s, but what it carries is left to it: its watch ends when the apiserver ends it, cleanly, after its shutdown delay", async () => {
    await withNode(lab().nodes[0]!, async (c) => {
      const w = await watchesOn(c, ['master-1']);
      const t0 = Date.now();
      const stop = master('master-1', 'stop');
      try {
        let down = false;
        for (let i = 0; i < 15 && !down; i++) {
          down = /kube_lb_backend_up\{backend="master-1",[^}]*\} 0/.test(await metrics(c));
          if (!down) await sleep(200);
        }
        expect(down, 'master-1 not marked down within 3 s of SIGTERM').toBe(true);
        const seen = new Set<string>();
        for (let i = 0; i < 8; i++) seen.add(await who(c));
        expect(seen.has('master-1')).toBe(false);
        // Marked down, and still serving its watch: kube-lb has not cut it.
        const before = w['master-1']!.events();
        await sleep(1200);
        expect(Date.now() - t0, 'the check took the whole shutdown delay: nothing was shown').toBeLessThan(STANDIN_SHUTDOWN_DELAY_MS);
        expect(w['master-1']!.isClosed()).toBe(false);
        expect(w['master-1']!.events()).toBeGreaterThan(before);
        const closedAt = await Promise.race([w['master-1']!.closed, sleep(STANDIN_SHUTDOWN_DELAY_MS + 5000).then(() => 0)]);
        expect(closedAt, 'the watch was never ended').toBeGreaterThan(0);
        expect(closedAt - t0).toBeGreaterThanOrEqual(STANDIN_SHUTDOWN_DELAY_MS);
        expect(w['master-1']!.endedCleanly(), 'the watch was cut rather than ended by the apiserver').toBe(true);
        console.log(`master-1 shutting down: marked down, its watch ended by the apiserver ${closedAt - t0} ms after SIGTERM`);
        const journal = await c.execOk('journalctl -u kube-lb --no-pager -o cat');
        expect(journal).toMatch(/backend master-1 \(\S+\) is DOWN: its health check fails: HTTP 500, shutting down; no new connections, its [1-9]\d* open ones left to it to end \(closed after 60 s if it has not\)/);
      } finally {
        await stop;
        await master('master-1', 'start');
      }
    });
    // Back in service on every node before the next test.
    for (const n of lab().nodes) {
      await withNode(n, async (c) => {
        let back = false;
        for (let i = 0; i < 30 && !back; i++) {
          back = /kube_lb_backend_up\{backend="master-1",[^}]*\} 1/.test(await metrics(c));
          if (!back) await sleep(200);
        }
        expect(back, `${n.name}: master-1 not back in service`).toBe(true);
      });
    }
  });

  it('a hung master (frozen: no answer, no FIN, no reset): kube-lb closes its watches so clients reconnect elsewhere', async () => {
    await withNode(lab().nodes[2]!, async (c) => {
      const w = await watchesOn(c, ['master-3']);
      await master('master-3', 'freeze');
      const frozenAt = Date.now();
      try {
        // nginx would leave it open until proxy_timeout (10 min); kube-lb's checks time out instead:
        // at most a check interval (1 s), a check timing out (700 ms), the quick re-check (250 ms) timing out too.
        const closedAt = await Promise.race([w['master-3']!.closed, sleep(FROZEN_CLOSED_MS).then(() => 0)]);
        expect(closedAt, `the watch on the frozen master was not closed within ${FROZEN_CLOSED_MS} ms`).toBeGreaterThan(0);
        console.log(`frozen master-3: its watch closed ${closedAt - frozenAt} ms after the freeze`);
        const seen = new Set<string>();
        for (let i = 0; i < 8; i++) seen.add(await who(c));
        expect(seen.has('master-3')).toBe(false);
      } finally {
        await master('master-3', 'thaw');
      }
    });
  });

  it('a changed master list is a reload (SIGHUP): same process, watches on kept masters flow on, the removed master\'s is closed', async () => {
    const node = lab().nodes[0]!;
    const before = await units(node);
    const c = await SshConnection.open(nodeTarget(node));
    try {
      // Wait until every master is back up after the tests above.
      for (let i = 0; i < 40 && !/kube_lb_backends_up 4/.test(await metrics(c)); i++) await sleep(250);
      const w = await watchesOn(c, ['master-1', 'master-4']);
      const without4 = inventoryVariant('kube-lb-no-master-4', (inv) => {
        inv.lb.impl = 'kube-lb';
        inv.masters = inv.masters.filter((m: { name: string }) => m.name !== 'master-4');
      });
      const d = await deployJson(['-i', without4, '--limit', node.name]);
      expect(d.code, d.stderr).toBe(0);
      const h = d.report.hosts[node.name]!;
      expect(h.steps.find((s) => s.name === 'service')!.summary).toBe('reload');
      // Every request through the port reached a master of the new list (which ones depends on least_conn).
      const verified = h.steps.find((s) => s.name === 'verify')!.summary;
      expect(verified).toMatch(/answered by the new list \(master-[123](, master-[123])*;/);
      expect(verified).not.toContain('master-4');
      expect((await units(node)).pid).toBe(before.pid);
      expect(await Promise.race([w['master-4']!.closed, sleep(3000).then(() => 0)])).toBeGreaterThan(0);
      const events = w['master-1']!.events();
      await sleep(1500);
      expect(w['master-1']!.isClosed()).toBe(false);
      expect(w['master-1']!.events()).toBeGreaterThan(events);
      w['master-1']!.close();
      expect(await c.execOk('journalctl -u kube-lb --no-pager -o cat | tail -n 20')).toMatch(/reloaded \/opt\/k8s\/kube-lb\/conf\/kube-lb\.yaml: master-1, master-2, master-3/);
    } finally {
      c.close();
    }
    // Back to the full list for what follows.
    expect((await deployJson(['-i', inventory(), '--limit', node.name])).code).toBe(0);
  });

  it("the node out of file descriptors: only the clients that hit it are refused, no apiserver is blamed, the watch flows on", async () => {
    await withNode(lab().nodes[0]!, async (c) => {
      const watch = await openWatch(c);
      const pid = (await c.execOk('systemctl show -p MainPID --value kube-lb')).trim();
      const connectErrors = (m: string) => [...m.matchAll(/^kube_lb_backend_connect_errors_total\{[^}]*\} (\d+)$/gm)].reduce((n, x) => n + Number(x[1]), 0);
      const errorsBefore = connectErrors(await metrics(c));
      // Leave kube-lb a few descriptors beyond what it holds now: the connections below run it out.
      // (Its soft limit, lowered as its own user: root here has no CAP_SYS_RESOURCE over another user's process.)
      const inUse = Number((await c.execOk(`ls /proc/${pid}/fd | wc -l`)).trim());
      const soft = Number(/^Max open files\s+(\d+)/m.exec(await c.execOk(`cat /proc/${pid}/limits`))![1]);
      const prlimit = (n: number) => c.execOk(`runuser -u kube-lb -- prlimit --pid ${pid} --nofile=${n}:`);
      // An odd number free: two clients take two each, the third's accept takes the last one and its
      // connect to an apiserver finds none (EMFILE); later clients are dropped at accept; checks find none.
      await prlimit(inUse + 5);
      const sockets: { destroy: () => void }[] = [];
      try {
        for (let i = 0; i < 8; i++) {
          sockets.push(await c.connectFromHost('127.0.0.1', 8443));
          await sleep(100);
        }
        const before = watch.events();
        // Two check intervals and more with no descriptor to spare.
        await sleep(3000);
        expect(watch.events()).toBeGreaterThan(before);
        for (const sk of sockets) sk.destroy();
        await sleep(500);
        const m = await metrics(c);
        const local = [...m.matchAll(/^kube_lb_local_errors_total\{code="(EMFILE|ENFILE)"\} (\d+)$/gm)].reduce((n, x) => n + Number(x[2]), 0);
        expect(local).toBeGreaterThan(0);
        for (const x of lab().masters) expect(m).toContain(`kube_lb_backend_up{backend="${x.name}",address="${x.address}:6443"} 1`);
        // No failed connect was counted against any apiserver.
        expect(connectErrors(m)).toBe(errorsBefore);
        // The watch kubelet would hold kept flowing, and kube-lb kept running.
        expect(watch.isClosed()).toBe(false);
        expect((await c.execOk('systemctl show -p MainPID --value kube-lb')).trim()).toBe(pid);
        expect(await c.execOk('journalctl -u kube-lb -n 50 --no-pager -o cat')).toMatch(/local error (connecting to|checking|accepting a client on) .*EMFILE.*no backend is blamed/);
      } finally {
        for (const sk of sockets) sk.destroy();
        watch.close();
        await prlimit(soft);
      }
    });
  });

  it('another process holding 127.0.0.1:8443: verify fails and says who, rather than passing through it', async () => {
    const node = lab().nodes[2]!;
    const nginx = '/opt/k8s/kube-nginx';
    await withNode(node, async (c) => {
      // kube-lb stopped, and an nginx started by hand (no unit) takes the port: it forwards to the
      // apiservers, so /readyz through the port answers 200 whoever is listening.
      await c.execOk('systemctl stop kube-lb');
      await c.execOk(`${nginx}/sbin/kube-nginx -p ${nginx} -c ${nginx}/conf/kube-nginx.conf`);
      try {
        const r = await deployJson(['-i', inventory(), '--limit', node.name, '--verify-timeout', '5s']);
        expect(r.code).toBe(3);
        const h = r.report.hosts[node.name]!;
        expect(h.status).toBe('failed');
        expect(h.error).toMatch(/^verify: kube-lb is still activating \([a-z-]+\): 127\.0\.0\.1:8443 is held by another process \(pid \d+, kube-nginx\), not by kube-lb/);
        // systemd itself never called it started: it waits for the port (or failed waiting), and no report was green.
        expect((await c.execOk('systemctl show -p ActiveState --value kube-lb')).trim()).toMatch(/^(activating|failed)$/);
        expect(r.report.totals.failed).toBe(1);
      } finally {
        await c.exec(`kill $(cat ${nginx}/logs/kube-nginx.pid)`);
      }
      const again = await deployJson(['-i', inventory(), '--limit', node.name]);
      expect(again.code, again.stderr).toBe(0);
    });
  });

  it('a config kube-lb cannot load is refused by --check-config and by deploy, before any file is swapped', async () => {
    const node = lab().nodes[1]!;
    const before = await units(node);
    const liveSha = () => withNode(node, (c) => c.execOk(`sha256sum ${KUBE_LB}/conf/kube-lb.yaml; ls ${KUBE_LB}/conf`));
    const sha = await liveSha();
    const bad = inventoryVariant('kube-lb-bad-cert', (inv) => {
      inv.lb.impl = 'kube-lb';
      inv.kubeLb = { check: { clientCertFile: '/etc/kubernetes/pki/missing.crt', clientKeyFile: '/etc/kubernetes/pki/missing.key' } };
    });
    const d = await deployJson(['-i', bad, '--limit', node.name]);
    expect(d.code).toBe(3);
    const config = d.report.hosts[node.name]!.steps.find((s) => s.name === 'config')!;
    expect(config.status).toBe('failed');
    expect(config.summary).toMatch(/validation failed, nothing was replaced: kube-lb: .*kube-lb\.yaml\.k8s-ha-new\.\d{8}T\d{6}-[0-9a-f]{6}: active: cannot load the CA or client certificate: ENOENT/);
    expect(d.report.hosts[node.name]!.config).toBe('previous');
    expect(await liveSha()).toBe(sha);
    expect((await units(node)).pid).toBe(before.pid);
    // The same check by hand, as ExecStartPre runs it.
    await withNode(node, async (c) => {
      const r = await c.exec(`printf 'backends: []\\nbalance: fastest\\n' > /tmp/kube-lb-bad.yaml; ${KUBE_LB}/sbin/kube-lb --check-config /tmp/kube-lb-bad.yaml; rc=$?; rm -f /tmp/kube-lb-bad.yaml; exit $rc`);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/kube-lb-bad\.yaml: .*backends: needs at least one backend/);
      expect(r.stderr).toMatch(/balance: /);
      // A bad config put in place by hand and a SIGHUP: refused, the old config serves, and the
      // health endpoint deploy's verify reads no longer vouches for it until a reload is taken.
      const healthz = async () => {
        const s = await c.connectFromHost('127.0.0.1', 8444);
        return new Promise<string>((resolve) => {
          let out = '';
          s.on('data', (b: Buffer) => (out += b.toString()));
          s.on('end', () => resolve(out));
          s.write('GET /healthz?checked HTTP/1.0\r\n\r\n');
        });
      };
      const conf = `${KUBE_LB}/conf/kube-lb.yaml`;
      await c.execOk(`cp ${conf} /tmp/kube-lb-good.yaml && printf 'balance: fastest\n' >> ${conf} && systemctl reload kube-lb`);
      try {
        await sleep(500);
        expect(await healthz()).toMatch(/^HTTP\/1\.1 503 [\s\S]*the last reload was refused: /);
        expect((await units(node)).pid).toBe(before.pid);
      } finally {
        await c.execOk(`cp /tmp/kube-lb-good.yaml ${conf} && rm -f /tmp/kube-lb-good.yaml && systemctl reload kube-lb`);
      }
      await sleep(2500);
      expect(await healthz()).toMatch(/^HTTP\/1\.1 200 /);
    });
  });

  it('a config under which no apiserver passes its checks is not verified, and the node is put back', async () => {
    const node = lab().nodes[2]!;
    const before = await withNode(node, (c) => c.execOk(`sha256sum ${KUBE_LB}/conf/kube-lb.yaml`));
    // Every check gets a 404: kube-lb still carries traffic (panic mode), but it must not pass as healthy.
    const blind = inventoryVariant('kube-lb-blind', (inv) => {
      inv.lb.impl = 'kube-lb';
      inv.kubeLb = { check: { path: '/no-such-path' } };
    });
    // A verify that cannot pass: 6 s is ample for kube-lb's checks (1 s apart) to fail, and the test is not of the deadline.
    const d = await deployJson(['-i', blind, '--limit', node.name, '--verify-timeout', '6s']);
    expect(d.code).toBe(3);
    const h = d.report.hosts[node.name]!;
    expect(h.steps.find((s) => s.name === 'verify')!.summary).toMatch(
      /^kube-lb: its \/healthz on 127\.0\.0\.1:8444 answers 503 \(no healthy backend\): no apiserver passes its health check/,
    );
    expect(h.config).toBe('previous');
    // The live config is the one from before; kube-lb's log shows the new checks had failed.
    const [sha, ...journal] = (await withNode(node, (c) => c.execOk(`sha256sum ${KUBE_LB}/conf/kube-lb.yaml; journalctl -u kube-lb --no-pager -o cat | tail -n 60`))).split('\n');
    expect(sha).toBe(before.trim());
    expect(journal.join('\n')).toMatch(/is DOWN: its health check fails: HTTP 404/);
  });

  it('switches every node back to kube-nginx under traffic; kube-lb is stopped and disabled', async () => {
    const { result, reports } = await withLoad(lab().nodes, () => deployWatchingGaps(['-i', lab().inventory]));
    const { d, gaps } = result;
    expect(d.code, d.stderr).toBe(0);
    for (const n of lab().nodes) {
      const h = d.report.hosts[n.name]!;
      expect(h.impl).toMatchObject({ impl: 'nginx' });
      expect(h.steps.find((s) => s.name === 'service')!.summary).toMatch(/switch from kube-lb.*disable kube-lb/);
      // kube-lb let go of the port at once; it may still be draining its last connections (shutdownTimeout, 1 s).
      let u = await units(n);
      for (let i = 0; i < 25 && u.lbActive === 'deactivating'; i++) {
        await sleep(200);
        u = await units(n);
      }
      expect(u).toMatchObject({ lbActive: 'inactive', nginxActive: 'active', lbEnabled: 'disabled', nginxEnabled: 'enabled' });
    }
    gaps.forEach((g, i) => expectOneShortGap('kube-lb -> kube-nginx', lab().nodes[i]!.name, g, SWITCH_TO_NGINX_MS, reports[i]));
    const s = JSON.parse((await k8sha(['status', '-i', lab().inventory, '--json'])).stdout);
    for (const n of s.nodes) expect(n).toMatchObject({ impl: 'nginx', service: 'active (running)', healthy: true });
    backOnNginx = true;
  });
});
