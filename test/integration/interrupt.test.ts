/**
 * A deploy an operator can trust at 2 a.m.: Ctrl-C, a killed controller, a colleague's run at the
 * same time, and --check that touches nothing. Checked on the nodes themselves: the config file,
 * systemd's view, the journal and the leftovers, and traffic through 127.0.0.1:8443.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../src/util/exec.js';
import { BIN, k8sha, startK8sha } from '../helpers/cli.js';
import { deployJson, inventoryVariant, type DeployJson } from '../helpers/deploy.js';
import { lab, scratchDir, withNode } from '../helpers/lab.js';

type Node = { name: string; address: string };

interface NodeState {
  config: string;
  active: string;
  leftovers: string;
  journal: string;
  enabled: string;
}

/** What an operator would look at on a node after a run. */
async function nodeState(n: Node): Promise<NodeState> {
  return withNode(n, async (c) => {
    const out = await c.execOk(
      'echo "config=$(sha256sum /opt/k8s/kube-nginx/conf/kube-nginx.conf 2>/dev/null | cut -c1-16)"; ' +
        'echo "active=$(systemctl is-active kube-nginx) $(systemctl is-active kube-lb)"; ' +
        'echo "enabled=$(systemctl is-enabled kube-nginx 2>/dev/null) $(systemctl is-enabled kube-lb 2>/dev/null)"; ' +
        'echo "leftovers=$(find /opt/k8s /etc/systemd/system \\( -name "*.k8s-ha-new*" -o -name "*.k8s-ha-prev*" \\) 2>/dev/null | tr "\\n" " ")"; ' +
        'echo "journal=$(cat /var/lib/k8s-ha/journal/state 2>/dev/null)"',
    );
    const kv = Object.fromEntries(out.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1).trim()]));
    return kv as unknown as NodeState;
  });
}

const nodes = () => lab().nodes as Node[];

/** Masters that exist but refuse: nginx -t passes, and verify can never succeed. */
function refusingInventory(): string {
  return inventoryVariant('refusing', (inv) => {
    inv.masters = inv.masters.slice(0, 2).map((m: { name: string }, i: number) => ({ ...m, name: `refusing-${i + 1}`, port: 6999 }));
  });
}

/**
 * SIGKILL the CLI while node-1 verifies: the named apiservers are hung for the moment (frozen),
 * so verify is still waiting when the controller dies, after the node-side commit completed.
 */
async function killWhileVerifying(inventory: string, hung: string[]) {
  for (const m of hung) expect((await k8sha(['lab', 'master', '--dir', lab().dir, m, 'freeze'])).code).toBe(0);
  try {
    const run = startK8sha(['deploy', '-i', inventory, '--serial', '1']);
    await run.waitFor(/node-1: verifying/, 120_000);
    run.signal('SIGKILL');
    await run.done;
  } finally {
    for (const m of hung) await k8sha(['lab', 'master', '--dir', lab().dir, m, 'thaw']);
  }
}

async function healthy(): Promise<Record<string, boolean>> {
  const r = await k8sha(['status', '-i', lab().inventory, '--json']);
  return Object.fromEntries(JSON.parse(r.stdout).nodes.map((n: { name: string; healthy: boolean }) => [n.name, n.healthy]));
}

describe.sequential('interrupting a deploy', () => {
  let baseline: Record<string, NodeState>;

  beforeAll(async () => {
    const r = await deployJson(['-i', lab().inventory, '--serial', '100%']);
    expect(r.code, r.stderr).toBe(0);
    baseline = Object.fromEntries(await Promise.all(nodes().map(async (n) => [n.name, await nodeState(n)] as const)));
  });

  // Ctrl-C, and SIGTERM as systemd, a CI runner or `kill` sends it: handled alike.
  it.each(['SIGINT', 'SIGTERM'] as const)('%s while node-1 verifies a config that cannot work: exit 130, node-1 restored and serving, the others untouched, nothing left behind', async (sig) => {
    const run = startK8sha(['deploy', '-i', refusingInventory(), '--serial', '1', '--max-fail-percent', '100', '--verify-timeout', '5s', '--json']);
    await run.waitFor(/node-1: verifying/);
    await sleep(500);
    run.signal(sig);
    const r = await run.done;
    expect(r.code).toBe(130);
    expect(r.stderr).toContain(`stopping (${sig}): finishing node-1 (verifying); no new nodes will start; press Ctrl-C again to abort now`);
    const report = JSON.parse(r.stdout) as DeployJson;
    expect(report.interrupted).toEqual({ signal: sig });
    expect(report.hosts['node-1']).toMatchObject({ status: 'failed', config: 'previous', rollback: { ok: true } });
    for (const n of ['node-2', 'node-3']) {
      expect(report.hosts[n]!.status).toBe('skipped');
      expect(report.hosts[n]!.error).toContain(`interrupted (${sig})`);
    }
    for (const n of nodes()) expect(await nodeState(n)).toEqual(baseline[n.name]);
    expect(await healthy()).toEqual({ 'node-1': true, 'node-2': true, 'node-3': true });
  });

  it('in a terminal (the live task list), Ctrl-C is handled the same way: exit 130, node-1 restored', async () => {
    const refusing = refusingInventory();
    // A pseudo-terminal, and no CI variable, so the live renderer runs as it does for a person.
    const cmd = `stty cols 120 rows 40; env -u CI TERM=xterm-256color ${process.execPath} ${BIN} deploy -i ${refusing} --serial 1 --verify-timeout 6s; echo "EXIT=$?"`;
    const child = spawn('script', ['-qec', cmd, '/dev/null'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b) => (out += b));
    const closed = new Promise((r) => child.on('close', r));
    for (let i = 0; i < 300 && !/node-1: verifying/.test(out); i++) await sleep(100);
    expect(out).toMatch(/node-1: verifying/);
    // Ctrl-C's SIGINT to the CLI itself (anchored: the script and sh wrappers carry the same words).
    await run('pkill', ['-INT', '-f', `^${process.execPath} ${BIN} deploy -i ${refusing}`]);
    await closed;
    const text = out.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '');
    expect(text).toMatch(/EXIT=130/);
    expect(text).toMatch(/INTERRUPTED \(SIGINT\)/);
    for (const n of nodes()) expect(await nodeState(n)).toEqual(baseline[n.name]);
  });

  it('Ctrl-C twice: leaves at once naming node-1 as unknown; the same deploy then puts node-1 back', async () => {
    const refusing = refusingInventory();
    const run = startK8sha(['deploy', '-i', refusing, '--serial', '1', '--verify-timeout', '20s']);
    await run.waitFor(/node-1: verifying/);
    run.signal('SIGINT');
    await run.waitFor(/stopping \(SIGINT\)/);
    const t = Date.now();
    run.signal('SIGINT');
    const r = await run.done;
    expect(Date.now() - t).toBeLessThan(5000);
    expect(r.code).toBe(130);
    expect(r.stderr).toMatch(/state unknown on: node-1 \(was verifying\)/);
    expect(r.stderr).toContain(`repair with: k8s-ha deploy -i ${refusing} --serial 1 --verify-timeout 20s`);
    // Left mid-verify: node-1 runs the unverified config, and its journal says so.
    const n1 = await nodeState(nodes()[0]!);
    expect(n1.journal).toBe('committed');
    expect(n1.config).not.toBe(baseline['node-1']!.config);

    // The same (bad) inventory again: node-1's unfinished run is verified first, fails, and is restored;
    // then this run's own attempt fails verify and is restored too.
    const again = await deployJson(['-i', refusing, '--serial', '1', '--verify-timeout', '3s']);
    expect(again.code).toBe(3);
    const h1 = again.report.hosts['node-1']!;
    expect(h1.recovered).toMatch(/was never verified and fails now .*previous files restored, serving again/);
    expect(h1).toMatchObject({ status: 'failed', config: 'previous', rollback: { ok: true } });
    for (const n of nodes()) expect(await nodeState(n)).toEqual(baseline[n.name]);
  });

  it('SIGKILL right after node-1 starts committing: node-1 ends on its old config or its new one, never in between; the next run converges', async () => {
    const two = inventoryVariant('two-masters', (inv) => {
      inv.masters = inv.masters.slice(0, 2);
    });
    const run = startK8sha(['deploy', '-i', two, '--serial', '1']);
    await run.waitFor(/node-1: committing/);
    run.signal('SIGKILL');
    expect((await run.done).code).toBe(137);
    // Whatever the node-side script was doing runs to its end (or never started): once sshd has had a
    // moment to start one sent as the controller died, it holds the apply lock while it runs, so the
    // state is read once nothing holds it.
    await sleep(1000);
    await withNode(nodes()[0]!, (c) => c.execOk('flock -w 60 /var/lib/k8s-ha/apply.lock true'));
    const n1 = await nodeState(nodes()[0]!);
    if (n1.config === baseline['node-1']!.config) expect([n1.journal, n1.leftovers]).toEqual(['', '']);
    else expect(n1.journal).toBe('committed');
    expect(n1.active).toBe('active inactive');
    expect((await nodeState(nodes()[1]!)).config).toBe(baseline['node-2']!.config);

    const again = await deployJson(['-i', two, '--serial', '1']);
    expect(again.code, again.stderr).toBe(0);
    const configs = new Set<string>();
    for (const n of nodes()) {
      const s = await nodeState(n);
      configs.add(s.config);
      expect([s.active, s.journal, s.leftovers]).toEqual(['active inactive', '', '']);
    }
    expect(configs.size).toBe(1);
    expect([...configs][0]).not.toBe(baseline['node-1']!.config);
    expect((await deployJson(['-i', lab().inventory])).code).toBe(0);
  });

  it('killed while verifying a good change (its apiservers hung for a moment): the next run verifies it now and keeps it', async () => {
    const two = inventoryVariant('two-masters', (inv) => {
      inv.masters = inv.masters.slice(0, 2);
    });
    await killWhileVerifying(two, lab().masters.slice(0, 2).map((m) => m.name));
    // The node-side commit was complete: new config live, never verified, and the journal says so.
    const n1 = await nodeState(nodes()[0]!);
    expect(n1.journal).toBe('committed');
    expect(n1.config).not.toBe(baseline['node-1']!.config);

    const again = await deployJson(['-i', two, '--serial', '1']);
    expect(again.code, again.stderr).toBe(0);
    const h1 = again.report.hosts['node-1']!;
    expect(h1.recovered).toMatch(/was never verified: verified now and kept/);
    expect(h1.status).toBe('ok');
    expect(again.report.hosts['node-2']!.status).toBe('changed');
    for (const n of nodes()) expect(await nodeState(n)).toMatchObject({ config: n1.config, journal: '', leftovers: '' });
    expect((await deployJson(['-i', lab().inventory])).code).toBe(0);
  });

  it('SIGKILL during a switch from nginx to kube-lb: never both units enabled; the next run finishes the switch', async () => {
    const kubeLb = inventoryVariant('kube-lb-switch', (inv) => {
      inv.lb.impl = 'kube-lb';
    });
    await killWhileVerifying(kubeLb, lab().masters.map((m) => m.name));
    // kube-lb serves on node-1, but only the last verified balancer starts at boot.
    const n1 = await nodeState(nodes()[0]!);
    expect(n1.journal).toBe('committed');
    expect(n1.active).toBe('inactive active');
    expect(n1.enabled).toBe('enabled disabled');

    const again = await deployJson(['-i', kubeLb, '--serial', '1']);
    expect(again.code, again.stderr).toBe(0);
    expect(again.report.hosts['node-1']!.recovered).toMatch(/verified now and kept/);
    for (const n of nodes()) {
      const s = await nodeState(n);
      expect([s.active, s.enabled, s.journal, s.leftovers]).toEqual(['inactive active', 'disabled enabled', '', '']);
    }
    const back = await deployJson(['-i', lab().inventory]);
    expect(back.code, back.stderr).toBe(0);
    for (const n of nodes()) expect((await nodeState(n)).enabled).toBe('enabled disabled');
  });
});

describe.sequential('two runs at once', () => {
  it('each node is worked on by exactly one run; the other reports who holds it and does not touch it', async () => {
    const a = inventoryVariant('a', (inv) => {
      inv.masters = inv.masters.filter((m: { name: string }) => m.name !== 'master-4');
    });
    const b = inventoryVariant('b', (inv) => {
      inv.masters = inv.masters.filter((m: { name: string }) => m.name !== 'master-1');
    });
    const [ra, rb] = await Promise.all([deployJson(['-i', a]), deployJson(['-i', b])]);
    for (const n of nodes()) {
      const ha = ra.report.hosts[n.name]!;
      const hb = rb.report.hosts[n.name]!;
      const statuses = [ha.status, hb.status].sort();
      expect(statuses[1], `${n.name}: ${ha.status} / ${hb.status}`).toBe('locked');
      expect(['changed', 'ok']).toContain(statuses[0]);
      const loser = ha.status === 'locked' ? ha : hb;
      expect(loser.lockedBy).toMatch(/^\S+@\S+ \(pid \d+\) since \d{4}-\d\d-\d\dT.*, run \d{8}T\d{6}-[0-9a-f]{6}$/);
      // The node's config is exactly the winner's inventory.
      const conf = await withNode(n, (c) => c.execOk('cat /opt/k8s/kube-nginx/conf/kube-nginx.conf'));
      const winner = ha.status === 'locked' ? 'b' : 'a';
      expect(conf.includes(lab().masters[0]!.address + ':')).toBe(winner === 'a');
      expect(conf.includes(lab().masters[3]!.address + ':')).toBe(winner === 'b');
    }
    expect([ra.code, rb.code]).toContain(3);
  });

  it('--wait-lock waits for the other run to finish, then works on the node', async () => {
    const slow = startK8sha(['deploy', '-i', refusingInventory(), '--limit', 'node-1', '--verify-timeout', '4s']);
    await slow.waitFor(/node-1: verifying/);
    const waiting = startK8sha(['deploy', '-i', lab().inventory, '--limit', 'node-1', '--wait-lock', '60s', '--json']);
    await waiting.waitFor(/node-1: waiting for the lock: held by \S+@\S+ \(pid \d+\)/);
    const [s, w] = await Promise.all([slow.done, waiting.done]);
    expect(s.code).toBe(3);
    expect(w.code, w.stderr).toBe(0);
    expect(await healthy()).toMatchObject({ 'node-1': true });
  });
});

describe.sequential('deploy --check', () => {
  // From the lab's own state: whatever the tests above left, every node on the lab inventory.
  beforeAll(async () => {
    const r = await deployJson(['-i', lab().inventory, '--serial', '100%']);
    expect(r.code, r.stderr).toBe(0);
  });

  it('--diff shows each changed file as a unified diff, node by node, and touches nothing', async () => {
    const changed = inventoryVariant('max-fails-7', (inv) => (inv.lb = { ...(inv.lb ?? {}), maxFails: 7 }));
    const conf = '/opt/k8s/kube-nginx/conf/kube-nginx.conf';
    const before = await withNode(nodes()[0]!, (c) => c.execOk(`sha256sum ${conf}`));
    const r = await k8sha(['deploy', '-i', changed, '--check', '--diff']);
    expect(r.code, r.stderr).toBe(5);
    for (const n of nodes()) {
      const at = r.stdout.indexOf(`${n.name} (nginx): would reload kube-nginx`);
      expect(at, r.stdout).toBeGreaterThanOrEqual(0);
      const part = r.stdout.slice(at);
      expect(part).toMatch(new RegExp(`^    --- ${conf} \\(on ${n.name}\\)`, 'm'));
      expect(part).toMatch(new RegExp(`^    \\+\\+\\+ ${conf} \\(from the inventory\\)`, 'm'));
      expect(part).toMatch(/^    @@ -\d+,\d+ \+\d+,\d+ @@/m);
    }
    for (const m of lab().masters) {
      expect(r.stdout).toMatch(new RegExp(`^    -\\s+server ${m.address.replace(/\./g, '\\.')}:6443 max_fails=3 fail_timeout=30s; # ${m.name}$`, 'm'));
      expect(r.stdout).toMatch(new RegExp(`^    \\+\\s+server ${m.address.replace(/\./g, '\\.')}:6443 max_fails=7 fail_timeout=30s; # ${m.name}$`, 'm'));
    }
    expect(r.stdout).toMatch(/nodes would change \(exit 5\)/);
    expect(await withNode(nodes()[0]!, (c) => c.execOk(`sha256sum ${conf}`))).toBe(before);
  });

  it('with an empty cache and build.host on a node: builds nothing, installs nothing, writes nothing anywhere', async () => {
    const cache = path.join(scratchDir(), 'empty-cache');
    fs.mkdirSync(cache, { recursive: true });
    const onNode = inventoryVariant('build-on-node-1', (inv) => {
      inv.build = { host: 'node-1', installToolchain: true };
    });
    const snapshot = () =>
      withNode(nodes()[0]!, (c) =>
        c.execOk(
          "dpkg-query -W -f='${Status}\\n' gcc make 2>&1; stat -c '%Y %s' /var/lib/dpkg/status; " +
            "find /opt /etc/systemd/system /var/lib/k8s-ha /tmp /root -xdev -printf '%p %s %T@\\n' 2>/dev/null | sort",
        ),
      );
    const before = await snapshot();
    const r = await k8sha(['deploy', '-i', onNode, '--check'], { env: { K8S_HA_CACHE_DIR: cache } });
    // The lab is on its own inventory: nothing but the binary could differ, and that is unknown, not pending.
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toMatch(/binary: unknown: nginx not built yet \(--check builds nothing\)/);
    expect(r.stdout).toContain('nothing was built, installed or changed on any host');
    expect(await snapshot()).toBe(before);
    expect(fs.readdirSync(cache)).toEqual([]);
  });
});
