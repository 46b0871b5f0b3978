/**
 * Apiservers run with --anonymous-auth=false (CIS-hardened clusters): an anonymous /readyz answers
 * 401. Every master of the lab is made to refuse anonymous requests (`lab master NAME
 * anonymous-off`), and every health check must then present tls.clientCertFile (the lab's
 * pki/lab-readyz.crt, CN k8s-ha-health): verify and status from this machine, kube-lb's and
 * haproxy's checks on the nodes (kube-haproxy) and on the VIP hosts. Without the certificate,
 * verify and status must say why nothing is ready. Whatever fails, the masters serve anonymous
 * requests again at the end and the nodes are back on kube-nginx, as the other files expect.
 */
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { httpsGet } from '../../src/connect/https-probe.js';
import type { SshConnection } from '../../src/connect/ssh.js';
import { k8sha } from '../helpers/cli.js';
import { deployJson, inventoryVariant } from '../helpers/deploy.js';
import { inContainer, kubeLbMetrics as metrics, lab, withNode } from '../helpers/lab.js';

const HOSTS = ['master-1', 'master-2', 'master-3'];
/** kube-haproxy's checks (src/lb/haproxy.ts): first within inter (2 s), then fastinter (1 s), fall 2: a failing master is DOWN within 3 s. */
const HAPROXY_FALL_MS = 3000;
const REFUSED = 'anonymous /readyz refused (401): set tls.clientCertFile/clientKeyFile';

const pki = () => ({ cert: path.join(lab().dir, 'pki', 'lab-readyz.crt'), key: path.join(lab().dir, 'pki', 'lab-readyz.key') });
const client = () => ({ cert: fs.readFileSync(pki().cert, 'utf8'), key: fs.readFileSync(pki().key, 'utf8') });
/** The key's first base64 line: what must never be printed. */
const keyLine = () => client().key.split('\n')[1]!;

function vipAddress(): string {
  const [a, b] = lab().masters[0]!.address.split('.');
  return `${a}.${b}.3.100`;
}

/** The lab's inventory with the health checks' certificate, and a change. */
function withCert(name: string, change: (inv: Record<string, any>) => void = () => {}): string {
  return inventoryVariant(`anonymous-off-${name}`, (inv) => {
    inv.tls.clientCertFile = pki().cert;
    inv.tls.clientKeyFile = pki().key;
    change(inv);
  });
}

async function everyMaster(action: 'anonymous-off' | 'anonymous-on'): Promise<void> {
  for (const m of lab().masters) {
    const r = await k8sha(['lab', 'master', '--dir', lab().dir, m.name, action]);
    if (r.code !== 0) throw new Error(`lab master ${m.name} ${action}: ${r.stderr}`);
  }
}

/** GET over TLS from the node through its 127.0.0.1:8443, with the lab's health certificate: who answered. */
async function through(c: SshConnection, p: string) {
  return httpsGet(() => c.connectFromHost('127.0.0.1', 8443), { path: p, ca: lab().caPem, servername: 'kubernetes', timeoutMs: 5000, ...client() });
}


const fileState = (c: SshConnection, file: string) => c.execOk(`stat -c '%a %U:%G' ${file}`).then((s) => s.trim());

beforeAll(async () => {
  await everyMaster('anonymous-off');
});

afterAll(async () => {
  // Whatever failed: the masters serve anonymous requests again, the nodes run kube-nginx.
  try {
    await everyMaster('anonymous-on');
  } finally {
    const d = await deployJson(['-i', lab().inventory, '--serial', '100%']);
    if (d.code !== 0) throw new Error(`putting the nodes back on kube-nginx failed: ${d.stderr}`);
  }
});

describe.sequential('health checks when every apiserver refuses anonymous requests', () => {
  it('the stand-ins answer 401 without a client certificate and 200 with the lab-readyz one', async () => {
    const m = lab().masters[0]!;
    const get = (o: object) =>
      new Promise<number>((resolve, reject) => {
        https.get({ host: m.address, port: m.port, path: '/readyz', ca: lab().caPem, servername: 'kubernetes', agent: false, ...o }, (res) => {
          res.resume();
          resolve(res.statusCode!);
        }).on('error', reject);
      });
    expect(await get({})).toBe(401);
    expect(await get(client())).toBe(200);
  });

  it('without tls.clientCertFile, deploy\'s verify and status say that anonymous /readyz is refused', async () => {
    // A verify that cannot pass (every master answers 401): not a test of the deadline.
    const d = await deployJson(['-i', lab().inventory, '--serial', '100%', '--verify-timeout', '4s']);
    expect(d.code).toBe(3);
    for (const n of lab().nodes) expect(JSON.stringify(d.report.hosts[n.name])).toContain(REFUSED);

    const s = await k8sha(['status', '-i', lab().inventory, '--json']);
    expect(s.code).toBe(3);
    for (const n of JSON.parse(s.stdout).nodes) {
      expect(n.healthy).toBe(false);
      for (const m of n.masters) expect(m.direct).toEqual({ status: 401, refused: REFUSED });
    }
    const text = await k8sha(['status', '-i', lab().inventory]);
    for (const m of lab().masters) expect(text.stdout).toContain(`${m.name}: ${REFUSED} (seen from ${lab().nodes.length} nodes)`);
  });

  it('kube-nginx (L4, no checks of its own): deploy verifies with the certificate, status says healthy', async () => {
    const inv = withCert('nginx');
    const d = await deployJson(['-i', inv, '--serial', '100%']);
    expect(d.code, d.stderr).toBe(0);
    for (const n of lab().nodes) expect(d.report.hosts[n.name]!.verified).toMatchObject({ state: 'active (running)', status: 200 });
    const s = await k8sha(['status', '-i', inv, '--json']);
    expect(s.code, s.stderr).toBe(0);
    for (const n of JSON.parse(s.stdout).nodes) {
      expect(n).toMatchObject({ healthy: true, service: 'active (running)' });
      for (const m of n.masters) expect(m.direct.status).toBe(200);
    }
  });

  it("kube-lb: its checks present the shipped certificate and mark every master up; the key is root:kube-lb 0640 and never printed", async () => {
    const inv = withCert('kube-lb', (i) => (i.lb.impl = 'kube-lb'));
    // What would change, with every diff: the key file only as changed.
    const check = await k8sha(['deploy', '-i', inv, '--check', '--diff']);
    expect(check.stdout).toContain('kube-lb-client.pem');
    expect(check.stdout + check.stderr).not.toContain(keyLine());
    expect(check.stdout).not.toContain('PRIVATE KEY');

    const d = await deployJson(['-i', inv, '--serial', '100%']);
    expect(d.code, d.stderr).toBe(0);
    expect(d.stdout + d.stderr).not.toContain(keyLine());
    for (const n of lab().nodes) {
      expect(d.report.hosts[n.name]!.impl).toMatchObject({ impl: 'kube-lb' });
      expect(d.report.hosts[n.name]!.verified).toMatchObject({ status: 200 });
    }
    await withNode(lab().nodes[0]!, async (c) => {
      expect(await fileState(c, '/opt/k8s/kube-lb/conf/kube-lb-client.pem')).toBe('640 root:kube-lb');
      const m = await metrics(c);
      for (const master of lab().masters) expect(m).toMatch(new RegExp(`kube_lb_backend_up\\{backend="${master.name}",[^}]*\\} 1`));
      expect(m).toMatch(new RegExp(`kube_lb_backends_up ${lab().masters.length}`));
      // The journal of the run says nothing of the key either.
      expect(await c.execOk('journalctl -u kube-lb --no-pager -n 200 | grep -c "PRIVATE KEY" || true')).toBe('0\n');
    });
    const s = await k8sha(['status', '-i', inv, '--json']);
    expect(s.code, s.stderr).toBe(0);
    for (const n of JSON.parse(s.stdout).nodes) {
      expect(n).toMatchObject({ impl: 'kube-lb', healthy: true });
      expect(Object.values(n.drift).every((x) => x === 'ok')).toBe(true);
    }
    expect(s.stdout).not.toContain(keyLine());
    expect((await deployJson(['-i', inv])).report.totals.changed).toBe(0);
  });

  it('kube-haproxy (lb.impl: haproxy): its checks present the certificate (`crt`), every master serves through 127.0.0.1:8443', async () => {
    const inv = withCert('haproxy', (i) => (i.lb.impl = 'haproxy'));
    const d = await deployJson(['-i', inv, '--serial', '100%']);
    expect(d.code, d.stderr).toBe(0);
    expect(d.stdout + d.stderr).not.toContain(keyLine());
    for (const n of lab().nodes) expect(d.report.hosts[n.name]!.verified).toMatchObject({ state: 'active (running)', status: 200 });
    // Started by this deploy (a switch to it), not reloaded: the unit's start is when its checks began.
    expect(d.report.hosts[lab().nodes[0]!.name]!.steps.find((s) => s.name === 'service')!.summary).toBe('daemon-reload, switch from kube-lb, enable, disable kube-lb');
    await withNode(lab().nodes[0]!, async (c) => {
      expect(await fileState(c, '/etc/haproxy/kube-haproxy-client.pem')).toBe('600 root:root');
      expect(await c.execOk('cat /etc/haproxy/kube-haproxy.cfg')).toContain(' crt /etc/haproxy/kube-haproxy-client.pem ');
      // haproxy starts a server UP; failing checks (inter 2s, then fastinter 1s, fall 2) take it down
      // within 3 s of haproxy's start. Waited out from the unit's own start (systemd's monotonic
      // clock, the node's), with a second's margin: every master still serving then means its checks pass.
      const [upS, startedUs] = (await c.execOk("cut -d' ' -f1 /proc/uptime; systemctl show -p ActiveEnterTimestampMonotonic --value kube-haproxy")).trim().split('\n');
      const runningMs = Number(upS) * 1000 - Number(startedUs) / 1000;
      expect(runningMs).toBeGreaterThan(0);
      await sleep(Math.max(0, HAPROXY_FALL_MS + 1000 - runningMs));
      const by = new Set<string>();
      for (let i = 0; i < 4 * lab().masters.length; i++) {
        const r = await through(c, '/version');
        expect(r.status).toBe(200);
        by.add(JSON.parse(r.body).standin);
      }
      expect([...by].sort()).toEqual(lab().masters.map((m) => m.name).sort());
    });
    const s = await k8sha(['status', '-i', inv, '--json']);
    expect(s.code, s.stderr).toBe(0);
    for (const n of JSON.parse(s.stdout).nodes) expect(n).toMatchObject({ impl: 'haproxy', healthy: true });
  });

  it("the VIP hosts' haproxy: backends UP with the certificate, and a request through the VIP is served", async () => {
    const inv = withCert('vip', (i) => (i.vip = { address: vipAddress(), port: 8443, hosts: HOSTS }));
    const d = await deployJson(['-i', inv, '--limit', HOSTS.join(',')]);
    expect(d.code, d.stderr).toBe(0);
    expect(d.stdout + d.stderr).not.toContain(keyLine());
    expect(await inContainer(HOSTS[0]!, "stat -c '%a %U:%G' /etc/haproxy/k8s-ha-client.pem")).toBe('600 root:root\n');
    // haproxy's own record of each master's last check, on every VIP host, asked until each has
    // checked every master at least once since the reload (INI: not yet): then every check must have
    // passed (L7OK; without the certificate it is L7STS 401) and every master be UP.
    const vipBackends = async () => {
      const st = await k8sha(['status', '-i', inv, '--limit', HOSTS.join(','), '--json']);
      expect(st.stdout).not.toContain(keyLine());
      const hosts: { backends: { name: string; status: string; check?: string }[] }[] = JSON.parse(st.stdout).vip.hosts;
      return { st, backends: hosts.map((h) => h.backends) };
    };
    const checked = (x: { check?: string }) => !!x.check && !/^(\* )?INI\b/.test(x.check);
    let seen = await vipBackends();
    for (let i = 0; i < 40 && !seen.backends.every((b) => b.length && b.every(checked)); i++) {
      await sleep(250);
      seen = await vipBackends();
    }
    const { st, backends } = seen;
    expect(st.code, st.stderr).toBe(0);
    expect(backends).toHaveLength(HOSTS.length);
    for (const b of backends) {
      expect(b.map((x) => [x.name, x.status])).toEqual(lab().masters.map((m) => [m.name, 'UP']));
      for (const x of b) expect(x.check, x.name).toMatch(/^(\* )?L7OK/);
    }
    const served = await new Promise<{ status: number; by: string }>((resolve, reject) => {
      https
        .get({ host: vipAddress(), port: 8443, path: '/readyz', ca: lab().caPem, servername: 'kubernetes', agent: false, ...client() }, (res) => {
          res.resume();
          resolve({ status: res.statusCode!, by: String(res.headers['x-standin']) });
        })
        .on('error', reject);
    });
    expect(served.status).toBe(200);
    expect(lab().masters.map((m) => m.name)).toContain(served.by);
  });
});
