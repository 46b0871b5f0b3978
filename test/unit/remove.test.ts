/**
 * `k8s-ha remove` as plain data: what k8s-ha may have put on a node (from the built-in playbooks as
 * they render), what a node's facts make of it, the kubeconfigs' recorded origins, and the script's
 * markers. The lab test (integration/remove.test.ts) runs it on real nodes.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parseInventory } from '../../src/inventory/load.js';
import { defaultPlaybookPath, IMPL_PLAYBOOKS, loadPlaybook } from '../../src/engine/playbook.js';
import { TEMPLATES } from '../../src/lb/templates.js';
import { checkRepointTo, footprint, listenOf, parseRemovalOutput, planRemoval, plannedSteps, removalScript, type Footprint } from '../../src/engine/remove.js';
import { ORIGINS_FILE, parseOrigins, repointScript, serversIn } from '../../src/ops/kubeconfig.js';
import { hostFacts } from '../helpers/facts.js';
import { run } from '../../src/util/exec.js';
import type { RunImpl } from '../../src/engine/deploy.js';
import type { Playbook } from '../../src/engine/playbook.js';

const inv = parseInventory(`
masters: [{ name: m1, address: 192.0.2.11 }]
nodes: [{ name: n1, address: 192.0.2.21 }]
lb: { prefix: /srv/lb }
`).inventory!;
const node = inv.nodes[0]!;
const KUBELET = '/etc/kubernetes/kubelet.kubeconfig';
const PROXY = '/var/lib/kube-proxy/kubeconfig';

async function playbooks(): Promise<Record<RunImpl, Playbook>> {
  const out = {} as Record<RunImpl, Playbook>;
  for (const [impl, file] of Object.entries(IMPL_PLAYBOOKS)) out[impl as RunImpl] = await loadPlaybook(defaultPlaybookPath(file), inv, Object.keys(TEMPLATES));
  return out;
}

const unit = (loadState: string) => ({ loadState, activeState: 'active', subState: 'running', unitFileState: 'enabled', activeEnterTimestamp: '', mainPid: 1 });
const kc = (servers: string[], tlsServerNames: string[] = []) => ({ servers, tlsServerNames, mode: '600' });

describe('what k8s-ha may have put on a node', () => {
  it('is every unit, file, manifest, user and own folder of the five built-in playbooks, as they render for the node', async () => {
    const fp = await footprint(await playbooks(), inv, node);
    expect(fp.units.sort()).toEqual(['kube-haproxy.service', 'kube-lb.service', 'kube-nginx-container.service', 'kube-nginx.service']);
    // What deploy makes in a prefix goes whole; the prefix, and its parent, only when left empty (never a system folder: /srv).
    // nginx's HTTP core makes client_body_temp (and the other temporary folders) in its prefix when nginx.statusListen adds an http block.
    const inPrefix = ['sbin', 'conf', 'logs', 'client_body_temp', 'proxy_temp', 'fastcgi_temp', 'uwsgi_temp', 'scgi_temp'];
    expect(fp.dirs).toEqual([...inPrefix.map((d) => `/srv/lb/${d}`), ...inPrefix.map((d) => `/opt/k8s/kube-lb/${d}`), '/etc/kube-nginx', '/var/lib/k8s-ha']);
    expect(fp.parents).toEqual(['/srv/lb', '/opt/k8s/kube-lb', '/opt/k8s']);
    // Files inside those folders go with them; haproxy's files sit beside the package's own, in /etc/haproxy, which stays.
    expect(fp.files.sort()).toEqual([
      '/etc/haproxy/kube-haproxy-ca.crt',
      '/etc/haproxy/kube-haproxy-client.pem',
      '/etc/haproxy/kube-haproxy.cfg',
      '/etc/systemd/system/kube-haproxy.service',
      '/etc/systemd/system/kube-lb.service',
      '/etc/systemd/system/kube-nginx-container.service',
      '/etc/systemd/system/kube-nginx.service',
    ]);
    expect(fp.manifests.sort()).toEqual(['/etc/kubernetes/manifests/.kube-nginx.yaml.k8s-ha-aside', '/etc/kubernetes/manifests/kube-nginx.yaml']);
    expect(fp.users.sort()).toEqual(['kube-lb', 'kube-nginx']);
    // Never a folder others use: kubelet's manifests, /etc/haproxy, /etc/systemd.
    for (const d of fp.dirs) expect(['/etc', '/etc/haproxy', '/etc/kubernetes', '/etc/kubernetes/manifests', '/etc/systemd/system', '/var/lib']).not.toContain(d);
  });
});

describe('the kubeconfigs\' recorded origins', () => {
  it('keeps the first line for a path, and leaves out lines k8s-ha does not write', () => {
    const text = [
      `${KUBELET}\thttps://192.0.2.11:6443\t`,
      `${KUBELET}\thttps://192.0.2.99:6443\t`,
      `${PROXY}\thttps://api.example.com:6443\tkubernetes`,
      `relative\thttps://192.0.2.11:6443\t`,
      `/x\thttps://192.0.2.11:6443/$(reboot)\t`,
      `/y\thttps://192.0.2.11:6443\tbad name`,
      '',
    ].join('\n');
    expect([...parseOrigins(text)]).toEqual([
      [KUBELET, { server: 'https://192.0.2.11:6443', tlsServerName: '' }],
      [PROXY, { server: 'https://api.example.com:6443', tlsServerName: 'kubernetes' }],
    ]);
  });

  it('--repoint-to must be a server URL', () => {
    expect(() => checkRepointTo('https://10.0.0.11:6443')).not.toThrow();
    expect(() => checkRepointTo('https://[fd00::11]:6443')).not.toThrow();
    for (const bad of ['10.0.0.11:6443', 'http://10.0.0.11:6443', 'https://10.0.0.11:6443;reboot', 'https://']) expect(() => checkRepointTo(bad)).toThrow(/--repoint-to must be a server URL/);
    expect(listenOf('https://api.example.com')).toBe('api.example.com:443');
  });
});

describe('planning a removal from a node\'s facts', () => {
  const fp: Footprint = { units: ['kube-nginx.service', 'kube-lb.service'], files: ['/etc/systemd/system/kube-nginx.service'], manifests: [], dirs: ['/opt/k8s/kube-nginx', '/var/lib/k8s-ha'], users: ['kube-nginx'], parents: ['/opt/k8s'] };
  const onNode = (o: { origins?: string; proxy?: string[] } = {}) =>
    hostFacts({
      kubeconfigs: { [KUBELET]: kc(['https://127.0.0.1:8443'], ['kubernetes']), [PROXY]: o.proxy ? kc(o.proxy) : null, '/etc/kubernetes/kube-proxy.kubeconfig': kc(['https://192.0.2.11:6443']) },
      units: { 'kubelet.service': unit('loaded'), 'kube-proxy.service': unit('not-found'), 'kube-nginx.service': unit('loaded'), 'kube-lb.service': unit('not-found') },
      files: { '/etc/systemd/system/kube-nginx.service': { sha256: 'x', mode: '644' } },
      dirs: { '/opt/k8s/kube-nginx': '755', '/var/lib/k8s-ha': null },
      guards: { 'id -u kube-nginx': 0 },
      texts: o.origins === undefined ? {} : { [ORIGINS_FILE]: o.origins },
      images: { 'localhost/k8s-ha/kube-nginx': ['podman localhost/k8s-ha/kube-nginx:abc localhost/k8s-ha/kube-nginx@sha256:1'] },
    });

  it('puts a kubeconfig back where it pointed before k8s-ha, with its own tls-server-name (none), restarting its service; what exists is what goes', () => {
    const p = planRemoval(inv, fp, onNode({ origins: `${KUBELET}\thttps://192.0.2.11:6443\t\n` }));
    expect(p.refusal).toBeUndefined();
    expect(p.repoint).toHaveLength(1);
    expect(p.repoint[0]!.to).toBe('192.0.2.11:6443');
    expect(p.repoint[0]!.changes).toEqual([
      { path: KUBELET, from: 'https://127.0.0.1:8443', to: 'https://192.0.2.11:6443', service: 'kubelet', dropServerName: true, why: 'server https://127.0.0.1:8443 -> https://192.0.2.11:6443 (where it pointed before k8s-ha); tls-server-name kubernetes -> (none)' },
    ]);
    // kube-proxy's file names a master already: left alone. kube-lb.service is not on the node.
    expect(p).toMatchObject({ stop: ['kube-nginx.service'], files: ['/etc/systemd/system/kube-nginx.service'], dirs: ['/opt/k8s/kube-nginx'], users: ['kube-nginx'], images: ['podman localhost/k8s-ha/kube-nginx:abc'] });
    expect(plannedSteps(p).map((s) => [s.name, s.status])).toEqual([
      ['repoint kubeconfigs', 'changed'],
      ['stop balancer', 'changed'],
      ['remove files', 'changed'],
    ]);
  });

  it('refuses the whole node when a kubeconfig names the balancer and has nowhere to go; --repoint-to gives every one the same place', () => {
    const p = planRemoval(inv, fp, onNode({ origins: `${KUBELET}\thttps://192.0.2.11:6443\t\n`, proxy: ['https://127.0.0.1:8443'] }));
    expect(p.refusal).toBe(
      `${PROXY} names the balancer (https://127.0.0.1:8443), and k8s-ha kept no record of where it pointed before: nothing is removed from this node, or its kubelet would be left on a port about to close`,
    );
    expect(plannedSteps(p).map((s) => s.status)).toEqual(['failed', 'skipped', 'skipped']);
    const to = planRemoval(inv, fp, onNode({ proxy: ['https://127.0.0.1:8443'] }), { repointTo: 'https://192.0.2.100:6443' });
    expect(to.refusal).toBeUndefined();
    expect(to.repoint.map((r) => [r.to, r.changes.map((c) => [c.path, c.serverName, c.dropServerName])])).toEqual([['192.0.2.100:6443', [[KUBELET, undefined, undefined], [PROXY, undefined, undefined]]]]);
  });

  it('a clean node plans nothing', () => {
    const p = planRemoval(inv, fp, hostFacts({ units: { 'kube-nginx.service': unit('not-found') } }));
    expect(plannedSteps(p).map((s) => [s.status, s.summary])).toEqual([
      ['ok', 'no kubeconfig names the balancer'],
      ['ok', 'no balancer of k8s-ha runs here'],
      ['ok', 'nothing of k8s-ha is left here'],
    ]);
  });
});

describe('the removal script', () => {
  const plan = { repoint: [], stop: ['kube-nginx.service'], manifests: [], files: ['/etc/systemd/system/kube-nginx.service'], images: ["podman localhost/k8s-ha/kube-nginx:abc"], users: ['kube-nginx'], dirs: ['/opt/k8s/kube-nginx', '/var/lib/k8s-ha'], parents: ['/opt/k8s'] };

  it('checks for other clients before it stops anything (not with --force), waits for the port to close, removes its state folder and empty parents last', () => {
    const s = removalScript(plan, { listen: '127.0.0.1:8443', runId: 'r1', force: false, waitSeconds: 30 });
    const at = (t: string) => s.indexOf(t);
    expect(at('ss -Htnp state established dst')).toBeGreaterThan(0);
    expect(at('ss -Htnp state established dst')).toBeLessThan(at('systemctl disable --now'));
    expect(at('systemctl disable --now')).toBeLessThan(at('state listening src'));
    expect(at('state listening src')).toBeLessThan(at("rm -f -- /etc/systemd/system/kube-nginx.service"));
    // A value read from the node (an image name) never goes inside double quotes.
    expect(s).toContain(`{ echo '@@remove-failed remove image localhost/k8s-ha/kube-nginx:abc from podman: '"$(printf`);
    expect(at('rm -rf -- /var/lib/k8s-ha')).toBeLessThan(at('rmdir -- /opt/k8s'));
    // The lock's folder stays (a run may be waiting on its file).
    expect(s).not.toContain('rm -rf -- /run/k8s-ha');
    expect(s.trimEnd().endsWith("echo '@@removed-all'")).toBe(true);
    expect(removalScript(plan, { listen: '127.0.0.1:8443', runId: 'r1', force: true, waitSeconds: 30 })).not.toContain('state established');
  });

  it('says what was done, refused or left', () => {
    expect(parseRemovalOutput('@@done stopped and disabled kube-nginx.service\n@@done 127.0.0.1:8443 closed\n@@removed-all\n')).toEqual({ ok: true, done: ['stopped and disabled kube-nginx.service', '127.0.0.1:8443 closed'] });
    expect(parseRemovalOutput('@@remove-refused still connected through 127.0.0.1:8443: calico-node (pid 7)\n')).toMatchObject({ ok: false, refused: 'still connected through 127.0.0.1:8443: calico-node (pid 7)' });
    expect(parseRemovalOutput('@@done removed /x\n', 'Killed', 137)).toEqual({ ok: false, failure: 'Killed', done: ['removed /x'] });
  });
});

describe('recording and putting back a kubeconfig\'s origin on the node', () => {
  const dirs: string[] = [];
  afterEach(() => dirs.splice(0).forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

  it('records the first origin once, and a put-back with no tls-server-name of its own drops the one k8s-ha wrote', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-origins-'));
    dirs.push(dir);
    const file = path.join(dir, 'kubelet.kubeconfig');
    const origins = path.join(dir, 'state', 'kubeconfig-origins');
    const original = 'clusters:\n- cluster:\n    server: https://192.0.2.11:6443\n  name: k\n';
    fs.writeFileSync(file, original, { mode: 0o600 });
    const toLb = { path: file, from: 'https://192.0.2.11:6443', to: 'https://127.0.0.1:8443', serverName: 'kubernetes', why: 'x', record: { server: 'https://192.0.2.11:6443', tlsServerName: '' } };
    for (const runId of ['r1', 'r2']) {
      const r = await run('/bin/sh', ['-c', repointScript([toLb], { listen: '127.0.0.1:8443', timeoutS: 1, runId, originsFile: origins })]);
      expect(r.stdout).toContain('@@repointed');
    }
    expect(fs.readFileSync(file, 'utf8')).toBe('clusters:\n- cluster:\n    server: https://127.0.0.1:8443\n    tls-server-name: kubernetes\n  name: k\n');
    expect(fs.readFileSync(origins, 'utf8')).toBe(`${file}\thttps://192.0.2.11:6443\t\n`);
    expect((fs.statSync(path.dirname(origins)).mode & 0o777).toString(8)).toBe('700');
    const back = { path: file, from: 'https://127.0.0.1:8443', to: 'https://192.0.2.11:6443', dropServerName: true, why: 'x' };
    const r = await run('/bin/sh', ['-c', repointScript([back], { listen: '192.0.2.11:6443', timeoutS: 1, runId: 'r3', originsFile: origins })]);
    expect(r.stdout).toContain('@@repointed');
    expect(fs.readFileSync(file, 'utf8')).toBe(original);
    expect(serversIn(fs.readFileSync(file, 'utf8'))).toEqual(['https://192.0.2.11:6443']);
  });
});
