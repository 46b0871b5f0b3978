/**
 * The VIP for clients outside the nodes, on three of the lab's masters (real hosts: systemd,
 * sshd, haproxy and keepalived from Debian's packages). Requests go from this machine to the VIP
 * as an outside client's would, through real haproxy, to real TLS stand-ins verified with the lab CA.
 */
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { k8sha } from '../helpers/cli.js';
import { deployJson, inventoryVariant } from '../helpers/deploy.js';
import { parseHaproxyCsv } from '../../src/engine/vip-status.js';
import { expectNothingLost, holderDown, kubectlHere, underFault } from '../helpers/kubectl.js';
import type { MasterAction } from '../../src/lab/topology.js';
import { inContainer, lab, scratchDir } from '../helpers/lab.js';
import { installCommand } from '../../src/ops/packages.js';
import { quote } from '../../src/util/quote.js';

const HOSTS = ['master-1', 'master-2', 'master-3'];
/**
 * keepalived's timings as src/lb/vip.ts sets them: a BACKUP that hears no advert takes the VIP after
 * its master-down interval, 3 x advert_int (1 s) + the skew of priority 100, (256 - 100) / 256 s.
 */
const MASTER_DOWN_MS = 3 * 1000 + Math.ceil(((256 - 100) / 256) * 1000);
/** Beyond keepalived's own timers, for a busy 2-core CI machine (its scheduling, our polling's). */
const NO_FLAP_MARGIN_MS = 2000;

function vipAddress(): string {
  const [a, b] = lab().masters[0]!.address.split('.');
  return `${a}.${b}.3.100`;
}

function vipInventory(name: string, extra: Record<string, unknown> = {}): string {
  return inventoryVariant(`vip-${name}`, (inv) => {
    inv.vip = { address: vipAddress(), port: 8443, hosts: HOSTS, ...extra };
  });
}

interface VipJson {
  ok: boolean;
  vip: {
    ok: boolean;
    holders: string[];
    rolled: string[];
    error?: string;
    through?: { ok: boolean; summary: string };
    hosts: Record<string, { status: string; heldBefore?: boolean; steps: { name: string; status: string; summary: string; error?: string }[]; error?: string }>;
  };
}

interface VipStatusJson {
  ok: boolean;
  vip: { holders: string[]; problem?: string; hosts: { name: string; holds: boolean; vrrp?: string; haproxy: string; keepalived: string; backends: { name: string; status: string; sessions: number }[] }[] };
}

async function deployVip(inventory: string, more: string[] = []) {
  // --limit to the VIP hosts: only the VIP layer runs (the nodes are other files' business).
  const r = await deployJson(['-i', inventory, '--limit', HOSTS.join(','), ...more]);
  return { ...r, vip: (r.report as unknown as VipJson).vip };
}

async function vipStatus(inventory: string) {
  const r = await k8sha(['status', '-i', inventory, '--limit', HOSTS.join(','), '--json']);
  return { code: r.code, s: JSON.parse(r.stdout) as VipStatusJson };
}

/** GET /readyz through the VIP from this machine, on a new connection: the apiserver stand-in that answered, or the error. */
function readyz(timeoutMs = 1500, path = '/readyz'): Promise<{ ok: boolean; by?: string; error?: string }> {
  return new Promise((resolve) => {
    const req = https.request(
      { host: vipAddress(), port: 8443, path, ca: lab().caPem, servername: 'kubernetes', agent: false, timeout: timeoutMs },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode === 200 ? { ok: true, by: String(res.headers['x-standin']) } : { ok: false, error: `HTTP ${res.statusCode}` }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', (e) => resolve({ ok: false, error: e.message }));
    req.end();
  });
}

/**
 * A request through the VIP every 100 ms until stopped: the longest time without an answer, and what
 * failed. A client's request (GET /version), not /readyz: an apiserver shutting down answers its
 * /readyz 500 on purpose while it serves everything else.
 */
function stream() {
  const results: { at: number; ok: boolean; error?: string }[] = [];
  let on = true;
  const inFlight: Promise<void>[] = [];
  const loop = (async () => {
    while (on) {
      const at = Date.now();
      inFlight.push(readyz(1500, '/version').then((r) => void results.push({ at, ok: r.ok, error: r.error })));
      await sleep(100);
    }
  })();
  return {
    results,
    async stop() {
      on = false;
      await loop;
      await Promise.all(inFlight);
      const okAt = results.filter((r) => r.ok).map((r) => r.at).sort((a, b) => a - b);
      let gapMs = 0;
      for (let i = 1; i < okAt.length; i++) gapMs = Math.max(gapMs, okAt[i]! - okAt[i - 1]!);
      const failed = results.filter((r) => !r.ok);
      return { sent: results.length, failed: failed.length, errors: [...new Set(failed.map((f) => f.error))], gapMs, lastOk: results.at(-1)?.ok };
    },
  };
}

async function holder(inventory: string): Promise<string> {
  const { s } = await vipStatus(inventory);
  expect(s.vip.holders).toHaveLength(1);
  return s.vip.holders[0]!;
}

/** The one host holding the VIP now, or undefined while it moves (none, or for a moment two). */
async function soleHolder(inventory: string): Promise<string | undefined> {
  const { s } = await vipStatus(inventory);
  return s.vip.holders.length === 1 ? s.vip.holders[0] : undefined;
}

async function waitFor(what: string, fn: () => Promise<boolean>, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await fn()) return;
    await sleep(500);
  }
  throw new Error(`timed out waiting for ${what}`);
}

/**
 * Who holds the VIP, asked of each host every 300 ms until stopped: every distinct answer seen
 * (`a+b` for two holders, `none`, `m?` for a host that could not be asked).
 */
function watchHolders(hosts: string[]) {
  let on = true;
  const seen = new Set<string>();
  const watch = (async () => {
    while (on) {
      const held = await Promise.all(hosts.map((m) => inContainer(m, `ip -o addr show to ${vipAddress()}`).then((out) => (out.trim() ? m : ''), () => `${m}?`)));
      seen.add(held.filter(Boolean).join('+') || 'none');
      await sleep(300);
    }
  })();
  return {
    async stop(): Promise<string[]> {
      on = false;
      await watch;
      return [...seen];
    },
  };
}

/** What k8s-ha leaves of the VIP on a host, each line a thing found (none: nothing). */
const VIP_LEFTOVERS =
  'systemctl is-enabled keepalived haproxy 2>/dev/null | grep -v disabled; systemctl is-active keepalived haproxy | grep -xv inactive; ' +
  'ls /etc/keepalived/keepalived.conf /etc/keepalived/k8s-ha-* /etc/haproxy/haproxy.cfg /etc/haproxy/k8s-ha-* /var/lib/k8s-ha /run/k8s-ha/vrrp-state 2>/dev/null; true';

let inventory: string;

beforeAll(async () => {
  inventory = vipInventory('base');
  const r = await deployVip(inventory);
  expect(r.code, r.stderr + JSON.stringify(r.vip, null, 2)).toBe(0);
}, 300_000);

afterAll(async () => {
  // Leave the masters as the other files expect them: every host up and every stand-in running.
  // The masters at once (no fault is recorded in lab.json: up and start write nothing there).
  await Promise.all(
    lab().masters.map(async (m) => {
      await k8sha(['lab', 'master', '--dir', lab().dir, m.name, 'up']);
      await k8sha(['lab', 'master', '--dir', lab().dir, m.name, 'start']);
    }),
  );
});

describe('the VIP on three masters', () => {
  it('is held by exactly one host, and /readyz answers 200 through it, verified with the cluster CA', async () => {
    const r = await deployVip(inventory);
    expect(r.code, r.stderr).toBe(0);
    expect(r.vip.ok).toBe(true);
    expect(r.vip.holders).toHaveLength(1);
    expect(r.vip.through?.summary).toMatch(/^GET \/readyz through .*:8443 from master-\d: 200 from .* \(TLS verified\)$/);
    // A second deploy changes nothing on any VIP host.
    expect(Object.values(r.vip.hosts).map((h) => h.status)).toEqual(['ok', 'ok', 'ok']);
    // From this machine, as an outside client: real bytes through the VIP.
    const answers = await Promise.all(Array.from({ length: 12 }, () => readyz()));
    expect(answers.filter((a) => !a.ok)).toEqual([]);
    expect(new Set(answers.map((a) => a.by)).size).toBeGreaterThan(1);
  });

  it("status: one holder, each host's VRRP state, haproxy's view of every master", async () => {
    const { code, s } = await vipStatus(inventory);
    expect(code).toBe(0);
    expect(s.vip.problem).toBeUndefined();
    expect(s.vip.hosts.map((h) => [h.haproxy, h.keepalived])).toEqual(HOSTS.map(() => ['active (running)', 'active (running)']));
    const states = s.vip.hosts.map((h) => h.vrrp).sort();
    expect(states).toEqual(['BACKUP', 'BACKUP', 'MASTER']);
    for (const h of s.vip.hosts) expect(h.backends.map((b) => [b.name, b.status])).toEqual(lab().masters.map((m) => [m.name, 'UP']));
  });

  it('a changed setting rolls the backups first and the holder last: the VIP does not move and no request fails', async () => {
    const before = await holder(inventory);
    const changed = vipInventory('timeout', { timeout: '2h' });
    const load = stream();
    const r = await deployVip(changed);
    const seen = await load.stop();
    expect(r.code, r.stderr).toBe(0);
    expect(r.vip.rolled).toHaveLength(3);
    expect(r.vip.rolled.at(-1)).toBe(before);
    expect(r.vip.holders).toEqual([before]);
    expect(seen.failed, JSON.stringify(seen)).toBe(0);
    // Back to the base settings for the tests after this one (rolled the same way).
    expect((await deployVip(inventory)).code).toBe(0);
  });

  it('an apiserver stopped: every VIP host marks it down within seconds (goal 6 s, 8 s allowed here) and requests through the VIP keep succeeding', async () => {
    const load = stream();
    await sleep(1000);
    const t0 = Date.now();
    await k8sha(['lab', 'master', '--dir', lab().dir, 'master-4', 'stop']);
    let markedMs = 0;
    // Each VIP host's haproxy asked directly (its stats page, from the host itself), a few times a
    // second: the time measured is haproxy's, not that of a status run polling it.
    // (With the Node.js the masters run their stand-in on: haproxy answers chunked, which a raw read would have to undo.)
    const statsOf = async (h: string) =>
      parseHaproxyCsv(await inContainer(h, `/usr/local/bin/node -e "require('http').get('http://127.0.0.1:8404/stats;csv', (r) => r.pipe(process.stdout))"`));
    await waitFor('haproxy to mark master-4 down everywhere', async () => {
      const down = (await Promise.all(HOSTS.map(statsOf))).every((backends) => backends.find((b) => b.name === 'master-4')?.status.startsWith('DOWN'));
      if (down) markedMs = Date.now() - t0;
      return down;
    }, 20_000);
    // And status says so on every host.
    const { s } = await vipStatus(inventory);
    expect(s.vip.hosts.map((h) => h.backends.find((b) => b.name === 'master-4')?.status.split(' ')[0])).toEqual(['DOWN', 'DOWN', 'DOWN']);
    await sleep(1000);
    const seen = await load.stop();
    await k8sha(['lab', 'master', '--dir', lab().dir, 'master-4', 'start']);
    console.log(`master-4 stopped: marked down on every VIP host after at most ${markedMs} ms (each haproxy's stats, polled)`);
    expect(markedMs).toBeLessThanOrEqual(8000);
    expect(seen.failed, JSON.stringify(seen)).toBe(0);
  });

  it("the holder's haproxy stopped: it goes to FAULT and the VIP moves; back, it does not take the VIP back", async () => {
    const before = await holder(inventory);
    const load = stream();
    await sleep(1000);
    await inContainer(before, 'systemctl stop haproxy');
    try {
      await waitFor('the VIP to move', async () => ![undefined, before].includes(await soleHolder(inventory)), 20_000);
      const { s } = await vipStatus(inventory);
      expect(s.vip.hosts.find((h) => h.name === before)?.vrrp).toBe('FAULT');
      await sleep(1500);
      const seen = await load.stop();
      expect(seen.lastOk).toBe(true);
      expect(seen.gapMs, JSON.stringify(seen)).toBeLessThanOrEqual(8000);
    } finally {
      await load.stop();
      await inContainer(before, 'systemctl start haproxy');
    }
    const after = await holder(inventory);
    // Its checks pass again (the process at once, /healthz after 2 x 2 s): it leaves FAULT for BACKUP.
    // From then on a host that would take the VIP back does so within its master-down interval.
    let state: string | undefined;
    await waitFor(`${before} to leave FAULT`, async () => {
      state = (await vipStatus(inventory)).s.vip.hosts.find((h) => h.name === before)?.vrrp;
      return !!state && state !== 'FAULT';
    }, 20_000);
    expect(state).toBe('BACKUP');
    await sleep(MASTER_DOWN_MS + NO_FLAP_MARGIN_MS);
    expect(await holder(inventory)).toBe(after);
    expect((await vipStatus(inventory)).s.vip.hosts.find((h) => h.name === before)?.vrrp).toBe('BACKUP');
  });

  it('the holder host down under a stream of requests: the VIP moves within seconds, and does not flap back when the host returns', async () => {
    const before = await holder(inventory);
    const load = stream();
    let isUp = false;
    try {
      await sleep(1000);
      await k8sha(['lab', 'master', '--dir', lab().dir, before, 'down']);
      // Recovered once the VIP has moved and haproxy on its new holder has marked the lost host's
      // apiserver down (until then a connection sent to it waits out timeout connect).
      await waitFor('the VIP to move and the lost apiserver to be marked down', async () => {
        const { s } = await vipStatus(inventory);
        const now = s.vip.hosts.find((h) => h.holds && h.name !== before);
        return !!now && !!now.backends.find((b) => b.name === before)?.status.startsWith('DOWN');
      }, 30_000);
      await sleep(1500);
      const seen = await load.stop();
      expect(seen.lastOk, JSON.stringify(seen)).toBe(true);
      // Measured 4.6 s (docs/benchmarks.md); the bound leaves room for a busy CI machine.
      expect(seen.gapMs, JSON.stringify(seen)).toBeLessThanOrEqual(8000);
      const after = await holder(inventory);
      expect(after).not.toBe(before);
      const back = stream();
      expect((await k8sha(['lab', 'master', '--dir', lab().dir, before, 'up'])).code).toBe(0);
      isUp = true;
      // Its keepalived back as BACKUP; from then on a host that would take the VIP back does so within its master-down interval.
      let state: string | undefined;
      await waitFor(`${before} to run keepalived as BACKUP`, async () => {
        state = (await vipStatus(inventory)).s.vip.hosts.find((h) => h.name === before)?.vrrp;
        return state === 'BACKUP' || state === 'MASTER';
      }, 30_000);
      expect(state).toBe('BACKUP');
      await sleep(MASTER_DOWN_MS + NO_FLAP_MARGIN_MS);
      const during = await back.stop();
      expect(await holder(inventory)).toBe(after);
      expect(during.failed, JSON.stringify(during)).toBe(0);
    } finally {
      await load.stop();
      // Whatever failed above, the host comes back for the tests after this one.
      if (!isUp) await k8sha(['lab', 'master', '--dir', lab().dir, before, 'up']);
    }
  });

  it('a real client (kubectl here, a reflector) watching through the VIP while the holder goes down: it resumes through the new holder, no event lost', async () => {
    const before = await holder(inventory);
    const master = async (name: string, action: MasterAction) => {
      expect((await k8sha(['lab', 'master', '--dir', lab().dir, name, action])).code).toBe(0);
    };
    const run = await underFault(kubectlHere(`https://${vipAddress()}:8443`), holderDown(before, master));
    expectNothingLost(run);
    expect(await holder(inventory)).not.toBe(before);
  }, 300_000);

  it('a host added to vip.hosts joins as a backup, and taken out again leaves before the others drop it: never two holders, and the VIP stays where it is', async () => {
    const before = await holder(inventory);
    const four = vipInventory('four', { hosts: [...HOSTS, 'master-4'] });
    const ALL = ['master-1', 'master-2', 'master-3', 'master-4'];
    // Who holds the VIP, asked of all four hosts every 300 ms while the deploy runs and for the master-down interval after.
    let watch = watchHolders(ALL);
    const r = await deployJson(['-i', four, '--limit', ALL.join(',')]);
    // master-4's keepalived started last, as BACKUP (deploy verified it): a host that would take the VIP does so within its master-down interval.
    await sleep(MASTER_DOWN_MS + NO_FLAP_MARGIN_MS);
    expect(await watch.stop()).toEqual([before]);
    expect(r.code, r.stderr).toBe(0);
    const vip = (r.report as unknown as VipJson).vip;
    // The serving three learnt the new peer one at a time, the holder last; then the new host started.
    expect(vip.rolled.at(-1)).toBe(before);
    expect(vip.hosts['master-4']!.status).toBe('changed');
    const { s } = await vipStatus(four);
    expect(s.vip.hosts.find((h) => h.name === 'master-4')?.vrrp).toBe('BACKUP');

    // Out of vip.hosts again: the three's keepalived still names master-4 as a peer, so deploy finds it,
    // stops it first (a backup: the VIP does not move), and only then rolls the three to their old peer list.
    watch = watchHolders(ALL);
    const back = await deployVip(inventory);
    await sleep(MASTER_DOWN_MS + NO_FLAP_MARGIN_MS);
    expect(await watch.stop()).toEqual([before]);
    expect(back.code, back.stderr).toBe(0);
    expect(back.stderr).toContain('no longer in vip.hosts: master-4: being taken off the VIP before the others drop it as a peer');
    expect(back.vip.hosts['master-4']!.status).toBe('changed');
    expect(back.vip.hosts['master-4']!.steps.map((x) => x.summary)).toEqual([
      'stopped and disabled keepalived; stopped and disabled haproxy; removed /etc/haproxy/k8s-ha-cluster-ca.crt; removed /etc/haproxy/k8s-ha-client.pem; ' +
        'removed /etc/keepalived/k8s-ha-check-haproxy; removed /etc/keepalived/k8s-ha-notify; removed /run/k8s-ha/vrrp-state; removed /etc/keepalived/keepalived.conf; removed /etc/haproxy/haproxy.cfg',
    ]);
    expect(back.vip.rolled.at(-1)).toBe(before);
    expect(back.vip.holders).toEqual([before]);
    expect(await inContainer('master-4', VIP_LEFTOVERS)).toBe('');
  });

  it('the holder taken out of vip.hosts: it leaves first, the VIP moves once to a remaining host, never two holders; added back, it joins as a backup', async () => {
    const before = await holder(inventory);
    const rest = HOSTS.filter((h) => h !== before);
    const without = vipInventory('without-holder', { hosts: rest });
    const check = await k8sha(['deploy', '-i', without, '--limit', rest.join(','), '--check']);
    expect(check.code, check.stderr).toBe(5);
    expect(check.stdout).toContain(`leave the VIP: no longer in vip.hosts: stop and disable keepalived and haproxy`);
    expect(check.stdout).toContain('it holds the VIP now, which moves to a remaining host');
    const watch = watchHolders(HOSTS);
    const d = await deployJson(['-i', without, '--limit', rest.join(',')]);
    const out = { ...d, vip: (d.report as unknown as VipJson).vip };
    await sleep(MASTER_DOWN_MS + NO_FLAP_MARGIN_MS);
    const seen = await watch.stop();
    expect(out.code, out.stderr).toBe(0);
    const moved = out.vip.holders;
    expect(moved).toHaveLength(1);
    expect(rest).toContain(moved[0]);
    // Held by the old holder, then (for the moment keepalived hands over) by none, then by one remaining host: never two.
    expect(seen.filter((x) => x !== before && x !== 'none')).toEqual([moved[0]]);
    expect(seen.some((x) => x.includes('+'))).toBe(false);
    expect(out.vip.hosts[before]!.steps[0]!.summary).toMatch(new RegExp(`the VIP moved to ${moved[0]} in \\d+\\.\\d s$`));
    expect(await inContainer(before, VIP_LEFTOVERS)).toBe('');
    // Back in: it joins as a backup, the VIP stays with the new holder.
    const back = await deployVip(inventory);
    expect(back.code, back.stderr).toBe(0);
    expect(back.vip.holders).toEqual(moved);
  });

  it('two hosts holding the VIP: status and deploy report the split brain by name', async () => {
    const h = await holder(inventory);
    const other = HOSTS.find((x) => x !== h)!;
    await inContainer(other, `ip addr add ${vipAddress()}/32 dev eth0`);
    try {
      const { code, s } = await vipStatus(inventory);
      expect(code).toBe(3);
      expect(s.vip.problem).toBe(`split brain: ${[h, other].sort().join(' and ')} all hold the VIP ${vipAddress()}`);
      const check = await deployJson(['-i', inventory, '--limit', HOSTS.join(','), '--check']);
      expect(check.code).toBe(3);
      expect((check.report as unknown as VipJson).vip.error).toMatch(/^split brain: /);
    } finally {
      await inContainer(other, `ip addr del ${vipAddress()}/32 dev eth0`);
    }
  });

  it('a CA file haproxy could not load is refused at load, before any host is touched: the live config keeps running and serving', async () => {
    const h = await holder(inventory);
    const live = 'sha256sum /etc/haproxy/haproxy.cfg /etc/haproxy/k8s-ha-cluster-ca.crt';
    const liveBefore = await Promise.all(HOSTS.map((x) => inContainer(x, live)));
    const badCa = path.join(scratchDir(), 'bad-ca.pem');
    fs.writeFileSync(badCa, '-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n');
    const bad = inventoryVariant('vip-bad-ca', (inv) => {
      inv.vip = { address: vipAddress(), port: 8443, hosts: HOSTS };
      inv.tls.caFile = badCa;
    });
    const r = await k8sha(['deploy', '-i', bad, '--limit', HOSTS.join(',')]);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toMatch(/tls\.caFile: .*bad-ca\.pem/);
    // Neither the CA nor the config changed on any host: nothing was replaced.
    expect(await Promise.all(HOSTS.map((x) => inContainer(x, live)))).toEqual(liveBefore);
    expect((await inContainer(h, 'systemctl is-active haproxy keepalived')).trim().split('\n')).toEqual(['active', 'active']);
    expect((await readyz()).ok).toBe(true);
  });

  it('adverts from a host that is not a peer (same router id and VIP, priority 254) are dropped: the holder stays MASTER, no backup moves, and the VIP keeps serving', async () => {
    const before = await holder(inventory);
    // A lab host that is not in vip.hosts: master-4, which the test above left with keepalived
    // installed (disabled): no package to install and remove here. Not a peer all the same.
    const rogue = lab().masters.find((m) => !HOSTS.includes(m.name))!;
    const peers = lab().masters.filter((m) => HOSTS.includes(m.name));
    // vip.routerId's default (the inventory sets none). The rogue's VIP goes on its loopback: it
    // believes it is master and holds the address, but sends no gratuitous ARP into the lab's
    // network. A host on the same segment can always take an address by ARP, VRRP or not (docs/security.md,
    // "VRRP and the VIP port"); what is tested here is keepalived's answer to the adverts.
    const conf = `global_defs {
    router_id rogue
}
vrrp_instance rogue {
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 254
    advert_int 1
    unicast_src_ip ${rogue.address}
    unicast_peer {
${peers.map((p) => `        ${p.address}`).join('\n')}
    }
    virtual_ipaddress {
        ${vipAddress()}/32 dev lo
    }
}
`;
    const installed = !!(await inContainer(rogue.name, 'command -v keepalived || true')).trim();
    let on = true;
    let watch: Promise<void> = Promise.resolve();
    let load: ReturnType<typeof stream> | undefined;
    try {
      // From Debian's packages, as deploy installs it on the VIP hosts.
      if (!installed) await inContainer(rogue.name, installCommand(['keepalived'], 'apt-get'));
      await inContainer(rogue.name, `mkdir -p /etc/keepalived && printf %s ${quote(conf)} > /etc/keepalived/keepalived.conf`);
      // Who holds the VIP among the real hosts, every second from before the rogue starts until the end
      // (the journals below record every state change; this is what a user would see).
      const seen = new Set<string>();
      watch = (async () => {
        while (on) {
          const held = await Promise.all(peers.map((m) => inContainer(m.name, `ip -o addr show to ${vipAddress()}`).then((out) => (out.trim() ? m.name : ''), () => `${m.name}?`)));
          seen.add(held.filter(Boolean).join('+') || 'none');
          await sleep(1000);
        }
      })();
      load = stream();
      const since = Math.floor(Date.now() / 1000);
      await inContainer(rogue.name, 'systemctl restart keepalived');
      // The rogue believes it is master: it has added the VIP (to its loopback) and advertises 254 to every real host.
      await waitFor('the rogue keepalived to take the VIP', async () => !!(await inContainer(rogue.name, `ip -o addr show to ${vipAddress()}`)).trim(), 20_000);
      await sleep(10_000);
      const traffic = await load.stop();
      on = false;
      await watch;
      // Each real host's keepalived log over the window: no state change, and the rogue's adverts dropped for their source.
      const journals = await Promise.all(peers.map((m) => inContainer(m.name, `journalctl -u keepalived --since @${since} -o cat --no-pager`)));
      const { s } = await vipStatus(inventory);
      console.log(
        `rogue ${rogue.name} (${rogue.address}) at priority 254 for 10 s: holders seen ${[...seen].join(', ')}; ` +
          `adverts dropped per host: ${peers.map((m, i) => `${m.name} ${journals[i]!.split('\n').filter((l) => l.includes('not a unicast peer')).length}`).join(', ')}; ` +
          `requests ${traffic.sent}, failed ${traffic.failed}`,
      );
      const logs = peers.map((m, i) => `${m.name}:\n${journals[i]!.split('\n').filter((l) => !l.includes('not a unicast peer')).join('\n')}`).join('\n');
      expect([...seen], logs).toEqual([before]);
      expect(s.vip.holders, logs).toEqual([before]);
      expect(s.vip.hosts.find((h) => h.name === before)?.vrrp, logs).toBe('MASTER');
      for (const [i, m] of peers.entries()) {
        const lines = journals[i]!.split('\n');
        expect(lines.filter((l) => /Entering (MASTER|BACKUP|FAULT) STATE|received advert .* with higher priority/i.test(l)), m.name).toEqual([]);
        expect(lines.filter((l) => l.includes(`unicast source address ${rogue.address} not a unicast peer`)).length, `${m.name}:\n${journals[i]}`).toBeGreaterThan(0);
      }
      expect(traffic.failed, JSON.stringify(traffic)).toBe(0);
    } finally {
      on = false;
      await watch;
      await load?.stop();
      // Whatever failed: the rogue stopped, its config and address gone, and its keepalived removed if this test installed it.
      await inContainer(
        rogue.name,
        `systemctl stop keepalived; rm -f /etc/keepalived/keepalived.conf; ip addr del ${vipAddress()}/32 dev lo 2>/dev/null; ` +
          (installed ? 'true' : 'DEBIAN_FRONTEND=noninteractive apt-get purge -y -q keepalived >/dev/null'),
      );
    }
    expect(await holder(inventory)).toBe(before);
  }, 300_000);
  it('remove --vip: the whole layer off its hosts, the holder last; nothing of it left, and a second run finds nothing', async () => {
    const check = await k8sha(['remove', '-i', inventory, '--vip', '--check']);
    expect(check.code, check.stderr).toBe(5);
    expect(check.stdout).toContain('would leave the VIP: remove --vip: stop and disable keepalived and haproxy, then remove');
    // The holder, as --check names it.
    const before = /^vip\/(\S+) \([^)]*\): would change\n {2}would leave the VIP: [^\n]*it holds the VIP now, which goes with it$/m.exec(check.stdout)?.[1];
    expect(HOSTS, check.stdout).toContain(before);
    const r = await k8sha(['remove', '-i', inventory, '--vip', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as { hosts: Record<string, { status: string }> };
    expect(Object.entries(report.hosts).map(([n, h]) => [n, h.status])).toEqual(HOSTS.map((h) => [`vip/${h}`, 'changed']));
    // One host at a time, the holder last: the VIP goes once, with it.
    const order = [...r.stderr.matchAll(/^vip\/(\S+): removing/gm)].map((m) => m[1]);
    expect(order).toHaveLength(3);
    expect(order.at(-1)).toBe(before);
    for (const h of HOSTS) {
      expect(await inContainer(h, VIP_LEFTOVERS), h).toBe('');
      expect((await inContainer(h, `ip -o addr show to ${vipAddress()}`)).trim(), h).toBe('');
    }
    const again = await k8sha(['remove', '-i', inventory, '--vip']);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain("leave the VIP: its keepalived is not one k8s-ha set up: left alone");
  });
});
