/**
 * The lab as a user meets it: real sshd under real systemd on nodes and
 * masters, strict host key checking, TLS stand-ins (each master's
 * kube-apiserver service) reached from inside the nodes, the mirror's tarball.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConnectError } from '../../src/errors.js';
import { labPaths } from '../../src/lab/files.js';
import { eventAt } from '../../src/lab/standin.js';
import { httpsGet } from '../../src/connect/https-probe.js';
import { SshConnection } from '../../src/connect/ssh.js';
import { run } from '../../src/util/exec.js';
import { k8sha, ROOT } from '../helpers/cli.js';
import { lab, nodeTarget, scratchDir, withNode } from '../helpers/lab.js';

const NGINX_SHA256 = '9ebb333a9e82b952acd3e2b4aeb1d4ff6406f72491bab6cd9fe69f0dea737f31';

function openssh(address: string, command: string, knownHosts = lab().knownHosts, user = 'root') {
  return run('ssh', [
    '-i', lab().identityFile,
    '-o', `UserKnownHostsFile=${knownHosts}`,
    '-o', 'StrictHostKeyChecking=yes',
    '-o', 'BatchMode=yes',
    '-o', 'ConnectTimeout=10',
    `${user}@${address}`,
    command,
  ]);
}

const readyz = (m: { address: string; port: number }) =>
  httpsGet({ address: m.address, port: m.port }, { path: '/readyz', ca: lab().caPem, servername: m.address, timeoutMs: 2000 });

describe('lab nodes', () => {
  it('every node accepts the OpenSSH client with the lab key under strict host key checking, and systemd is running', async () => {
    for (const n of lab().nodes) {
      const r = await openssh(n.address, 'systemctl is-system-running; systemctl is-active ssh; hostname');
      expect(r.stderr).toBe('');
      expect(r.stdout.split('\n')).toEqual(['running', 'active', n.name, '']);
    }
  });

  it('every node accepts k8s-ha’s own SSH connection, one connection reused for several commands', async () => {
    for (const n of lab().nodes) {
      await withNode(n, async (c) => {
        expect((await c.execOk('systemctl is-system-running')).trim()).toBe('running');
        expect((await c.execOk('id -u')).trim()).toBe('0');
        // No compiler on a node: building nginx there must install one first.
        expect((await c.exec('command -v gcc || command -v cc || command -v make')).code).not.toBe(0);
      });
    }
  });

  it('each node has its own host key, and a key that does not match known_hosts is refused by both clients', async () => {
    const [n1, n2] = lab().nodes;
    const wrong = path.join(scratchDir(), 'known_hosts.wrong');
    // File node-2's key under node-1's address: what a changed or spoofed host looks like.
    const n2Line = fs.readFileSync(lab().knownHosts, 'utf8').split('\n').find((l) => l.startsWith(`${n2!.address} `))!;
    fs.writeFileSync(wrong, n2Line.replace(n2!.address, n1!.address) + '\n');
    try {
      const r = await openssh(n1!.address, 'true', wrong);
      expect(r.code).toBe(255);
      expect(r.stderr).toMatch(/REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed/);

      const err = await SshConnection.open(nodeTarget(n1!, { knownHostsFile: wrong })).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(ConnectError);
      expect((err as ConnectError).kind).toBe('host-key');
      expect((err as ConnectError).message).toMatch(/HOST KEY CHANGED for .*: it now presents ssh-ed25519 SHA256:[A-Za-z0-9+/]{43}/);
    } finally {
      fs.rmSync(wrong);
    }
  });

  it('an unknown host is refused under strict checking, and accept-new records it', async () => {
    const n = lab().nodes[0]!;
    const empty = path.join(scratchDir(), 'known_hosts.empty');
    fs.writeFileSync(empty, '');
    try {
      await expect(SshConnection.open(nodeTarget(n, { knownHostsFile: empty }))).rejects.toThrow(/is not in .*known_hosts\.empty/);
      const c = await SshConnection.open(nodeTarget(n, { knownHostsFile: empty, strictHostKeyChecking: 'accept-new' }));
      c.close();
      const recorded = fs.readFileSync(empty, 'utf8');
      const expected = fs.readFileSync(lab().knownHosts, 'utf8').split('\n').find((l) => l.startsWith(`${n.address} `));
      expect(recorded.trim()).toBe(expected);
    } finally {
      fs.rmSync(empty);
    }
  });
});

describe('lab masters', () => {
  it('every master is a host like a node: OpenSSH logs in as root and as k8s-admin (sudo), systemd runs kube-apiserver', async () => {
    for (const m of lab().masters) {
      const r = await openssh(m.address, 'systemctl is-system-running; systemctl is-active ssh kube-apiserver; hostname');
      expect(r.stderr).toBe('');
      expect(r.stdout.split('\n')).toEqual(['running', 'active', 'active', m.name, '']);
      const admin = await openssh(m.address, 'id -un; sudo -n systemctl is-active kube-apiserver', lab().knownHosts, 'k8s-admin');
      expect(admin.stderr).toBe('');
      expect(admin.stdout).toBe('k8s-admin\nactive\n');
    }
  });

  it('each master has its own host key in known_hosts, and k8s-ha’s own SSH connection reaches it', async () => {
    const lines = fs.readFileSync(lab().knownHosts, 'utf8').trim().split('\n');
    const keys = lab().masters.map((m) => lines.find((l) => l.startsWith(`${m.address} `))?.split(' ')[2]);
    expect(keys.every(Boolean)).toBe(true);
    expect(new Set([...keys, ...lab().nodes.map((n) => lines.find((l) => l.startsWith(`${n.address} `))?.split(' ')[2])]).size).toBe(
      lab().masters.length + lab().nodes.length,
    );
    const m = lab().masters[0]!;
    await withNode({ name: m.name, address: m.address }, async (c) => {
      expect((await c.execOk('systemctl show -p Environment --value kube-apiserver')).trim()).toBe(`STANDIN_NAME=${m.name}`);
    });
  });

  it('down takes the whole host away (SSH and /readyz gone); up brings it back and returns once both answer', async () => {
    const m = lab().masters[2]!;
    const dir = ['--dir', lab().dir];
    const down = await k8sha(['lab', 'master', m.name, 'down', ...dir]);
    expect(down.code, down.stderr).toBe(0);
    expect(down.stdout).toMatch(/down: the whole host is stopped/);
    try {
      await expect(readyz(m)).rejects.toThrow();
      await expect(SshConnection.open(nodeTarget(m, { connectTimeoutMs: 3000 }))).rejects.toThrow(ConnectError);
    } finally {
      const up = await k8sha(['lab', 'master', m.name, 'up', ...dir]);
      expect(up.code, up.stderr).toBe(0);
      expect(up.stdout).toMatch(/up: the host booted \(systemd running, \/readyz 200\)/);
    }
    expect((await readyz(m)).status).toBe(200);
    expect((await openssh(m.address, 'systemctl is-active kube-apiserver')).stdout).toBe('active\n');
  });
});

describe('apiserver stand-ins', () => {
  it('from inside every node, each stand-in answers /readyz and /version over TLS verified by the lab CA', async () => {
    for (const n of lab().nodes) {
      await withNode(n, async (c) => {
        for (const m of lab().masters) {
          const via = () => c.connectFromHost(m.address, m.port);
          const ready = await httpsGet(via, { path: '/readyz', ca: lab().caPem, servername: m.address });
          expect(ready).toMatchObject({ status: 200, body: 'ok', peer: m.name });
          const version = await httpsGet(via, { path: '/version', ca: lab().caPem, servername: 'kubernetes' });
          expect(JSON.parse(version.body)).toMatchObject({ standin: m.name, gitVersion: expect.stringMatching(/^v1\./) });
        }
      });
    }
  });

  it('a certificate from another CA is not trusted', async () => {
    const m = lab().masters[0]!;
    const otherCa = fs.readFileSync(path.join(ROOT, 'test', 'fixtures', 'other-ca.crt'), 'utf8');
    await expect(httpsGet({ address: m.address, port: m.port }, { path: '/readyz', ca: otherCa, servername: m.address })).rejects.toThrow(
      /unable to verify|self.signed|certificate/i,
    );
  });

  it('can be made unready and ready again; its kube-apiserver service stopped (SIGTERM, connections refused, the host up) and started', async () => {
    const m = lab().masters[1]!;
    const dir = ['--dir', lab().dir];
    expect((await k8sha(['lab', 'master', m.name, 'unready', ...dir])).code).toBe(0);
    expect((await readyz(m)).status).toBe(500);
    expect((await k8sha(['lab', 'master', m.name, 'ready', ...dir])).code).toBe(0);
    expect((await readyz(m)).status).toBe(200);

    // Where the journal stands before the stop, so the lines read after it are this stop's and all of them.
    const before = await openssh(m.address, 'journalctl -u kube-apiserver -n 0 --show-cursor --no-pager');
    const cursor = /-- cursor: (\S+)/.exec(before.stdout)?.[1];
    expect(cursor, before.stdout + before.stderr).toBeTruthy();
    const stop = await k8sha(['lab', 'master', m.name, 'stop', ...dir]);
    expect(stop.code, stop.stderr).toBe(0);
    try {
      await expect(readyz(m)).rejects.toThrow(/ECONNREFUSED/);
      // The host is up: SSH works, and the stand-in went the way kube-apiserver goes on SIGTERM.
      const r = await openssh(m.address, `systemctl is-active kube-apiserver; journalctl -u kube-apiserver --no-pager -o cat --after-cursor '${cursor}'`);
      expect(r.stdout).toMatch(/^inactive\n/);
      // In kube-apiserver's order: /readyz red while still serving, then no new connections, then gone.
      expect(r.stdout).toMatch(/SIGTERM: \/readyz is red[^]*not accepting connections[^]*stopped/);
    } finally {
      const start = await k8sha(['lab', 'master', m.name, 'start', ...dir]);
      expect(start.code, start.stderr).toBe(0);
      expect(start.stdout).toMatch(/kube-apiserver started: \/readyz 200/);
    }
    expect((await readyz(m)).status).toBe(200);
  });

  it('every master serves one history: a watch resumed on another master goes on from its resourceVersion, and a list at a resourceVersion is the same everywhere', async () => {
    const [a, b, c] = lab().masters;
    /** GET over HTTP/1.1 (client-go would take HTTP/2: the unit tests and kubectl cover that): who answered, and the body. */
    const get = (m: { address: string; port: number }, p: string) =>
      new Promise<{ standin: string; status: number; body: string }>((resolve, reject) => {
        const req = https.request({ host: m.address, port: m.port, path: p, ca: lab().caPem, servername: 'kubernetes' }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => (body += d));
          res.on('end', () => resolve({ standin: String(res.headers['x-standin']), status: res.statusCode ?? 0, body }));
        });
        req.on('error', reject);
        req.end();
      });
    const pods = '/api/v1/namespaces/default/pods';
    const list = await get(a!, pods);
    expect(list.standin).toBe(a!.name);
    const rv = Number(JSON.parse(list.body).metadata.resourceVersion);
    const events: { type: string; object: { metadata: { resourceVersion: string } } }[] = [];
    for (const m of [a!, b!]) {
      const from = events.length ? Number(events.at(-1)!.object.metadata.resourceVersion) : rv;
      const w = await get(m, `${pods}?watch=1&resourceVersion=${from}&timeoutSeconds=1`);
      expect([w.standin, w.status]).toEqual([m.name, 200]);
      events.push(...w.body.trim().split('\n').map((l) => JSON.parse(l)));
    }
    const rvs = events.map((e) => Number(e.object.metadata.resourceVersion));
    expect(rvs.length).toBeGreaterThanOrEqual(6);
    expect(rvs).toEqual(rvs.map((_, i) => rv + 1 + i));
    expect(events).toEqual(rvs.map((x) => eventAt(x)));
    const exact = await get(c!, `${pods}?resourceVersion=${rv}&resourceVersionMatch=Exact`);
    expect(exact.standin).toBe(c!.name);
    expect(JSON.parse(exact.body).items).toEqual(JSON.parse(list.body).items);
    const old = await get(c!, `${pods}?watch=1&resourceVersion=1`);
    expect(JSON.parse(old.body)).toMatchObject({ type: 'ERROR', object: { kind: 'Status', code: 410, reason: 'Expired' } });
  });

  it('the /watch probe streams a line a second, naming the stand-in', async () => {
    const m = lab().masters[0]!;
    const events = await new Promise<unknown[]>((resolve, reject) => {
      const got: unknown[] = [];
      const req = https.request({ host: m.address, port: m.port, path: '/watch', ca: lab().caPem }, (res) => {
        let buf = '';
        res.on('data', (chunk: Buffer) => {
          buf += chunk.toString();
          for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
            got.push(JSON.parse(buf.slice(0, i)));
            buf = buf.slice(i + 1);
          }
          if (got.length >= 3) {
            res.destroy();
            resolve(got.slice(0, 3));
          }
        });
      });
      req.on('error', reject);
      req.end();
    });
    expect(events).toEqual([1, 2, 3].map((seq) => ({ type: 'BOOKMARK', object: { standin: m.name, seq } })));
  });
});

describe('a real client: kubectl', () => {
  it('lab up puts the kubeconfig on every host as ~/.kube/config, for root and k8s-admin, and kubectl here reaches a master with it', async () => {
    const { kubeconfig, kubectl } = labPaths(lab().dir);
    expect(fs.statSync(kubeconfig).mode & 0o777).toBe(0o600);
    for (const h of [...lab().nodes, lab().masters[0]!]) {
      const r = await openssh(h.address, 'stat -c "%a %U" /root/.kube/config /home/k8s-admin/.kube/config; cmp /root/.kube/config /etc/k8s-ha-lab/kubeconfig && kubectl config view -o jsonpath="{.clusters[0].cluster.server}"');
      expect(r.stdout, r.stderr).toBe('600 root\n600 k8s-admin\nhttps://127.0.0.1:8443');
    }
    const m = lab().masters[1]!;
    const r = await run(kubectl, ['--kubeconfig', kubeconfig, '--server', `https://${m.address}:${m.port}`, 'get', 'pods', '-o', 'name']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^(pod\/lab-pod-\d\n){6,8}$/);
  });
});

describe('nginx source mirror', () => {
  it('serves the genuine nginx tarball to the nodes, sha256 verified', async () => {
    const inventory = fs.readFileSync(lab().inventory, 'utf8');
    const url = new URL(/- (http:\/\/\S+)/.exec(inventory)![1]!);
    await withNode(lab().nodes[0]!, async (c) => {
      const stream = await c.connectFromHost(url.hostname, Number(url.port || 80));
      const body = await new Promise<Buffer>((resolve, reject) => {
        const req = http.request({ createConnection: () => stream as never, path: url.pathname, headers: { host: url.host, connection: 'close' } }, (res) => {
          expect(res.statusCode).toBe(200);
          const chunks: Buffer[] = [];
          res.on('data', (b: Buffer) => chunks.push(b));
          res.on('end', () => resolve(Buffer.concat(chunks)));
        });
        req.on('error', reject);
        req.end();
      });
      expect(body.length).toBe(1073948);
      expect(createHash('sha256').update(body).digest('hex')).toBe(NGINX_SHA256);
    });
  });
});

describe('lab up, again', () => {
  it('changes nothing on a live lab and says so', async () => {
    const before = await run('docker', ['ps', '-q', '--no-trunc', '--filter', `label=io.k8s-ha.lab`]);
    const r = await k8sha(['lab', 'up', '--dir', lab().dir]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/is already up in .*: nothing changed\./);
    const after = await run('docker', ['ps', '-q', '--no-trunc', '--filter', `label=io.k8s-ha.lab`]);
    expect(after.stdout.split('\n').sort()).toEqual(before.stdout.split('\n').sort());
  });

  it('lab status shows every host healthy', async () => {
    const r = await k8sha(['lab', 'status', '--dir', lab().dir, '--json']);
    expect(r.code).toBe(0);
    const s = JSON.parse(r.stdout);
    expect(s.healthy).toBe(true);
    expect(s.hosts.map((h: { service: string }) => h.service).sort()).toEqual(
      [...lab().masters.map((m) => m.name), 'mirror', 'bastion', ...lab().nodes.map((n) => n.name)].sort(),
    );
  });
});
