/**
 * The VIP layer's pure parts: the inventory's vip: section and its rules, the haproxy and
 * keepalived configs each host gets, the packages step, haproxy's stats, and the verdicts.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { formatDiagnostic } from '../../src/inventory/diagnostics.js';
import { parseInventory } from '../../src/inventory/load.js';
import { vipHosts, type Inventory } from '../../src/inventory/schema.js';
import { renderKeepalived, renderVipCheck, renderVipHaproxy, vipInterface } from '../../src/lb/vip.js';
import { packages, installCommand } from '../../src/ops/packages.js';
import { replacedOn } from '../../src/ops/service.js';
import { renderKubeHaproxyConf, renderKubeHaproxyUnit } from '../../src/lb/haproxy.js';
import { interfaceOf, type HostFacts } from '../../src/facts/host.js';
import { parseHaproxyCsv, vipProblem } from '../../src/engine/vip-status.js';
import { planHost } from '../../src/engine/plan.js';
import { restoreScript } from '../../src/engine/scripts.js';
import { OPERATIONS } from '../../src/ops/catalogue.js';
import { hostFacts } from '../helpers/facts.js';
import { keepalivedPeers, leaveScript, leavingHosts, parseLeaveOutput } from '../../src/engine/vip-leave.js';

const NGINX = `nginx: { version: 1.22.1, sources: [http://x.invalid/n.tar.gz], sha256: ${'a'.repeat(64)} }`;
const MASTERS = '[{ name: m1, address: 10.0.1.11 }, { name: m2, address: 10.0.1.12 }, { name: m3, address: 10.0.1.13 }]';

function text(vip: string, o: { nodes?: string; tls?: string } = {}): string {
  return `masters: ${MASTERS}\nnodes: ${o.nodes ?? '[{ name: n1, address: 10.0.2.21 }]'}\n${NGINX}\ntls: ${o.tls ?? '{ caFile: ca.crt, serverName: kubernetes }'}\n${vip}\n`;
}
const lines = (t: string) => parseInventory(t).diagnostics.map((d) => formatDiagnostic('inv.yaml', d));
const load = (t: string) => parseInventory(t).inventory as Inventory;

/** A host's facts, with the interfaces the masters' addresses are on. */
const facts = (extra: Partial<HostFacts> = {}): HostFacts => hostFacts({ interfaces: { '10.0.1.11': 'eth0', '10.0.1.12': 'eth0', '10.0.1.13': 'ens3' }, ...extra });

/** The VIP playbook's shape: haproxy's config and service, then keepalived's. */
function twoServices() {
  const op = (type: string, args: unknown) => ({ name: `${type} ${JSON.stringify(args)}`, type: 'op' as const, op: OPERATIONS[type]!, args: OPERATIONS[type]!.args.parse(args) });
  return [
    op('template', { template: 'a', dest: '/etc/haproxy/haproxy.cfg', mode: '0644', notify: ['reload'] }),
    op('service', { name: 'haproxy' }),
    op('template', { template: 'b', dest: '/etc/keepalived/keepalived.conf', mode: '0644', notify: ['reload'] }),
    op('service', { name: 'keepalived' }),
  ];
}
const RUNNING = { loadState: 'loaded', activeState: 'active', subState: 'running', unitFileState: 'enabled', activeEnterTimestamp: '', mainPid: 1 };

describe('vip: in the inventory', () => {
  it('takes the defaults docs/vip.md documents', () => {
    const inv = load(text('vip: { address: 10.0.3.100, hosts: [m1, m2, m3] }'));
    expect(inv.vip).toEqual({ address: '10.0.3.100', port: 8443, hosts: ['m1', 'm2', 'm3'], routerId: 51, statsListen: '127.0.0.1:8404', timeout: '1h', hardStopAfter: '15m' });
    expect(vipHosts(inv).map((h) => [h.name, h.address, h.role])).toEqual([
      ['m1', '10.0.1.11', 'master'],
      ['m2', '10.0.1.12', 'master'],
      ['m3', '10.0.1.13', 'master'],
    ]);
  });

  it('names each mistake with its place and its fix', () => {
    expect(lines(text('vip: { address: 10.0.1.11, port: 6443, hosts: [m1, m2, x9, m2], routerId: 300, timeout: 10s }'))).toEqual([
      'inv.yaml:5:75: vip.routerId: must be from 1 to 255',
      'inv.yaml:5:89: vip.timeout: must be from 1m to 24h',
    ]);
    expect(lines(text('vip: { address: 10.0.1.11, port: 6443, hosts: [m1, m2, x9, m2] }'))).toEqual([
      'inv.yaml:5:56: vip.hosts[2]: "x9" is neither a master nor a node of this inventory; use one of: m1, m2, m3, n1',
      'inv.yaml:5:60: vip.hosts[3]: names m2 twice',
      'inv.yaml:5:34: vip.port: 6443 is the apiserver\'s port on m1: haproxy cannot take it there; use another port, e.g. 8443',
      'inv.yaml:5:34: vip.port: 6443 is the apiserver\'s port on m2: haproxy cannot take it there; use another port, e.g. 8443',
      'inv.yaml:5:17: vip.address: 10.0.1.11 is master m1\'s address: the VIP must be an address no host has',
    ]);
  });

  it('needs an IP address for each host, the cluster CA, and two hosts at least', () => {
    expect(lines(text('vip: { address: 10.0.3.100, hosts: [n2, m1] }', { nodes: '[{ name: n1, address: 10.0.2.21 }, { name: n2 }]', tls: '{}' }))).toEqual([
      'inv.yaml:5:37: vip.hosts[0]: n2 has no IP address in the inventory (none given): keepalived\'s unicast VRRP needs each host\'s IP address; write it as nodes[].address',
      "inv.yaml:4:6: tls.caFile: is required with vip: haproxy's /readyz checks verify every apiserver with the cluster CA (e.g. /etc/kubernetes/pki/ca.crt); set tls.insecureSkipVerify: true only to check without verifying",
    ]);
    // One host has no VRRP peer: keepalived would never take the VIP.
    expect(lines(text('vip: { address: 10.0.3.100, hosts: [m1] }'))).toEqual(['inv.yaml:5:36: vip.hosts: must name two or more hosts for the VIP to move between']);
  });

  it('refuses a node VIP host whose balancer takes haproxy\'s ports, and a VIP that is not an IP', () => {
    expect(lines(text('vip: { address: 10.0.3.100, hosts: [n1, m1], statsListen: "127.0.0.1:8443" }'))).toEqual([
      'inv.yaml:5:59: vip.statsListen: n1 is a node whose lb.listen (127.0.0.1:8443) takes the port haproxy needs for vip.statsListen; use another port',
    ]);
    expect(lines(text('vip: { address: vip.example.com, hosts: [m1, m2] }'))).toEqual(['inv.yaml:5:17: vip.address: must be an IP address (a virtual IP is never a host name)']);
  });
});

describe('haproxy on a VIP host', () => {
  const inv = load(text('vip: { address: 10.0.3.100, hosts: [m1, m2, m3] }'));
  const host = vipHosts(inv)[1]!;
  const cfg = renderVipHaproxy(inv, host);

  it('binds the VIP (before holding it) and the host\'s own address, and balances over every master by least connections', () => {
    expect(cfg).toContain('bind 10.0.3.100:8443 transparent\n    bind 10.0.1.12:8443\n');
    expect(cfg).toContain('balance leastconn');
    expect(cfg).toMatch(/server m1 10\.0\.1\.11:6443\n    server m2 10\.0\.1\.12:6443\n    server m3 10\.0\.1\.13:6443\n/);
  });

  it('checks /readyz over TLS verified with the cluster CA and the certificate name, and closes sessions of a master marked down', () => {
    expect(cfg).toContain('http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host kubernetes');
    expect(cfg).toContain(
      'default-server check check-ssl verify required ca-file /etc/haproxy/k8s-ha-cluster-ca.crt check-sni kubernetes verifyhost kubernetes inter 2s fastinter 1s downinter 5s rise 2 fall 2 on-marked-down shutdown-sessions',
    );
  });

  it('keeps idle watches for the configured hour, bounds old processes after a reload, and serves its health on loopback only', () => {
    for (const t of ['client', 'server', 'tunnel']) expect(cfg).toContain(`timeout ${t} 3600s`);
    expect(cfg).toContain('hard-stop-after 900s');
    expect(cfg).toContain('bind 127.0.0.1:8404\n');
    expect(cfg).toContain('monitor fail if { nbsrv(kube_apiservers) lt 1 }');
    expect(cfg).toContain('prometheus-exporter');
  });

  it('says verify none without a CA (insecureSkipVerify)', () => {
    const insecure = load(text('vip: { address: 10.0.3.100, hosts: [m1, m2] }', { tls: '{ insecureSkipVerify: true }' }));
    expect(renderVipHaproxy(insecure, vipHosts(insecure)[0]!)).toContain('default-server check check-ssl verify none inter 2s');
  });
});

describe('keepalived on a VIP host', () => {
  const inv = load(text('vip: { address: 10.0.3.100, hosts: [m1, m2, m3], routerId: 77 }'));
  const [m1, m2, m3] = vipHosts(inv) as [ReturnType<typeof vipHosts>[number], ReturnType<typeof vipHosts>[number], ReturnType<typeof vipHosts>[number]];
  const conf = renderKeepalived(inv, m3, facts(), vipHosts(inv));

  it('speaks unicast to every peer but itself, from its own address, and faults without peers', () => {
    expect(conf).toMatch(/unicast_src_ip 10\.0\.1\.13\n    unicast_peer \{\n        10\.0\.1\.11\n        10\.0\.1\.12\n    \}\n(.*\n)*    unicast_fault_no_peer/);
    expect(conf).toContain('virtual_router_id 77');
    expect(conf).toContain('interface ens3');
    expect(conf).toContain('10.0.3.100/32 dev ens3');
  });

  it('takes adverts only from its peers, in every instance, on every host', () => {
    /** Each vrrp_instance block: its name, and the keywords and values in it (nested blocks flattened). */
    const instances = (c: string) =>
      [...c.matchAll(/^vrrp_instance (\S+) \{\n([\s\S]*?)^\}$/gm)].map(([, name, body]) => ({ name, body: body!, words: body!.split('\n').map((l) => l.trim()) }));
    const peersIn = (body: string) => /unicast_peer \{\n([\s\S]*?)\n    \}/.exec(body)![1]!.split('\n').map((l) => l.trim());
    for (const host of vipHosts(inv)) {
      const c = renderKeepalived(inv, host, facts(), vipHosts(inv));
      const found = instances(c);
      // Exactly as many instances as the config names (a block this parse missed would go unchecked).
      expect(found.length).toBe(c.match(/^vrrp_instance /gm)!.length);
      expect(found.length).toBeGreaterThan(0);
      for (const i of found) {
        expect(i.words, `${host.name} ${i.name}`).toContain('check_unicast_src');
        // Without it a dropped advert still restarts the master's advert timer (docs/security.md, "VRRP and the VIP port").
        expect(i.words).toContain('lower_prio_no_advert');
        expect(i.words).toContain(`unicast_src_ip ${host.address}`);
        expect(peersIn(i.body)).toEqual(vipHosts(inv).filter((p) => p.name !== host.name).map((p) => p.address));
      }
      // Not in global_defs only (vrrp_check_unicast_src would do the same, but each instance says it where a reader looks).
      expect(c).not.toContain('vrrp_check_unicast_src');
      // No VRRP authentication: the source check and the firewall are the defence (docs/security.md, "VRRP and the VIP port").
      expect(c).not.toMatch(/auth_(type|pass)/);
    }
  });

  it('with IPv6 too: the source checked against every peer\'s IPv6 address', () => {
    const v6 = load(
      'masters: [{ name: m1, address: "fd00::11" }, { name: m2, address: "fd00::12" }]\nnodes: [{ name: n1, address: "fd00::21" }]\n' +
        `${NGINX}\ntls: { caFile: ca.crt, serverName: kubernetes }\nvip: { address: "fd00::100", hosts: [m1, m2, n1] }\n`,
    );
    const [a, b, n] = vipHosts(v6) as [ReturnType<typeof vipHosts>[number], ReturnType<typeof vipHosts>[number], ReturnType<typeof vipHosts>[number]];
    const c = renderKeepalived(v6, n, { interfaces: { 'fd00::21': 'eth0' } }, vipHosts(v6));
    expect(c).toContain(`unicast_src_ip fd00::21\n    unicast_peer {\n        ${a.address}\n        ${b.address}\n    }\n`);
    expect(c).toMatch(/^    check_unicast_src$/m);
  });

  it('never fails over only to move back: equal priorities, nopreempt, and checks without weight', () => {
    const others = [renderKeepalived(inv, m1, facts(), vipHosts(inv)), renderKeepalived(inv, m2, facts(), vipHosts(inv))];
    for (const c of [conf, ...others]) {
      expect(c).toContain('state BACKUP\n');
      expect(c).toContain('priority 100\n');
      expect(c).toContain('nopreempt');
      expect(c).not.toMatch(/^\s*weight/m);
      expect(c).toContain('vrrp_startup_delay 5');
      expect(c).toContain('enable_script_security');
      expect(c).toContain('track_script {\n        k8s_ha_haproxy_process\n        k8s_ha_haproxy_healthz\n    }');
    }
  });

  it('takes the interface from the inventory, else from the host\'s facts, else says what to set', () => {
    const named = load(text('vip: { address: 10.0.3.100, hosts: [m1, m2], interface: bond0 }'));
    expect(vipInterface(named.vip!, vipHosts(named)[0]!, facts())).toBe('bond0');
    expect(vipInterface(inv.vip!, m1, facts())).toBe('eth0');
    expect(() => vipInterface(inv.vip!, m1, facts({ interfaces: {} }))).toThrow(/m1: no interface carries its address 10\.0\.1\.11/);
  });

  it("checks haproxy's /healthz with bash alone", () => {
    expect(renderVipCheck(inv)).toContain('exec 3<>/dev/tcp/127.0.0.1/8404');
  });

  it('reads the interface off `ip -o addr show to`', () => {
    expect(interfaceOf('2: eth0    inet 10.0.1.11/16 brd 10.0.255.255 scope global eth0\\       valid_lft forever')).toBe('eth0');
    expect(interfaceOf('23: eth0@if24    inet 10.0.1.11/16 scope global eth0')).toBe('eth0');
    expect(interfaceOf('')).toBeNull();
  });
});

describe('the packages step', () => {
  const args = packages.args.parse({ names: ['haproxy', 'keepalived'] });
  const guard = 'command -v haproxy && command -v keepalived';

  it('does nothing where every package is installed', () => {
    expect(packages.plan(args, facts({ guards: { [guard]: 0 } }), { notified: new Set(), artifacts: {}, render: () => '' })).toEqual({ changes: [], notify: [], summary: 'haproxy, keepalived installed' });
  });

  it('installs while staging, before any validation, and says what failed and why when it cannot', () => {
    const p = packages.plan(args, facts({ guards: { [guard]: 1 } }), { notified: new Set(), artifacts: {}, render: () => '' });
    expect(p.changes).toEqual([{ kind: 'run', when: 'staging', command: installCommand(['haproxy', 'keepalived'], 'apt-get'), label: 'install haproxy keepalived' }]);
    expect(installCommand(['haproxy'], 'dnf')).toContain('dnf install -y -q haproxy');
    expect(installCommand(['haproxy'], 'apt-get')).toContain('cannot install haproxy with apt-get: the host is offline');
    const none = packages.plan(args, facts({ guards: { [guard]: 1 }, packageManager: null }), { notified: new Set(), artifacts: {}, render: () => '' });
    expect(none.summary).toBe('haproxy and keepalived are missing and this host has no apt-get, dnf or yum: install them by hand and deploy again');
  });
});

describe('two services in one playbook', () => {
  it('reload each only for the files of its own steps', () => {
    const steps = twoServices();
    const f = facts({ units: { haproxy: RUNNING, keepalived: RUNNING }, files: { '/etc/haproxy/haproxy.cfg': null, '/etc/keepalived/keepalived.conf': { sha256: 'x', mode: '644' } } });
    // Only haproxy's config differs: keepalived's is the same text (its sha256 is made to match below).
    const render = (t: string) => (t === 'b' ? 'same\n' : 'new\n');
    const sha = (s: string) => createHash('sha256').update(s).digest('hex');
    f.files['/etc/keepalived/keepalived.conf'] = { sha256: sha('same\n'), mode: '644' };
    const plan = planHost({ name: 'm1', address: '10.0.1.11' }, steps, f, { artifacts: {}, render });
    const labels = plan.steps.map((s) => s.plan?.changes.filter((c) => c.kind === 'run').map((c) => (c as { label: string }).label));
    expect(labels).toEqual([[], ['reload'], [], []]);
  });
});

describe('a VIP host put back after a failed verify', () => {
  it('reloads the service that served on the old files, and stops the one this run started', () => {
    const steps = twoServices();
    const absent = { loadState: 'not-found', activeState: 'inactive', subState: 'dead', unitFileState: '', activeEnterTimestamp: '', mainPid: 0 };
    const f = facts({ units: { haproxy: RUNNING, keepalived: absent }, files: { '/etc/haproxy/haproxy.cfg': { sha256: 'x', mode: '644' }, '/etc/keepalived/keepalived.conf': null } });
    const plan = planHost({ name: 'm1', address: '10.0.1.11' }, steps, f, { artifacts: {}, render: () => 'new\n' });
    const restore = restoreScript(plan, { runId: 'R', unit: 'haproxy' });
    expect(restore).toContain('systemctl reload haproxy\n');
    expect(restore).toContain('systemctl stop keepalived\n');
    // keepalived.conf did not exist before: it goes away again.
    expect(restore).toContain("rm -f /etc/keepalived/keepalived.conf");
  });
});

describe('haproxy stats and the VIP verdict', () => {
  it('reads each master\'s state, sessions and last check from the CSV', () => {
    const header = '# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc';
    const names = header.slice(2).split(',');
    const row = (v: Record<string, string | number>) => names.map((n) => String(v[n] ?? '')).join(',');
    const csv = [
      header,
      row({ pxname: 'k8s_ha_vip', svname: 'FRONTEND', scur: 2, status: 'OPEN' }),
      row({ pxname: 'kube_apiservers', svname: 'm1', scur: 2, status: 'UP', check_status: 'L7OK', check_desc: 'Layer7 check passed' }),
      row({ pxname: 'kube_apiservers', svname: 'm2', scur: 0, status: 'DOWN', check_status: 'L4CON', check_desc: 'Connection refused' }),
      row({ pxname: 'kube_apiservers', svname: 'BACKEND', scur: 2, status: 'UP' }),
    ].join('\n');
    expect(parseHaproxyCsv(csv)).toEqual([
      { name: 'm1', status: 'UP', sessions: 2, check: 'L7OK (Layer7 check passed)' },
      { name: 'm2', status: 'DOWN', sessions: 0, check: 'L4CON (Connection refused)' },
    ]);
  });

  it('calls one holder right, none an outage and two a split brain', () => {
    const h = (name: string, holds: boolean, reachable = true) => ({ name, holds, reachable });
    expect(vipProblem([h('m1', false), h('m2', true)], '10.0.3.100')).toBeUndefined();
    expect(vipProblem([h('m1', true), h('m2', true)], '10.0.3.100')).toBe('split brain: m1 and m2 all hold the VIP 10.0.3.100');
    expect(vipProblem([h('m1', false), h('m2', false)], '10.0.3.100')).toBe('no host holds the VIP 10.0.3.100: clients outside the nodes cannot reach the apiservers');
    expect(vipProblem([h('m1', false), h('m2', false, false)], '10.0.3.100')).toBe('no reachable host holds the VIP 10.0.3.100 (m2 could not be asked)');
    expect(vipProblem([h('m1', true), h('m2', false, false)], '10.0.3.100')).toBe('m2 could not be asked: the VIP has one host fewer to move to (held by m1)');
  });
});

describe('lb.impl: haproxy on a node', () => {
  const inv = load(text('', { nodes: '[{ name: n1, address: 10.0.2.21, lb: { impl: haproxy } }]' }).replace(NGINX + '\n', ''));

  it('needs no nginx section, and the cluster CA for its checks', () => {
    expect(lines(text('', { nodes: '[{ name: n1, address: 10.0.2.21, lb: { impl: haproxy } }]', tls: '{}' }).replace(NGINX + '\n', ''))).toEqual([
      'inv.yaml:3:6: tls.caFile: is required where haproxy may run: its health checks verify every apiserver with the cluster CA (e.g. /etc/kubernetes/pki/ca.crt); set tls.insecureSkipVerify: true only to check without verifying',
    ]);
  });

  it('listens on lb.listen, balances as lb.balance says, with the same checks as the VIP hosts and the node timeouts', () => {
    const cfg = renderKubeHaproxyConf(inv);
    expect(cfg).toContain('bind 127.0.0.1:8443\n');
    expect(cfg).toContain('balance leastconn');
    expect(cfg).toContain('default-server check check-ssl verify required ca-file /etc/haproxy/kube-haproxy-ca.crt check-sni kubernetes verifyhost kubernetes inter 2s');
    expect(cfg).toContain('timeout connect 1000ms');
    expect(cfg).toContain('timeout tunnel 600s');
    expect(cfg).toContain('hard-stop-after 10s');
    expect(renderKubeHaproxyUnit(inv)).toMatch(/^ExecReload=\/bin\/kill -USR2 \$MAINPID$/m);
  });

  it('takes the port over from whichever balancer serves: the one serving, else the one enabled', () => {
    const args = { replaces: [{ unit: 'kube-nginx', listen: '127.0.0.1:8443', order: 'stop-first' as const }, { unit: 'kube-lb', listen: '127.0.0.1:8443', order: 'stop-first' as const }] };
    const u = (activeState: string, unitFileState: string) => ({ activeState, unitFileState });
    expect(replacedOn(args, { 'kube-nginx': u('inactive', 'disabled'), 'kube-lb': u('active', 'enabled') })).toMatchObject({ unit: 'kube-lb' });
    expect(replacedOn(args, { 'kube-nginx': u('failed', 'enabled'), 'kube-lb': u('inactive', 'disabled') })).toMatchObject({ unit: 'kube-nginx' });
    expect(replacedOn(args, {})).toBeUndefined();
  });
});

describe('a host taken out of vip.hosts', () => {
  const CONF = `# Managed by k8s-ha: changes here are overwritten by the next deploy.
vrrp_instance k8s_ha_vip {
    unicast_src_ip 192.0.2.11
    unicast_peer {
        192.0.2.12
        192.0.2.14
    }
    check_unicast_src
}
`;
  const twoMasters = parseInventory(`
masters:
  - { name: m1, address: 192.0.2.11 }
  - { name: m2, address: 192.0.2.12 }
  - { name: m4, address: 192.0.2.14 }
nodes: [{ name: n1, address: 192.0.2.21 }]
vip: { address: 192.0.2.100, hosts: [m1, m2] }
`).inventory!;

  it('is a peer the remaining hosts\' keepalived still lists (only in a file k8s-ha wrote), named as the inventory names it', () => {
    expect(keepalivedPeers(CONF)).toEqual(['192.0.2.12', '192.0.2.14']);
    expect(keepalivedPeers(CONF.replace('# Managed by k8s-ha', '# mine'))).toEqual([]);
    expect(keepalivedPeers(undefined)).toEqual([]);
    const staying = [{ address: '192.0.2.11' }, { address: '192.0.2.12' }];
    expect(leavingHosts(twoMasters, [keepalivedPeers(CONF), ['192.0.2.11', '192.0.2.14', '192.0.2.99']], staying)).toEqual([
      { name: 'm4', address: '192.0.2.14', known: true, isNode: false },
      { name: '192.0.2.99', address: '192.0.2.99', known: false, isNode: false },
    ]);
    expect(leavingHosts(twoMasters, [['192.0.2.12'], ['192.0.2.11']], staying)).toEqual([]);
  });

  it('leaves by stopping keepalived before haproxy, removes only the files k8s-ha wrote, and keeps a node\'s own state', () => {
    const s = leaveScript({ runId: 'r1', keepState: false, waitSeconds: 30 });
    expect(s.indexOf('disable --now keepalived')).toBeLessThan(s.indexOf('disable --now haproxy'));
    // Only files that say k8s-ha wrote them, and haproxy stopped only when its config is k8s-ha's.
    expect(s).toContain("if head -n1 /etc/keepalived/keepalived.conf 2>/dev/null | grep -q '^# Managed by k8s-ha'; then out=$(rm -f -- /etc/keepalived/keepalived.conf");
    expect(s).toContain("if head -n1 /etc/haproxy/haproxy.cfg 2>/dev/null | grep -q '^# Managed by k8s-ha'; then if systemctl cat haproxy");
    expect(s).toContain('rm -rf -- /var/lib/k8s-ha 2>&1');
    // The lock's folder stays: a run may be waiting on its file.
    expect(s).not.toContain('rm -rf -- /run/k8s-ha');
    expect(leaveScript({ runId: 'r1', keepState: true, waitSeconds: 30 })).not.toContain('rm -rf');
    expect(parseLeaveOutput('@@done stopped and disabled keepalived\n@@left\n')).toEqual({ ok: true, done: ['stopped and disabled keepalived'] });
    expect(parseLeaveOutput('@@leave-failed stop keepalived: Failed\n')).toMatchObject({ ok: false, failure: 'stop keepalived: Failed' });
  });
});
