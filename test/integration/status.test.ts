/**
 * `k8s-ha status` tells the truth: on a healthy lab it never calls a node down because this machine
 * is busy (a probe that runs out of time is "unknown", not evidence), and a master stopped for real
 * is reported down, on definite evidence, from every node.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import os from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { k8sha } from '../helpers/cli.js';
import { deployJson, inventoryVariant } from '../helpers/deploy.js';
import { lab } from '../helpers/lab.js';

interface StatusJson {
  healthy: number;
  down: number;
  unknown: number;
  masters: Record<string, { direct: number; local: number }>;
  nodes: { name: string; health: 'healthy' | 'down' | 'unknown'; masters: { name: string; direct: { status?: number; error?: string; unknown?: string } }[] }[];
  probes: { limit: number; perTarget: number; peak: number; peakPerTarget: number };
}

async function status(): Promise<{ code: number | null; s: StatusJson }> {
  const r = await k8sha(['status', '-i', lab().inventory, '--json']);
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

  // The README's bound: a probe reads at most 64 KiB of an answer. This master's /readyz never ends,
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
});
