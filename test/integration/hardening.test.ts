/**
 * A host that hangs or goes silent costs a run a stated time, never the run: every remote command
 * has a deadline and an output cap (a hung facts read fails that node at the deadline while the
 * others finish, and the next run recovers it), a node's lock is a lease that a vanished controller
 * loses within LOCK_LEASE_S, `status` calls a silent node unknown (exit 6), never down, and a
 * revoked host key is refused even with StrictHostKeyChecking no.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DeadlineError } from '../../src/errors.js';
import { LOCK_LEASE_S, SshConnection } from '../../src/connect/ssh.js';
import { MAX_OUTPUT_BYTES } from '../../src/connect/deadlines.js';
import { LOCK_PROBE, parseLockProbe, takeLock } from '../../src/engine/lock.js';
import { run } from '../../src/util/exec.js';
import { k8sha } from '../helpers/cli.js';
import { deployJson, inventoryVariant } from '../helpers/deploy.js';
import { inContainer, lab, nodeTarget, scratchDir, withNode } from '../helpers/lab.js';

/** Packets between this machine and one lab address dropped silently, both ways: no reset, no handshake. */
class Silence {
  private rules: string[][] = [];
  async on(address: string): Promise<void> {
    for (const rule of [['OUTPUT', '-d', address], ['INPUT', '-s', address]]) {
      const r = await run('iptables', ['-I', ...rule, '-j', 'DROP']);
      if (r.code !== 0) throw new Error(`iptables -I ${rule.join(' ')}: ${r.stderr}`);
      this.rules.push(rule);
    }
  }
  async off(): Promise<void> {
    for (const rule of this.rules.splice(0)) await run('iptables', ['-D', ...rule, '-j', 'DROP']);
  }
}

const CONF = '/opt/k8s/kube-nginx/conf/kube-nginx.conf';

beforeAll(async () => {
  const r = await deployJson(['-i', lab().inventory, '--serial', '100%']);
  expect(r.code, r.stderr).toBe(0);
});

describe('a deadline on every remote command', () => {
  it('a command past its deadline is ended and named; the connection goes on working', async () => {
    const c = await SshConnection.open({ ...nodeTarget(lab().nodes[0]!), deadlines: { facts: 1000 } });
    try {
      const t0 = Date.now();
      const e = await c.execAsRoot('sleep 30', { kind: 'facts' }).then(() => undefined, (x: unknown) => x);
      expect(e).toBeInstanceOf(DeadlineError);
      expect((e as Error).message).toBe('timed out after 1 s in gathering facts');
      expect(Date.now() - t0).toBeLessThan(10_000);
      expect((await c.execAsRoot('echo still here')).stdout).toBe('still here\n');
    } finally {
      c.close();
    }
  });

  it('a command that prints without end is ended at the cap, not buffered', async () => {
    await withNode(lab().nodes[0]!, async (c) => {
      const e = await c.execAsRoot('cat /dev/zero').then(() => undefined, (x: unknown) => x);
      expect(e).toBeInstanceOf(DeadlineError);
      expect((e as DeadlineError).outputBytes).toBe(MAX_OUTPUT_BYTES);
      expect((await c.execAsRoot('echo ok')).stdout).toBe('ok\n');
    });
  });

  describe('a node whose facts read hangs (its config is a FIFO nobody writes: a hung disk)', () => {
    const node = () => lab().nodes[1]!;
    afterEach(async () => {
      // Let any stuck read go, and put a real file back.
      await inContainer(node().name, `if [ -p ${CONF} ]; then timeout 2 sh -c 'echo > ${CONF}' ; rm -f ${CONF}; fi; true`);
    });

    it('fails at the deadline while the other nodes finish; its lock is free; the next run recovers it', async () => {
      await inContainer(node().name, `rm -f ${CONF} && mkfifo ${CONF}`);
      const inv = inventoryVariant('facts-deadline', (i) => (i.timeouts = { facts: '4s' }));
      const t0 = Date.now();
      const d = await deployJson(['-i', inv]);
      expect(d.code, d.stderr).toBe(3);
      const hung = d.report.hosts[node().name]!;
      expect(hung.status).toBe('failed');
      expect(hung.error).toMatch(/timed out after 4 s in gathering facts/);
      for (const n of lab().nodes.filter((x) => x.name !== node().name)) expect(d.report.hosts[n.name]!.status).toBe('ok');
      // The run did not wait on the hung node beyond its deadline (and the verify of the others).
      expect(Date.now() - t0).toBeLessThan(60_000);
      // The read is still stuck on the node, and holds nothing: no lock, no journal.
      await withNode(node(), async (c) => {
        expect((await c.execAsRoot(`pgrep -f 'sha256sum.*kube-nginx.conf' >/dev/null && echo stuck`)).stdout).toBe('stuck\n');
        expect(parseLockProbe((await c.execAsRoot(LOCK_PROBE)).stdout)).toEqual({ holder: undefined, journal: undefined });
      });
      // The disk comes back: the next run puts the node right.
      await inContainer(node().name, `timeout 2 sh -c 'echo > ${CONF}'; rm -f ${CONF}`);
      const again = await deployJson(['-i', inv]);
      expect(again.code, again.stderr).toBe(0);
      expect(again.report.hosts[node().name]!.status).toBe('changed');
      expect(again.report.hosts[node().name]!.verified?.state).toBe('active (running)');
    });
  });
});

describe('the node lock is a lease', () => {
  const silence = new Silence();
  afterAll(() => silence.off());

  it(`a controller that goes silent (no FIN, no reset) loses the lock within ${LOCK_LEASE_S} s`, async () => {
    const node = lab().nodes[2]!;
    const c = await SshConnection.open(nodeTarget(node));
    const lock = await takeLock(c, 'vanishing@controller (pid 1)', 0);
    expect(lock.held).toBe(true);
    const t0 = Date.now();
    await silence.on(node.address);
    // Seen from the bastion, as a colleague's run would see it.
    const viaBastion = { ...nodeTarget(node), jump: { name: 'bastion', address: lab().bastion.address, port: 22, user: 'root', identityFile: nodeTarget(node).identityFile, knownHostsFile: nodeTarget(node).knownHostsFile, strictHostKeyChecking: 'yes' as const, bastion: true } };
    const b = await SshConnection.open(viaBastion);
    try {
      expect(parseLockProbe((await b.execAsRoot(LOCK_PROBE)).stdout).holder).toBe('vanishing@controller (pid 1)');
      let holder: string | undefined = 'held';
      // The keeper waits LOCK_LEASE_S for each renewal byte and the last one came before the silence:
      // the lock is free within the lease of it. Polled each second: the bound allows that second
      // and the probe's own time, no more.
      while (holder && Date.now() - t0 < (LOCK_LEASE_S + 10) * 1000) {
        await new Promise((r) => setTimeout(r, 1000));
        holder = parseLockProbe((await b.execAsRoot(LOCK_PROBE)).stdout).holder;
      }
      expect(holder).toBeUndefined();
      expect(Date.now() - t0).toBeLessThanOrEqual((LOCK_LEASE_S + 3) * 1000);
    } finally {
      b.close();
      c.close();
      await silence.off();
    }
  });
});

describe('status and --check show a run in progress, and touch neither', () => {
  it('a held lock and an unfinished journal', async () => {
    const [n1, n2] = lab().nodes;
    const c = await SshConnection.open(nodeTarget(n1!));
    const holder = 'ops@ctl-9 (pid 4242) since 2026-12-05T08:00:00Z, run R-HELD';
    const lock = await takeLock(c, holder, 0);
    expect(lock.held).toBe(true);
    // What a controller killed mid-commit leaves on a node: a journal, committed and never verified.
    const journal = '/var/lib/k8s-ha/journal';
    await inContainer(
      n2!.name,
      `mkdir -p ${journal} && printf '%s' '{"run":"R-LEFT","by":"ops@ctl-9 (pid 1)","started":"2026-12-05T08:00:00Z","files":[],"restorable":false}' > ${journal}/run.json && echo committed > ${journal}/state`,
    );
    try {
      const st = await k8sha(['status', '-i', lab().inventory]);
      expect(st.stdout).toContain(`${n1!.name}: a k8s-ha run is working on it: locked by ${holder}`);
      expect(st.stdout).toMatch(new RegExp(`${n2!.name}: run R-LEFT \\(ops@ctl-9 \\(pid 1\\)\\) did not finish \\(committed\\): the next deploy verifies its change first`));
      const chk = await k8sha(['deploy', '-i', lab().inventory, '--check', '--json']);
      const report = JSON.parse(chk.stdout);
      expect(report.hosts[n1!.name]).toMatchObject({ status: 'locked', lockedBy: holder });
      expect(report.hosts[n2!.name].unfinished).toEqual({ run: 'R-LEFT', by: 'ops@ctl-9 (pid 1)', started: '2026-12-05T08:00:00Z', state: 'committed' });
      expect(chk.code).toBe(3);
      // Neither took the lock nor closed the journal.
      await withNode(n2!, async (x) => expect((await x.execAsRoot(`cat ${journal}/state`)).stdout).toBe('committed\n'));
      expect(parseLockProbe((await c.execAsRoot(LOCK_PROBE)).stdout).holder).toBe(holder);
    } finally {
      lock.held && lock.release();
      c.close();
      await inContainer(n2!.name, `rm -rf ${journal}`);
    }
  });
});

describe('status: silence is unknown, never down', () => {
  const silence = new Silence();
  afterAll(() => silence.off());

  it('a node made silent by a packet filter is unknown (exit 6), the others healthy', async () => {
    const node = lab().nodes[2]!;
    const inv = inventoryVariant('status-silent', (i) => (i.ssh = { ...(i.ssh ?? {}), connectTimeout: '3s' }));
    await silence.on(node.address);
    const r = await k8sha(['status', '-i', inv, '--json']);
    await silence.off();
    const s = JSON.parse(r.stdout);
    expect(r.code, r.stderr).toBe(6);
    expect([s.healthy, s.down, s.unknown]).toEqual([lab().nodes.length - 1, 0, 1]);
    const n = s.nodes.find((x: { name: string }) => x.name === node.name);
    expect(n.health).toBe('unknown');
    expect(n.error).toMatch(/^no answer: /);
    const text = await (async () => {
      await silence.on(node.address);
      try {
        return await k8sha(['status', '-i', inv]);
      } finally {
        await silence.off();
      }
    })();
    expect(text.code).toBe(6);
    expect(text.stdout).toMatch(new RegExp(`^${node.name}\\?\\s.*no answer`, 'm'));
  });
});

describe('StrictHostKeyChecking no', () => {
  it('still refuses a host key marked @revoked or listed in RevokedHostKeys, and names every host it accepts unchecked', async () => {
    const node = lab().nodes[0]!;
    const known = fs.readFileSync(lab().knownHosts, 'utf8').split('\n').filter((l) => l.startsWith(`${node.address} `));
    expect(known.length).toBeGreaterThan(0);
    const dir = scratchDir();
    const revoked = path.join(dir, 'known_hosts.revoked');
    fs.writeFileSync(revoked, known.map((l) => `@revoked * ${l.split(' ').slice(1).join(' ')}`).join('\n') + '\n');
    const e = await SshConnection.open({ ...nodeTarget(node), knownHostsFile: revoked, strictHostKeyChecking: 'no' }).then(
      (c) => (c.close(), undefined),
      (x: unknown) => x as Error,
    );
    expect(e?.message).toMatch(/is marked @revoked in .*known_hosts\.revoked:1/);

    // ssh_config's RevokedHostKeys, a list of public keys: refused for every host, whatever the setting.
    const list = path.join(dir, 'revoked-keys');
    fs.writeFileSync(list, `# retired\n${known.map((l) => l.split(' ').slice(1).join(' ')).join('\n')}\n`);
    const listed = await SshConnection.open({
      ...nodeTarget(node),
      strictHostKeyChecking: 'no',
      revokedHostKeys: { file: list, from: 'RevokedHostKeys at ~/.ssh/config:4' },
    }).then(
      (c) => (c.close(), undefined),
      (x: unknown) => x as Error,
    );
    expect(listed?.message).toMatch(/is listed as revoked in .*revoked-keys:\d \(RevokedHostKeys at ~\/\.ssh\/config:4\)/);

    const empty = path.join(dir, 'known_hosts.empty');
    fs.writeFileSync(empty, '');
    const c = await SshConnection.open({ ...nodeTarget(node), knownHostsFile: empty, strictHostKeyChecking: 'no' });
    try {
      expect(c.notes.join('\n')).toMatch(new RegExp(`${node.name}: host key \\S+ SHA256:\\S+ of ${node.address}:22 accepted UNCHECKED \\(StrictHostKeyChecking no\\): it is in no known_hosts file`));
    } finally {
      c.close();
    }
  });

  it('accept-new makes ~/.ssh 0700; a known_hosts it cannot write to fails the login and leaves no connection open', async () => {
    const node = lab().nodes[0]!;
    const dir = path.join(scratchDir(), 'home-ssh', '.ssh');
    const c = await SshConnection.open({ ...nodeTarget(node), knownHostsFile: path.join(dir, 'known_hosts'), strictHostKeyChecking: 'accept-new' });
    c.close();
    expect(fs.statSync(dir).mode & 0o777).toBe(0o700);
    expect(fs.readFileSync(path.join(dir, 'known_hosts'), 'utf8')).toMatch(new RegExp(`^${node.address} ssh-`));

    const sockets = () => process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap').length;
    // Counted once the connection above has closed: a leak would leave one more open after the failed login.
    await new Promise((r) => setTimeout(r, 300));
    const before = sockets();
    // A path under a file: the folder cannot be made.
    const blocked = path.join(scratchDir(), 'not-a-folder');
    fs.writeFileSync(blocked, '');
    const e = await SshConnection.open({ ...nodeTarget(node), knownHostsFile: path.join(blocked, 'known_hosts'), strictHostKeyChecking: 'accept-new' }).then(
      (x) => (x.close(), undefined),
      (x: unknown) => x as Error,
    );
    expect(e?.message).toMatch(/cannot record the host key of .* in .*not-a-folder\/known_hosts/);
    await new Promise((r) => setTimeout(r, 300));
    expect(sockets()).toBeLessThanOrEqual(before);
  });
});
