/**
 * `k8s-ha status` tells the truth: on a healthy lab it never calls a node down because this machine
 * is busy (a probe that runs out of time is "unknown", not evidence), and a master stopped for real
 * is reported down, on definite evidence, from every node.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import os from 'node:os';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { k8sha } from '../helpers/cli.js';
import { deployJson, inventoryVariant } from '../helpers/deploy.js';
import { lab, withNode } from '../helpers/lab.js';
import { httpGetOnHost } from '../../src/engine/verify.js';
import type { SshConnection } from '../../src/connect/ssh.js';
import type { SshCounts } from '../../src/connect/counts.js';

interface StatusJson {
  healthy: number;
  down: number;
  unknown: number;
  masters: Record<string, { direct: number; local: number }>;
  nodes: {
    name: string;
    health: 'healthy' | 'down' | 'unknown';
    masters: { name: string; direct: { status?: number; error?: string; unknown?: string } }[];
    connections?: { active: number; reading: number; writing: number; waiting: number } | 'unknown';
    connectionsError?: string;
    ssh: SshCounts;
  }[];
  probes: { limit: number; perTarget: number; peak: number; peakPerTarget: number; retried: number };
  ssh: SshCounts & { controllerCpuMs: number };
}

async function status(inventory = lab().inventory, ...args: string[]): Promise<{ code: number | null; s: StatusJson }> {
  const r = await k8sha(['status', '-i', inventory, '--json', ...args]);
  return { code: r.code, s: JSON.parse(r.stdout) };
}

beforeAll(async () => {
  const r = await deployJson(['-i', lab().inventory, '--serial', '100%']);
  expect(r.code, r.stderr).toBe(0);
});

describe('status', () => {
  it('on a healthy lab: every node healthy, exit 0, probes within their bounds', async () => {
    const { code, s } = await status();
    expect(code).toBe(0);
    expect([s.healthy, s.down, s.unknown]).toEqual([lab().nodes.length, 0, 0]);
    expect(s.probes.peak).toBeLessThanOrEqual(s.probes.limit);
    expect(s.probes.peakPerTarget).toBeLessThanOrEqual(s.probes.perTarget);
    // What it cost each node, as docs/deploy.md says: one login, one command (the facts with the lock probe),
    // and a channel and a TLS handshake for each probe: every master directly, and as many through
    // 127.0.0.1:8443 (at least 2).
    const masters = lab().masters.length;
    const probes = masters + Math.max(2, masters);
    const sum = { logins: 0, execs: 0, channels: 0, tlsFull: 0, tlsResumed: 0, bytesOut: 0, bytesIn: 0 };
    for (const n of s.nodes) {
      expect({ logins: n.ssh.logins, execs: n.ssh.execs }, n.name).toEqual({ logins: 1, execs: 1 });
      // A probe retried after a timeout opens one channel more.
      expect(n.ssh.channels - n.ssh.execs, n.name).toBeGreaterThanOrEqual(probes);
      expect(n.ssh.channels - n.ssh.execs, n.name).toBeLessThanOrEqual(probes + s.probes.retried);
      expect(n.ssh.tlsFull + n.ssh.tlsResumed, n.name).toBeGreaterThanOrEqual(probes);
      expect(n.ssh.tlsFull + n.ssh.tlsResumed, n.name).toBeLessThanOrEqual(probes + s.probes.retried);
      for (const k of Object.keys(sum) as (keyof typeof sum)[]) sum[k] += n.ssh[k];
    }
    expect(s.ssh).toMatchObject(sum);
    // Each master's TLS session is made once for the run, and every other node's probe of it resumes it.
    expect(s.ssh.tlsResumed).toBeGreaterThanOrEqual((s.nodes.length - 1) * masters);
  });

  describe('with this machine deliberately loaded', () => {
    let hogs: ChildProcess[] = [];
    beforeAll(() => {
      // One busy loop per core, for as long as the runs below take.
      hogs = os.cpus().map(() => spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }));
    });
    afterAll(() => hogs.forEach((h) => h.kill('SIGKILL')));

    it('never calls a node down: each is healthy or unknown, and the exit says which (0 or 6, never 3)', async () => {
      for (let i = 0; i < 3; i++) {
        const { code, s } = await status();
        expect(s.down).toBe(0);
        for (const n of s.nodes) expect(['healthy', 'unknown']).toContain(n.health);
        expect(code).toBe(s.unknown ? 6 : 0);
      }
    });
  });

  describe('a master whose apiserver is gone (the host up: connections refused)', () => {
    afterAll(async () => {
      await k8sha(['lab', 'master', 'master-2', 'recover', '--dir', lab().dir]);
    });

    it('is down from every node (definite, not unknown); the nodes stay healthy through the others', async () => {
      const crash = await k8sha(['lab', 'master', 'master-2', 'crash', '--dir', lab().dir]);
      expect(crash.code, crash.stderr).toBe(0);
      const { code, s } = await status();
      for (const n of s.nodes) {
        const m2 = n.masters.find((m) => m.name === 'master-2')!;
        expect([n.name, m2.direct.status, m2.direct.unknown, m2.direct.error]).toEqual([n.name, undefined, undefined, expect.stringMatching(/ECONNREFUSED|refused/i)]);
        expect(n.health).toBe('healthy');
      }
      expect(code).toBe(0);
      const table = await k8sha(['status', '-i', lab().inventory]);
      expect(table.stdout).toMatch(new RegExp(`master-2: 0/${lab().nodes.length} nodes reach it directly`));
    });
  });

  // A hung host: frozen, it answers nothing and refuses nothing. (A stopped container is not a silence:
  // once ARP for it fails, its neighbours get "No route to host", a definite answer.)
  describe('a master whose host hangs (frozen: nothing answers, nothing refuses)', () => {
    afterAll(async () => {
      await k8sha(['lab', 'master', 'master-2', 'thaw', '--dir', lab().dir]);
    });

    it('is unknown from every node, never down: a silence is no evidence; the nodes stay healthy through the others', async () => {
      const freeze = await k8sha(['lab', 'master', 'master-2', 'freeze', '--dir', lab().dir]);
      expect(freeze.code, freeze.stderr).toBe(0);
      // The table and --json side by side: each waits out the same probe deadlines.
      const [{ code, s }, table] = await Promise.all([status(), k8sha(['status', '-i', lab().inventory])]);
      for (const n of s.nodes) {
        const m2 = n.masters.find((m) => m.name === 'master-2')!;
        expect([n.name, m2.direct.status, m2.direct.error, m2.direct.unknown]).toEqual([n.name, undefined, undefined, 'timed out after 8 s (2 tries)']);
        expect(n.health).toBe('healthy');
      }
      expect(code).toBe(0);
      expect(table.stdout).toContain(`master-2: ${lab().nodes.length} nodes could not tell whether they reach it directly (timed out twice)`);
    });
  });

  // docs/security.md's bound: a probe reads at most 64 KiB of an answer. This master's /readyz never ends,
  // so a probe that read it whole would run out of time (unknown) rather than answer.
  describe('a master whose /readyz answers 200 and a body that never ends', () => {
    afterAll(async () => {
      await k8sha(['lab', 'master', 'master-2', 'ready', '--dir', lab().dir]);
    });

    it('is not counted ready: status says why from every node, having stopped at 64 KiB; verify says the same and puts the node back', async () => {
      const flood = await k8sha(['lab', 'master', 'master-2', 'readyz-flood', '--dir', lab().dir]);
      expect(flood.code, flood.stderr).toBe(0);
      const oversized = /^GET \/readyz answered HTTP 200 from master-2 with more than 64 KiB: not a health answer, stopped reading there$/;
      const { code, s } = await status();
      for (const n of s.nodes) {
        const m2 = n.masters.find((m) => m.name === 'master-2')!;
        expect([n.name, m2.direct.status, m2.direct.unknown, m2.direct.error]).toEqual([n.name, undefined, undefined, expect.stringMatching(oversized)]);
        expect(n.health).toBe('healthy');
      }
      expect(s.masters['master-2']!.direct).toBe(0);
      expect(code).toBe(0);
      const table = await k8sha(['status', '-i', lab().inventory]);
      expect(table.stdout).toContain(`master-2: 0/${lab().nodes.length} nodes reach it directly`);
      expect(table.stdout).toContain(`master-2: GET /readyz answered HTTP 200 from master-2 with more than 64 KiB: not a health answer, stopped reading there (seen from ${lab().nodes.length} nodes)`);

      // A node whose only apiserver is that master: its balancer answers, but verify counts nothing as ready.
      const node = lab().nodes[0]!.name;
      const only2 = inventoryVariant('only-master-2', (inv) => (inv.masters = inv.masters.filter((m: { name: string }) => m.name === 'master-2')));
      const d = await deployJson(['-i', only2, '--limit', node, '--verify-timeout', '5s']);
      expect(d.code, d.stderr).toBe(3);
      const h = d.report.hosts[node]!;
      expect([h.status, h.config]).toEqual(['failed', 'previous']);
      expect(h.steps.find((x) => x.name === 'verify')!.summary).toMatch(/GET \/readyz answered HTTP 200 from master-2 with more than 64 KiB: not a health answer/);
    });
  });

  // nginx.statusListen: nginx's own /healthz and /stub_status on a node, then back to the plain build.
  describe('nginx.statusListen on a node', () => {
    const node = () => lab().nodes[0]!;
    const binary = '/opt/k8s/kube-nginx/sbin/kube-nginx';
    const onNode = (c: SshConnection) =>
      c.execOk(`sha256sum ${binary} | cut -d' ' -f1; ${binary} -V 2>&1 | tail -n 1; grep -c '^http {' /opt/k8s/kube-nginx/conf/kube-nginx.conf || true`).then((o) => {
        const [sha, configure, http] = o.trim().split('\n');
        return { sha, configure: configure!, http: Number(http) };
      });
    afterAll(async () => {
      // The lab's default inventory on every node, whatever happened above.
      await deployJson(['-i', lab().inventory, '--limit', node().name]);
    });

    it('serves /healthz and /stub_status (else 404) from a build with the HTTP core and stub_status only; status counts a held connection; without the field, the plain build again', async () => {
      const name = node().name;
      const withStatus = inventoryVariant('status-port', (inv) => (inv.nginx.statusListen = '127.0.0.1:8081'));
      const plain = await withNode(node(), onNode);
      expect(plain.configure).toContain('--without-http ');

      const d = await deployJson(['-i', withStatus, '--limit', name]);
      expect(d.code, d.stderr).toBe(0);
      const held: tls.TLSSocket[] = [];
      try {
        await withNode(node(), async (c) => {
          const built = await onNode(c);
          expect(built.sha).not.toBe(plain.sha);
          expect(built.configure).toContain('--with-http_stub_status_module');
          expect(built.configure).toContain('--without-http_rewrite_module');
          expect(built.configure).not.toContain('--without-http ');
          expect(built.http).toBe(1);
          const healthz = await httpGetOnHost(c, '127.0.0.1:8081', '/healthz', 5000);
          expect([healthz.status, healthz.body]).toEqual([200, expect.stringMatching(/^Active connections: \d+/)]);
          const stub = await httpGetOnHost(c, '127.0.0.1:8081', '/stub_status', 5000);
          expect([stub.status, stub.body]).toEqual([200, expect.stringMatching(/^Active connections: \d+\s+server accepts handled requests/)]);
          for (const path of ['/', '/index.html', '/healthz/x']) expect([path, (await httpGetOnHost(c, '127.0.0.1:8081', path, 5000)).status]).toEqual([path, 404]);

          // Two clients through the balancer, each past its TLS handshake with an apiserver, held open.
          for (let i = 0; i < 2; i++) {
            const socket = await c.connectFromHost('127.0.0.1', 8443);
            const t = tls.connect({ socket: socket as never, servername: 'kubernetes', ca: lab().caPem });
            held.push(t);
            await new Promise<void>((resolve, reject) => t.once('secureConnect', () => resolve()).once('error', reject));
          }
          const { s } = await status(withStatus, '--limit', name);
          const conns = s.nodes[0]!.connections;
          // The two held, and status's own request.
          expect(conns, s.nodes[0]!.connectionsError).toEqual(expect.objectContaining({ active: expect.any(Number), writing: expect.any(Number) }));
          expect((conns as { active: number }).active).toBeGreaterThanOrEqual(3);
          const table = await k8sha(['status', '-i', withStatus, '--limit', name]);
          expect(table.stdout).toMatch(/LISTEN\s+CONNS/);
        });
      } finally {
        for (const t of held) t.destroy();
      }

      const back = await deployJson(['-i', lab().inventory, '--limit', name]);
      expect(back.code, back.stderr).toBe(0);
      await withNode(node(), async (c) => {
        expect(await onNode(c)).toEqual(plain);
        expect((await httpGetOnHost(c, '127.0.0.1:8081', '/healthz', 5000)).status).toBe(0);
      });
      // Asked for connections where the port is not served: unknown and why, never a number.
      const { s } = await status(withStatus, '--limit', name);
      expect([s.nodes[0]!.connections, s.nodes[0]!.connectionsError]).toEqual(['unknown', expect.stringMatching(/^GET http:\/\/127\.0\.0\.1:8081\/stub_status: .*Connection refused/i)]);
    });
  });
});
