/**
 * kube-lb's discovery: planBackends's safety rules from plain data, and the watch itself against two
 * apiserver stand-ins on loopback (127.0.0.1 and 127.0.0.2, each the other's peer): it lists, then
 * watches one stream, and sees an apiserver leave and come back without a second list.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ClusterApiserver } from '../../src/cluster/control-plane.js';
import { createCa, issueCertificate } from '../../src/lab/pki.js';
import { serveApiserver, type Standin } from '../../src/lab/standin.js';
import { proxyConfigSchema } from '../../src/proxy/config.js';
import { Discovery, learnedName, planBackends } from '../../src/proxy/discovery.js';
import { Pool } from '../../src/proxy/pool.js';
import { freeLoopbackPort } from '../helpers/ports.js';

const b = (name: string, address: string, port = 6443) => ({ name, address, port });
const a = (address: string, ready = true, port = 6443): ClusterApiserver => ({ address, port, ready });
const seeds = [b('m1', '10.0.0.1'), b('m2', '10.0.0.2'), b('m3', '10.0.0.3')];

describe('planBackends: what the pool balances to from what the cluster names', () => {
  it('a master retired and another added: the new one in, named from its address; the retired seed out', () => {
    expect(planBackends(seeds, seeds, [a('10.0.0.1'), a('10.0.0.2'), a('10.0.0.4')])).toEqual({ backends: [seeds[0], seeds[1], b('apiserver-10-0-0-4', '10.0.0.4')] });
  });
  it('a seed the cluster stops naming stays until it names a replacement (never fewer backends than seeds)', () => {
    expect(planBackends(seeds, seeds, [a('10.0.0.1'), a('10.0.0.2')]).backends).toEqual(seeds);
    expect(planBackends(seeds, seeds, [a('10.0.0.1')]).backends).toEqual([seeds[0], seeds[1], seeds[2]]);
  });
  it('more apiservers than seeds: all of them', () => {
    expect(planBackends(seeds, seeds, ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4'].map((x) => a(x))).backends.map((x) => x.name)).toEqual(['m1', 'm2', 'm3', 'apiserver-10-0-0-4']);
  });
  it('an empty answer, one with no ready apiserver, or one with none of the seeds is not taken: the pool stays as it is, and why is said', () => {
    expect(planBackends(seeds, seeds, [])).toEqual({ backends: seeds, ignored: 'the cluster names no ready apiserver' });
    expect(planBackends(seeds, seeds, [a('10.0.0.1', false)]).ignored).toBe('the cluster names no ready apiserver');
    expect(planBackends(seeds, seeds, [a('10.9.0.1'), a('10.9.0.2')])).toEqual({
      backends: seeds,
      ignored: "the cluster names 10.9.0.1:6443, 10.9.0.2:6443, none of the configured masters (another cluster's answer? after a move, deploy the new masters)",
    });
    // Nor in two steps: learned backends alone do not make an answer with no seed acceptable.
    const now = [seeds[0]!, b('apiserver-10-0-0-4', '10.0.0.4'), b('apiserver-10-0-0-5', '10.0.0.5')];
    expect(planBackends(seeds, now, [a('10.0.0.4'), a('10.0.0.5'), a('10.0.0.6')]).ignored).toMatch(/none of the configured masters/);
    expect(planBackends(seeds, seeds, Array.from({ length: 40 }, (_, i) => a(`10.0.1.${i + 1}`)).concat(a('10.0.0.1'))).ignored).toBe('the cluster names 41 apiservers, more than 32');
  });
  it('only unicast addresses: names, wildcards, loopback (its own port), link-local, multicast and zones are left out', () => {
    const bad = ['evil.example', '0.0.0.0', '127.0.0.1', '169.254.0.1', '224.0.0.1', '::', '::1', 'fe80::1', 'fe80::1%eth0', 'ff02::1', '::ffff:10.0.0.9'];
    expect(planBackends(seeds, seeds, [a('10.0.0.1'), ...bad.map((x) => a(x)), a('10.0.0.2')]).backends).toEqual(seeds);
    expect(learnedName('fd00::4')).toBe('apiserver-fd00-4');
    expect(learnedName('10.0.0.4', 443)).toBe('apiserver-10-0-0-4-443');
  });
  it('a seed named by host name matches the address it resolves to; one address on two ports gets two names', () => {
    const named = [b('cp1', 'cp1.example'), seeds[1]!];
    const r = planBackends(named, named, [a('10.0.0.11'), a('10.0.0.2'), a('10.0.0.7', true, 6443), a('10.0.0.7', true, 443)], new Map([['cp1.example', ['10.0.0.11']]]));
    expect(r.backends.map((x) => x.name)).toEqual(['cp1', 'm2', 'apiserver-10-0-0-7', 'apiserver-10-0-0-7-443']);
  });
  it('an IPv6 seed matches the cluster\'s address however either is written', () => {
    const v6 = [b('m1', 'fd00:0:0::1'), b('m2', 'FD00::2')];
    expect(planBackends(v6, v6, [a('fd00::1'), a('fd00::2'), a('fd00::3')]).backends.map((x) => x.name)).toEqual(['m1', 'm2', 'apiserver-fd00-3']);
  });
});

describe('planBackends keeps what it learned', () => {
  it('a learned backend keeps its name and state while the cluster names it', () => {
    const now = [seeds[0]!, seeds[1]!, b('apiserver-10-0-0-4', '10.0.0.4')];
    const r = planBackends(seeds, now, [a('10.0.0.1'), a('10.0.0.4'), a('10.0.0.5')]);
    expect(r.backends[1]).toBe(now[2]);
    expect(r.backends.map((x) => x.name)).toEqual(['m1', 'apiserver-10-0-0-4', 'apiserver-10-0-0-5']);
  });
});

describe('the watch, against two stand-ins', () => {
  let dir: string;
  const standins: Standin[] = [];
  let port = 0;
  let controlPort = 0;
  let kubeconfig: string;

  /** A discovery with `cfg` until it first logs (at most 5 s): what it said and learned, and its state then. */
  const firstWords = async (cfg: ReturnType<typeof proxyConfigSchema.parse>) => {
    const logs: string[] = [];
    const learned: unknown[] = [];
    const d = new Discovery(cfg, { pool: new Pool(cfg, () => {}), log: (l) => logs.push(l), onLearned: (l) => learned.push(l) });
    d.start();
    try {
      const t0 = Date.now();
      while (!logs.length && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 50));
      return { logs, learned, state: { ...d.state } };
    } finally {
      d.stop();
    }
  };
  const start = async (i: number) => {
    const address = `127.0.0.${i + 1}`;
    const other = `127.0.0.${2 - i}`;
    const s = serveApiserver({ name: `d-${i + 1}`, pkiDir: dir, port, controlPort, host: address, shutdownDelayMs: 0, drainMs: 0, bookmarkMs: 500, self: { address, port }, peers: [{ address: other, port }], log: () => {} });
    await new Promise((r) => (s.api.listening ? r(undefined) : s.api.once('listening', r)));
    standins[i] = s;
  };

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-discovery-'));
    const ca = await createCa('discovery test CA');
    const leaf = await issueCertificate(ca, { commonName: 'standin', dnsNames: ['kubernetes'], ipAddresses: ['127.0.0.1', '127.0.0.2'], usage: 'server' });
    const proxy = await issueCertificate(ca, { commonName: 'system:kube-proxy', dnsNames: [], ipAddresses: [], usage: 'client' });
    fs.writeFileSync(path.join(dir, 'ca.crt'), ca.cert);
    fs.writeFileSync(path.join(dir, 'tls.crt'), leaf.cert);
    fs.writeFileSync(path.join(dir, 'tls.key'), leaf.key);
    const b64 = (t: string) => Buffer.from(t).toString('base64');
    kubeconfig = path.join(dir, 'kube-proxy.kubeconfig');
    fs.writeFileSync(
      kubeconfig,
      YAML.stringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [{ name: 'c', cluster: { server: 'https://127.0.0.1:8443', 'certificate-authority-data': b64(ca.cert), 'tls-server-name': 'kubernetes' } }],
        users: [{ name: 'kube-proxy', user: { 'client-certificate-data': b64(proxy.cert), 'client-key-data': b64(proxy.key) } }],
        contexts: [{ name: 'c', context: { cluster: 'c', user: 'kube-proxy' } }],
        'current-context': 'c',
      }),
    );
    port = await freeLoopbackPort();
    controlPort = await freeLoopbackPort();
    await start(0);
    await start(1);
  });
  afterAll(() => {
    standins.forEach((s) => s?.close());
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('lists once, then follows one watch: an apiserver leaving and coming back, each seen within a few seconds, with no second list', async () => {
    const cfg = proxyConfigSchema.parse({ backends: [b('m1', '127.0.0.1', port), b('m2', '127.0.0.2', port)], active: { serverName: 'kubernetes' }, discovery: { kubeconfig } });
    const pool = new Pool(cfg, () => {});
    const seen: { at: number; names: string[] }[] = [];
    const logs: string[] = [];
    const d = new Discovery(cfg, { pool, log: (l) => logs.push(l), onLearned: (list) => seen.push({ at: Date.now(), names: list.map((x) => `${x.address}:${x.port}`) }) });
    const until = async (f: () => boolean, ms: number) => {
      const t0 = Date.now();
      while (!f() && Date.now() - t0 < ms) await new Promise((r) => setTimeout(r, 50));
      return Date.now() - t0;
    };
    const both = [`127.0.0.1:${port}`, `127.0.0.2:${port}`];
    d.start();
    try {
      await until(() => seen.some((s) => s.names.length === 2), 5000);
      expect(seen.at(-1)?.names, logs.join('\n')).toEqual(both);
      expect(d.state).toMatchObject({ watching: true, lists: 1 });

      // The second stops: gone from the first's answer at once (its lease given up), pushed down the watch.
      await standins[1]!.terminate();
      const gone = await until(() => seen.at(-1)?.names.length === 1, 8000);
      expect(seen.at(-1)?.names).toEqual([both[0]]);
      expect(gone).toBeLessThan(8000);
      // Back: named again once the first sees its lease.
      await start(1);
      await until(() => seen.at(-1)?.names.length === 2, 8000);
      expect(seen.at(-1)?.names).toEqual(both);
      // One list in all; the watch held (through 127.0.0.1, the one that stayed, or made again there).
      expect(d.state.lists).toBe(1);
      expect(d.state.errors, logs.join('\n')).toBe(0);
    } finally {
      d.stop();
    }
  }, 30_000);

  it('checks that flap (the backends marked down and up in turn) do not make a watch each time: a short-lived watch moves through the backoff', async () => {
    const cfg = proxyConfigSchema.parse({ backends: [b('m1', '127.0.0.1', port), b('m2', '127.0.0.2', port)], active: { serverName: 'kubernetes', rise: 1, fall: 1 }, discovery: { kubeconfig } });
    const pool = new Pool(cfg, () => {});
    const d = new Discovery(cfg, { pool, log: () => {}, onLearned: () => {}, random: () => 0.5 });
    d.start();
    // One backend up and the other down, turn about every 1.5 s, as checks of busy apiservers time out and pass (the pool's own verdict).
    let tick = 0;
    const flap = setInterval(() => {
      [...pool.backends.keys()].forEach((k, i) => pool.checked(k, (tick + i) % 2 === 0 ? { ok: true, detail: 'HTTP 200', resumed: false } : { ok: false, detail: 'no answer within 700 ms', resumed: false, silent: true }, 700));
      tick++;
    }, 1500);
    try {
      await new Promise((r) => setTimeout(r, 15_000));
      // Made again at once after each turn, this was a watch every 1.5 s (10 in 15 s); through the
      // backoff (1, 2, 4 s...), 4 here.
      expect(d.state.watches).toBeGreaterThanOrEqual(2);
      expect(d.state.watches).toBeLessThanOrEqual(5);
      expect(d.state.lists).toBe(1);
    } finally {
      clearInterval(flap);
      d.stop();
    }
  }, 20_000);

  it('an apiserver whose certificate the kubeconfig\'s CA did not sign gets no request: nothing learned, said once', async () => {
    const other = await createCa('another CA');
    const doc = YAML.parse(fs.readFileSync(kubeconfig, 'utf8'));
    doc.clusters[0].cluster['certificate-authority-data'] = Buffer.from(other.cert).toString('base64');
    const wrong = path.join(dir, 'wrong-ca.kubeconfig');
    fs.writeFileSync(wrong, YAML.stringify(doc));
    // insecureSkipVerify in the config changes nothing: discovery always verifies.
    const { logs, learned } = await firstWords(proxyConfigSchema.parse({ backends: [b('m1', '127.0.0.1', port)], active: { serverName: 'kubernetes', insecureSkipVerify: true }, discovery: { kubeconfig: wrong } }));
    expect(logs).toEqual([expect.stringMatching(/^discovery: list through m1: .*(self.signed|unable to verify|certificate)/i)]);
    expect(learned).toEqual([]);
  });

  it('credentials the apiserver refuses (anonymous: no certificate): said once, nothing learned, the configured backends stay', async () => {
    const doc = YAML.parse(fs.readFileSync(kubeconfig, 'utf8'));
    doc.users[0].user = { token: 'not-a-certificate' };
    const tokenOnly = path.join(dir, 'token.kubeconfig');
    fs.writeFileSync(tokenOnly, YAML.stringify(doc));
    const { logs, learned, state } = await firstWords(proxyConfigSchema.parse({ backends: [b('m1', '127.0.0.1', port)], active: { serverName: 'kubernetes' }, discovery: { kubeconfig: tokenOnly } }));
    expect(logs).toEqual([expect.stringMatching(/^discovery: 403 Forbidden from m1: endpointslices\.discovery\.k8s\.io is forbidden: User "system:anonymous" cannot list .*; keeping the backends in use$/)]);
    expect(learned).toEqual([]);
    expect(state).toMatchObject({ watching: false, errors: 1 });
  });
});

describe('the unit and config with kubeLb.discovery', () => {
  it("copies kube-proxy's kubeconfig as root into a folder of root's that kube-lb's group may read, at each start and reload, a missing one ignored; the config names it", async () => {
    const { parseInventory } = await import('../../src/inventory/load.js');
    const { renderKubeLbConf, renderKubeLbUnit } = await import('../../src/lb/kube-lb.js');
    const inv = (extra: string) =>
      parseInventory(`masters: [{ name: m1, address: 10.0.1.11 }]\nnodes: [{ name: n1, address: 10.0.2.21 }]\nlb: { impl: kube-lb }\ntls: { insecureSkipVerify: true }\n${extra}`).inventory!;
    const on = inv('kubeLb: { discovery: { kubeconfig: /var/lib/kube-proxy/kubeconfig } }\n');
    const unit = renderKubeLbUnit(on);
    const copy = ['-+/usr/bin/install -d -m 0755 -o root -g root /run/kube-lb-discovery', '-+/bin/rm -f /run/kube-lb-discovery/kubeconfig', '-+/usr/bin/install -m 0440 -o root -g kube-lb /var/lib/kube-proxy/kubeconfig /run/kube-lb-discovery/kubeconfig'];
    expect(unit).toContain(`Environment=KUBE_LB_DISCOVERY_COPY=/run/kube-lb-discovery/kubeconfig\n${copy.map((c) => `ExecStartPre=${c}`).join('\n')}\nExecStopPost=-+/bin/rm -rf /run/kube-lb-discovery\n`);
    expect(unit).toContain(`${copy.map((c) => `ExecReload=${c}`).join('\n')}\nExecReload=/bin/kill -HUP $MAINPID`);
    expect(unit).toContain('User=kube-lb');
    expect(proxyConfigSchema.parse(YAML.parse(renderKubeLbConf(on))).discovery).toEqual({ kubeconfig: '/var/lib/kube-proxy/kubeconfig' });
    // Off: neither the copy nor the runtime folder.
    const off = inv('');
    expect(renderKubeLbUnit(off)).not.toMatch(/discovery|install/);
    expect(YAML.parse(renderKubeLbConf(off)).discovery).toBeUndefined();
    // A path that is not one: refused at load.
    expect(parseInventory(`masters: [{ name: m1, address: 10.0.1.11 }]\nnodes: [{ name: n1, address: 10.0.2.21 }]\nlb: { impl: kube-lb }\ntls: { insecureSkipVerify: true }\nkubeLb: { discovery: { kubeconfig: 'kube config' } }\n`).diagnostics[0]?.path).toEqual(['kubeLb', 'discovery', 'kubeconfig']);
  });
});
