/**
 * `k8s-ha deploy` against the lab, checked the way an operator would: systemd's
 * own view of kube-nginx, the files on the node, and real requests through
 * each node's 127.0.0.1:8443. Tests run in order: each builds on the last.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { httpsGet } from '../../src/connect/https-probe.js';
import { run } from '../../src/util/exec.js';
import { k8sha } from '../helpers/cli.js';
import { deployJson, inventoryVariant, serviceState, type ServiceState } from '../helpers/deploy.js';
import { lab, labContainer, scratchDir, withNode } from '../helpers/lab.js';

async function states(): Promise<Record<string, ServiceState>> {
  const out: Record<string, ServiceState> = {};
  for (const n of lab().nodes) out[n.name] = await serviceState(n);
  return out;
}

/** GET through the node's own local port, the way kubelet reaches the apiserver. */
async function throughLocalPort(node: { name: string; address: string }, p = '/version') {
  return withNode(node, (c) => httpsGet(() => c.connectFromHost('127.0.0.1', 8443), { path: p, ca: lab().caPem, servername: 'kubernetes' }));
}

describe.sequential('k8s-ha deploy', () => {
  it('first deploy: every node runs kube-nginx active (running) and serves apiserver traffic on 127.0.0.1:8443', async () => {
    const r = await deployJson(['-i', lab().inventory]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.report.ok).toBe(true);
    for (const n of lab().nodes) {
      const h = r.report.hosts[n.name]!;
      expect(h.failed).toBe(0);
      expect(h.verified).toMatchObject({ state: 'active (running)', status: 200 });
    }
    for (const n of lab().nodes) {
      const s = await serviceState(n);
      expect([s.active, s.sub]).toEqual(['active', 'running']);
      expect(s.staged).toBe('0');
      const v = await throughLocalPort(n);
      expect(v.status).toBe(200);
      expect(lab().masters.map((m) => m.name)).toContain(JSON.parse(v.body).standin);
      await withNode(n, async (c) => {
        const out = await c.execOk('/opt/k8s/kube-nginx/sbin/kube-nginx -V 2>&1; stat -c "%a %U" /opt/k8s/kube-nginx/sbin/kube-nginx; systemctl is-enabled kube-nginx');
        expect(out).toMatch(/configure arguments: .*--with-stream/);
        expect(out).toMatch(/--without-http/);
        expect(out).toMatch(/^755 root$/m);
        expect(out).toMatch(/^enabled$/m);
        // The master runs as root (it binds and reads its config); every worker as kube-nginx, no shell, no home.
        const users = await c.execOk('m=$(systemctl show -p MainPID --value kube-nginx); ps -o user= -p "$m"; ps -o user= --ppid "$m" | sort -u; getent passwd kube-nginx | cut -d: -f6,7');
        expect(users.trim().split('\n')).toEqual(['root', 'kube-nginx', '/nonexistent:/usr/sbin/nologin']);
      });
    }
  });

  it('spreads new connections over the masters (least_conn), not all to one', async () => {
    const seen = new Set<string>();
    await withNode(lab().nodes[0]!, async (c) => {
      // Hold connections open so least_conn has to pick other masters.
      const held = await Promise.all(
        [0, 1, 2, 3, 4, 5].map(async () => {
          const s = await c.connectFromHost('127.0.0.1', 8443);
          const tls = await import('node:tls');
          const sock: import('node:tls').TLSSocket = tls.connect({ socket: s, ca: lab().caPem, servername: 'kubernetes' });
          await new Promise((res, rej) => sock.once('secureConnect', res).once('error', rej));
          seen.add(String(sock.getPeerCertificate().subject.CN));
          return sock;
        }),
      );
      held.forEach((s) => s.destroy());
    });
    expect(seen.size).toBeGreaterThan(1);
  });

  it('second deploy with nothing changed: changed=0 everywhere and kube-nginx is not restarted', async () => {
    const before = await states();
    const r = await deployJson(['-i', lab().inventory]);
    expect(r.code).toBe(0);
    expect(r.report.totals).toEqual({ ok: lab().nodes.length, changed: 0, failed: 0, unreachable: 0, skipped: 0, locked: 0 });
    for (const h of Object.values(r.report.hosts)) expect(h.changed).toBe(0);
    expect(await states()).toEqual(before);
    // What it cost each node, as docs/deploy.md says: one login; one command (the lock, the facts and who
    // holds the port, in one script); one channel more, the probe through 127.0.0.1:8443 and its TLS handshake.
    const sum = { logins: 0, execs: 0, channels: 0, tlsFull: 0, tlsResumed: 0, bytesOut: 0, bytesIn: 0 };
    for (const [name, h] of Object.entries(r.report.hosts)) {
      expect({ logins: h.ssh.logins, execs: h.ssh.execs, channels: h.ssh.channels, tls: h.ssh.tlsFull + h.ssh.tlsResumed }, name).toEqual({ logins: 1, execs: 1, channels: 2, tls: 1 });
      expect(h.ssh.bytesOut, name).toBeGreaterThan(0);
      expect(h.ssh.bytesIn, name).toBeGreaterThan(0);
      for (const k of Object.keys(sum) as (keyof typeof sum)[]) sum[k] += h.ssh[k];
    }
    expect(r.report.ssh).toMatchObject(sum);
    expect(r.report.ssh.controllerCpuMs).toBeGreaterThan(0);
  });

  it('a config-only change reloads kube-nginx (same main PID, no restart) and the new config is live', async () => {
    const before = await states();
    const changed = inventoryVariant('maxfails', (inv) => (inv.lb.maxFails = 2));
    const r = await deployJson(['-i', changed]);
    expect(r.code, r.stderr).toBe(0);
    for (const n of lab().nodes) {
      const steps = Object.fromEntries(r.report.hosts[n.name]!.steps.map((s) => [s.name, s]));
      expect(steps.config!.status).toBe('changed');
      expect(steps.binary!.status).toBe('ok');
      expect(steps.unit!.status).toBe('ok');
      expect(steps.service!.summary).toBe('reload');
      const after = await serviceState(n);
      expect(after.pid).toBe(before[n.name]!.pid);
      expect(after.since).toBe(before[n.name]!.since);
      expect(after.configSha).not.toBe(before[n.name]!.configSha);
      await withNode(n, async (c) => expect(await c.execOk('grep -c "max_fails=2" /opt/k8s/kube-nginx/conf/kube-nginx.conf')).toBe(`${lab().masters.length}\n`));
    }
    // The rolled verify probes every master from the node, within one pool for the run: each master's
    // TLS session is made by the first batch and resumed by every node after it.
    const hosts = lab().nodes.map((n) => ({ name: n.name, ...r.report.hosts[n.name]! }));
    expect(hosts.filter((h) => h.batch === 1)).toHaveLength(1);
    for (const h of hosts) {
      expect(h.ssh.execs, h.name).toBe(2);
      if (h.batch === 1) expect(h.ssh.tlsFull, h.name).toBeGreaterThanOrEqual(lab().masters.length);
      else expect(h.ssh.tlsResumed, h.name).toBeGreaterThanOrEqual(lab().masters.length);
    }
    // Back to the lab's own inventory for the tests that follow.
    expect((await deployJson(['-i', lab().inventory])).code).toBe(0);
  });

  it('a config that fails kube-nginx -t leaves the live config and the running service untouched on every node', async () => {
    const before = await states();
    const broken = inventoryVariant('broken', (inv) => (inv.masters[2].address = 'master-3.invalid'));
    // Every node runs kube-nginx, so the change rolls; the first node's validation stops it.
    const r = await deployJson(['-i', broken]);
    expect(r.code).toBe(3);
    const [first, ...rest] = lab().nodes;
    const h = r.report.hosts[first!.name]!;
    expect(h).toMatchObject({ status: 'failed', config: 'previous' });
    const config = h.steps.find((s) => s.name === 'config')!;
    expect(config.status).toBe('failed');
    expect(config.error).toMatch(/nginx: \[emerg\] host not found in upstream "master-3\.invalid:6443"/);
    expect(h.steps.find((s) => s.name === 'service')!.status).toBe('skipped');
    for (const n of rest) expect(r.report.hosts[n.name]).toMatchObject({ status: 'skipped', config: 'previous' });
    // Validated everywhere at once (--serial 100%), every node refuses it and stays as it was.
    const all = await deployJson(['-i', broken, '--serial', '100%']);
    for (const n of lab().nodes) expect(all.report.hosts[n.name]).toMatchObject({ status: 'failed', config: 'previous' });
    expect(await states()).toEqual(before); // same config checksum, same PID, nothing staged left behind
    const text = await k8sha(['deploy', '-i', broken]);
    expect(text.stdout).toMatch(/config: validation failed, nothing was replaced/);
  });

  it('a tarball with the wrong sha256: exit 4, nothing built, nothing touched on any node', async () => {
    const before = await states();
    const cache = fs.mkdtempSync(path.join(scratchDir(), 'cache-'));
    const wrong = inventoryVariant('wrongsha', (inv) => (inv.nginx.sha256 = '0'.repeat(64)));
    const r = await k8sha(['deploy', '-i', wrong], { env: { K8S_HA_CACHE_DIR: cache } });
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/has sha256 9ebb333a9e82b952acd3e2b4aeb1d4ff6406f72491bab6cd9fe69f0dea737f31, but the inventory says 0{64}: refusing to build it/);
    expect(fs.existsSync(path.join(cache, 'builds'))).toBe(false);
    expect(fs.readdirSync(path.join(cache, 'sources'))).toEqual([]);
    expect(await states()).toEqual(before);
    fs.rmSync(cache, { recursive: true });
  });

  it('an unreachable node: the others deploy and verify, it is reported unreachable, exit 3; a rerun once it is back converges', async () => {
    const [n1, n2, n3] = lab().nodes;
    const id = await labContainer(n3!.name);
    await run('docker', ['stop', '-t', '1', id]);
    try {
      const changed = inventoryVariant('unreachable', (inv) => {
        inv.lb.maxFails = 4;
        inv.ssh.connectTimeout = '3s';
      });
      const r = await deployJson(['-i', changed]);
      expect(r.code).toBe(3);
      expect(r.report.hosts[n3!.name]!.status).toBe('unreachable');
      expect(r.report.hosts[n3!.name]!.error).toMatch(/cannot reach 10\.\d+\.2\.13:22/);
      for (const n of [n1!, n2!]) expect(r.report.hosts[n.name]).toMatchObject({ status: 'changed', failed: 0, verified: { status: 200 } });
      expect(r.report.totals).toEqual({ ok: 0, changed: 2, failed: 0, unreachable: 1, skipped: 0, locked: 0 });
    } finally {
      await run('docker', ['start', id]);
    }
    let r = await deployJson(['-i', lab().inventory]);
    for (let i = 0; i < 30 && r.report.hosts[n3!.name]?.status === 'unreachable'; i++) {
      await new Promise((res) => setTimeout(res, 1000));
      r = await deployJson(['-i', lab().inventory]);
    }
    expect(r.code, JSON.stringify(r.report.hosts[n3!.name])).toBe(0);
    expect(r.report.hosts[n3!.name]!.verified?.status).toBe(200);
  });

  it('a node whose host key changed is refused with the new fingerprint shown, even with --accept-new-host-keys', async () => {
    const n2 = lab().nodes[1]!;
    const swap = (key: string) =>
      withNode(n2, (c) => c.execOk(`${key} && systemctl restart ssh`));
    // The node gets a new host key: what a reinstall or a man in the middle looks like.
    await swap('rm -f /etc/ssh/ssh_host_ed25519_key* && ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key');
    try {
      for (const extra of [[], ['--accept-new-host-keys']]) {
        const r = await deployJson(['-i', lab().inventory, ...extra]);
        expect(r.code).toBe(3);
        const h = r.report.hosts[n2.name]!;
        expect(h.status).toBe('failed');
        expect(h.error).toMatch(/HOST KEY CHANGED for 10\.\d+\.2\.12:22: it now presents ssh-ed25519 SHA256:[A-Za-z0-9+/]{43}/);
        for (const other of lab().nodes.filter((n) => n !== n2)) expect(r.report.hosts[other.name]!.status).toBe('ok');
      }
      expect(fs.readFileSync(lab().knownHosts, 'utf8').split('\n').filter((l) => l.startsWith(`${n2.address} `))).toHaveLength(1);
    } finally {
      // Restore the lab's key through docker: SSH to the node is (rightly) refused now.
      const id = await labContainer(n2.name);
      await run('docker', ['exec', id, 'sh', '-c', '/usr/local/sbin/k8s-ha-lab-init && systemctl restart ssh']);
    }
    expect((await deployJson(['-i', lab().inventory])).code).toBe(0);
  });

  it('--accept-new-host-keys trusts and records a key never seen before, and only then', async () => {
    const n3 = lab().nodes[2]!;
    const known = path.join(scratchDir(), 'known_hosts.partial');
    fs.writeFileSync(known, fs.readFileSync(lab().knownHosts, 'utf8').split('\n').filter((l) => !l.startsWith(`${n3.address} `)).join('\n'));
    const inv = inventoryVariant('partial-known', (i) => (i.ssh.knownHostsFile = known));
    const strict = await deployJson(['-i', inv]);
    expect(strict.code).toBe(3);
    expect(strict.report.hosts[n3.name]!.error).toMatch(/is not in .*known_hosts\.partial .*strict host key checking refuses unknown hosts/);
    const accepted = await deployJson(['-i', inv, '--accept-new-host-keys']);
    expect(accepted.code).toBe(0);
    expect(fs.readFileSync(known, 'utf8')).toContain(
      fs.readFileSync(lab().knownHosts, 'utf8').split('\n').find((l) => l.startsWith(`${n3.address} `)),
    );
  });

  it('our key refused by one node: a clear authentication error for that node only', async () => {
    const n1 = lab().nodes[0]!;
    await withNode(n1, (c) => c.execOk('mv /root/.ssh/authorized_keys /root/.ssh/authorized_keys.off'));
    try {
      const r = await deployJson(['-i', lab().inventory]);
      expect(r.code).toBe(3);
      expect(r.report.hosts[n1.name]!.status).toBe('failed');
      expect(r.report.hosts[n1.name]!.error).toMatch(/authentication failed for root@10\.\d+\.2\.11:22 with the key .*id_ed25519/);
      for (const other of lab().nodes.slice(1)) expect(r.report.hosts[other.name]!.status).toBe('ok');
      const text = await k8sha(['deploy', '-i', lab().inventory]);
      expect(text.stdout).toMatch(/fix: check that the public key is in ~root\/\.ssh\/authorized_keys on the host/);
    } finally {
      const id = await labContainer(n1.name);
      await run('docker', ['exec', id, 'mv', '/root/.ssh/authorized_keys.off', '/root/.ssh/authorized_keys']);
    }
  });

  it('a non-root user with passwordless sudo deploys like root', async () => {
    const inv = inventoryVariant('sudo', (i) => {
      i.ssh.user = 'k8s-admin';
      i.lb.maxFails = 5;
    });
    const r = await deployJson(['-i', inv]);
    expect(r.code, r.stderr + JSON.stringify(r.report)).toBe(0);
    for (const n of lab().nodes) {
      expect(r.report.hosts[n.name]!.verified?.status).toBe(200);
      await withNode(n, async (c) => {
        expect(await c.execOk('stat -c %U /opt/k8s/kube-nginx/conf/kube-nginx.conf; grep -c max_fails=5 /opt/k8s/kube-nginx/conf/kube-nginx.conf')).toBe(`root\n${lab().masters.length}\n`);
      });
    }
    expect((await deployJson(['-i', lab().inventory])).code).toBe(0);
  });

  it('--limit deploys only the named nodes; an unknown name is bad input', async () => {
    const inv = inventoryVariant('limit', (i) => (i.lb.maxFails = 6));
    const r = await deployJson(['-i', inv, '--limit', 'node-2']);
    expect(r.code).toBe(0);
    expect(Object.keys(r.report.hosts)).toEqual(['node-2']);
    const bad = await k8sha(['deploy', '-i', inv, '--limit', 'node-9']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--limit names node-9, not in/);
    expect((await deployJson(['-i', lab().inventory])).code).toBe(0);
  });
});
