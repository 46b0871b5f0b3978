import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { factScript, parseFacts, parseKubeconfigFacts, type FactRequest } from '../../src/facts/host.js';
import {
  ORIGINAL_SUFFIX,
  parseRepointOutput,
  planRepoint,
  procNetAddresses,
  repointScript,
  rewriteCommands,
  serverUrl,
  serversIn,
  type Repoint,
} from '../../src/ops/kubeconfig.js';
import { run } from '../../src/util/exec.js';
import { hostFacts } from '../helpers/facts.js';

const KEY = 'LS0tLS1CRUdJTiBFQyBQUklWQVRFIEtFWS0tLS0tc2VjcmV0';

/** A hard-way worker's kubeconfig: two clusters, one already naming a tls-server-name (before its server:), a client key. */
const KUBECONFIG = `apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: LS0tLS1CRUdJTg==
    server: https://192.0.2.11:6443
  name: kubernetes
- cluster:
    tls-server-name: old.example
    certificate-authority-data: LS0tLS1CRUdJTg==
    server: "https://192.0.2.12:6443"
  name: other
contexts:
- context: { cluster: kubernetes, user: system:node:node-1 }
  name: default
current-context: default
users:
- name: system:node:node-1
  user:
    client-certificate-data: LS0tLS1DRVJU
    client-key-data: ${KEY}
`;

const REWRITTEN = `apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: LS0tLS1CRUdJTg==
    server: https://127.0.0.1:8443
    tls-server-name: kubernetes
  name: kubernetes
- cluster:
    certificate-authority-data: LS0tLS1CRUdJTg==
    server: https://127.0.0.1:8443
    tls-server-name: kubernetes
  name: other
contexts:
- context: { cluster: kubernetes, user: system:node:node-1 }
  name: default
current-context: default
users:
- name: system:node:node-1
  user:
    client-certificate-data: LS0tLS1DRVJU
    client-key-data: ${KEY}
`;

const KUBELET = '/etc/kubernetes/kubelet.kubeconfig';
const kcs = [
  { path: KUBELET, service: 'kubelet' },
  { path: '/etc/kubernetes/kube-proxy.kubeconfig', service: 'kube-proxy' },
];

const unit = (loadState: string) => ({ loadState, activeState: 'active', subState: 'running', unitFileState: 'enabled', activeEnterTimestamp: '', mainPid: 1 });

function facts(kubelet: { servers: string[]; tlsServerNames?: string[] } | null, kubeletUnit = 'loaded') {
  return hostFacts({
    kubeconfigs: { [KUBELET]: kubelet && { tlsServerNames: [], mode: '600', ...kubelet }, '/etc/kubernetes/kube-proxy.kubeconfig': null },
    units: { 'kubelet.service': unit(kubeletUnit), 'kube-proxy.service': unit('not-found') },
  });
}

const dirs: string[] = [];
function tmp(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-kc-'));
  dirs.push(d);
  return d;
}
afterEach(() => dirs.splice(0).forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

describe('kubeconfig facts', () => {
  it('reads only the server and tls-server-name values and the mode on the node: the client key never leaves it', async () => {
    const dir = tmp();
    const file = path.join(dir, "kube let's.kubeconfig");
    fs.writeFileSync(file, KUBECONFIG, { mode: 0o640 });
    const missing = path.join(dir, 'kube-proxy.kubeconfig');
    const req: FactRequest = { files: [], dirs: [], units: [], guards: [], kubeconfigs: [file, missing] };
    const script = factScript(req);
    const lines = script.split('\n').filter((l) => l.includes('@@kubeconfig'));
    expect(lines).toHaveLength(2);
    for (const l of lines) expect(l).not.toMatch(/base64|\bcat\b/);
    const out = (await run('sh', ['-c', script])).stdout;
    expect(out).not.toContain(KEY);
    expect(out).not.toContain('client-');
    expect(out).not.toContain('certificate-authority-data');
    expect(parseFacts(req, out).kubeconfigs).toEqual({
      [file]: { servers: ['https://192.0.2.11:6443', 'https://192.0.2.12:6443'], tlsServerNames: ['old.example'], mode: '640' },
      [missing]: null,
    });
  });

  it('parses the section with plain data', () => {
    expect(parseKubeconfigFacts(['mode=600', 'server=https://[::1]:8443', "tls-server-name='kubernetes'"])).toEqual({
      servers: ['https://[::1]:8443'],
      tlsServerNames: ['kubernetes'],
      mode: '600',
    });
    expect(parseKubeconfigFacts(['missing'])).toBeNull();
    expect(parseKubeconfigFacts([])).toBeNull();
    expect(parseFacts({ files: [], dirs: [], units: [], guards: [] }, '').kubeconfigs).toEqual({});
  });
});

describe('planning a repoint', () => {
  const LISTEN = '127.0.0.1:8443';

  it('plans nothing for a kubeconfig already pointing at the balancer (with the right name), a missing one, or one without a server', () => {
    expect(planRepoint(kcs, LISTEN, facts({ servers: ['https://127.0.0.1:8443'] }))).toEqual([]);
    expect(planRepoint(kcs, LISTEN, facts({ servers: ['https://127.0.0.1:8443'], tlsServerNames: ['kubernetes'] }), 'kubernetes')).toEqual([]);
    expect(planRepoint(kcs, LISTEN, facts(null))).toEqual([]);
    expect(planRepoint(kcs, LISTEN, facts({ servers: [] }), 'kubernetes')).toEqual([]);
  });

  it('plans a rewrite of a kubeconfig naming an apiserver, restarting the service only where it exists', () => {
    expect(planRepoint(kcs, LISTEN, facts({ servers: ['https://192.0.2.11:6443'] }))).toEqual([
      { path: KUBELET, from: 'https://192.0.2.11:6443', to: 'https://127.0.0.1:8443', service: 'kubelet', why: 'server https://192.0.2.11:6443 -> https://127.0.0.1:8443' },
    ]);
    expect(planRepoint(kcs, LISTEN, facts({ servers: ['https://192.0.2.11:6443'] }, 'not-found'))[0]!.service).toBeUndefined();
  });

  it('plans setting a missing or different tls-server-name only when a server name is asked for', () => {
    const pointed = { servers: ['https://127.0.0.1:8443', 'https://127.0.0.1:8443'], tlsServerNames: ['kubernetes'] };
    expect(planRepoint(kcs, LISTEN, facts(pointed), 'kubernetes')).toEqual([
      { path: KUBELET, from: 'https://127.0.0.1:8443', to: 'https://127.0.0.1:8443', serverName: 'kubernetes', service: 'kubelet', why: 'tls-server-name (none) -> kubernetes' },
    ]);
    expect(planRepoint(kcs, LISTEN, facts({ servers: ['https://127.0.0.1:8443'], tlsServerNames: ['old.example'] }), 'kubernetes')[0]!.why).toBe(
      'tls-server-name old.example -> kubernetes',
    );
    expect(planRepoint(kcs, LISTEN, facts(pointed))).toEqual([]);
  });

  it('brackets an IPv6 listen address in the URL, with or without brackets in the inventory', () => {
    expect(serverUrl('[::1]:8443')).toBe('https://[::1]:8443');
    expect(serverUrl('::1:8443')).toBe('https://[::1]:8443');
    expect(planRepoint(kcs, '[::1]:8443', facts({ servers: ['https://[::1]:8443'] }))).toEqual([]);
    expect(planRepoint(kcs, '[::1]:8443', facts({ servers: ['https://127.0.0.1:8443'] }))[0]).toMatchObject({ from: 'https://127.0.0.1:8443', to: 'https://[::1]:8443' });
  });

  it('still plans from whole texts for callers that ask for them', () => {
    const f = hostFacts({ texts: { [KUBELET]: KUBECONFIG }, units: { 'kubelet.service': unit('loaded') } });
    expect(serversIn(KUBECONFIG)).toEqual(['https://192.0.2.11:6443', 'https://192.0.2.12:6443']);
    expect(planRepoint(kcs, LISTEN, f, 'old.example')[0]).toMatchObject({
      from: 'https://192.0.2.11:6443',
      why: 'server https://192.0.2.11:6443 -> https://127.0.0.1:8443; tls-server-name (none) -> old.example',
    });
  });
});

describe('rewriting a kubeconfig on the node', () => {
  it('rewrites every server, sets one tls-server-name per cluster, keeps the original once and the mode, leaves the rest untouched', async () => {
    const dir = tmp();
    const file = path.join(dir, "kube let's.kubeconfig");
    fs.writeFileSync(file, KUBECONFIG, { mode: 0o640 });
    const r = await run('/bin/sh', ['-c', rewriteCommands(file, 'https://127.0.0.1:8443', 'kubernetes')]);
    expect(r).toMatchObject({ code: 0, stdout: '', stderr: '' });
    expect(fs.readFileSync(file, 'utf8')).toBe(REWRITTEN);
    expect((fs.statSync(file).mode & 0o777).toString(8)).toBe('640');
    expect(fs.readFileSync(file + ORIGINAL_SUFFIX, 'utf8')).toBe(KUBECONFIG);
    expect((fs.statSync(file + ORIGINAL_SUFFIX).mode & 0o777).toString(8)).toBe('640');

    // Again: the same file (no second tls-server-name), and the original backup is never overwritten.
    expect((await run('/bin/sh', ['-c', rewriteCommands(file, 'https://127.0.0.1:8443', 'kubernetes')])).code).toBe(0);
    expect(fs.readFileSync(file, 'utf8')).toBe(REWRITTEN);
    await run('/bin/sh', ['-c', rewriteCommands(file, 'https://[::1]:8443')]);
    expect(serversIn(fs.readFileSync(file, 'utf8'))).toEqual(['https://[::1]:8443', 'https://[::1]:8443']);
    // Without a server name, existing tls-server-name lines stay as they are.
    expect(fs.readFileSync(file, 'utf8')).toBe(REWRITTEN.replaceAll('https://127.0.0.1:8443', 'https://[::1]:8443'));
    expect(fs.readFileSync(file + ORIGINAL_SUFFIX, 'utf8')).toBe(KUBECONFIG);
    expect(fs.readdirSync(dir).sort()).toEqual([path.basename(file), path.basename(file) + ORIGINAL_SUFFIX]);
  });

  it('refuses a file whose rewrite has no server line, leaving it and no staged copy behind', async () => {
    const dir = tmp();
    const file = path.join(dir, 'empty.kubeconfig');
    fs.writeFileSync(file, 'apiVersion: v1\nclusters: []\n', { mode: 0o600 });
    const r = await run('/bin/sh', ['-c', rewriteCommands(file, 'https://127.0.0.1:8443', 'kubernetes')]);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toContain('does not name server https://127.0.0.1:8443');
    expect(fs.readFileSync(file, 'utf8')).toBe('apiVersion: v1\nclusters: []\n');
    expect(fs.existsSync(`${file}.k8s-ha-new`)).toBe(false);
  });
});

describe('the repoint script', () => {
  const change = (file: string, service?: string): Repoint => ({
    path: file,
    from: 'https://192.0.2.11:6443',
    to: 'https://127.0.0.1:8443',
    serverName: 'kubernetes',
    why: 'x',
    ...(service ? { service } : {}),
  });

  it('restarts, waits on the unit state and its connection to the balancer, and undoes on failure', () => {
    const s = repointScript([change('/etc/kubernetes/kubelet.kubeconfig', 'kubelet')], { listen: '[::1]:8443', timeoutS: 30 });
    expect(s.split('\n')[0]).toBe('set -u');
    expect(s).not.toContain('set -e');
    expect(s).toContain("LISTEN='[::1]:8443'");
    expect(s).toContain('TIMEOUT=30');
    expect(s).toContain('systemctl restart kubelet 2>&1');
    expect(s).toContain('systemctl show -p ActiveState -p SubState "$1"');
    expect(s).toContain('systemctl show -p ControlGroup "$1"');
    expect(s).toContain('cgroup.procs');
    expect(s).toContain('ss -Htnp state established dst "$LISTEN"');
    expect(s).toContain('/proc/net/tcp /proc/net/tcp6');
    expect(s).toContain('rewrite_kubeconfig /etc/kubernetes/kubelet.kubeconfig https://127.0.0.1:8443 kubernetes');
    expect(s).toContain('restore_file /etc/kubernetes/kubelet.kubeconfig');
    for (const m of ['@@repointed', '@@repoint-failed', '@@restored', '@@restore-failed']) expect(s).toContain(m);
  });

  it('finds the balancer in /proc/net/tcp{,6} in either byte order', () => {
    expect(procNetAddresses('127.0.0.1:8443')).toEqual([
      '0100007F:20FB',
      '7F000001:20FB',
      '0000000000000000FFFF00000100007F:20FB',
      '00000000000000000000FFFF7F000001:20FB',
    ]);
    expect(procNetAddresses('[::1]:8443')).toEqual(['00000000000000000000000001000000:20FB', '00000000000000000000000000000001:20FB']);
  });

  it('parses its markers', () => {
    expect(parseRepointOutput('@@repointed\n')).toEqual({ ok: true });
    expect(parseRepointOutput('')).toEqual({ ok: false });
    expect(parseRepointOutput('@@repoint-failed kubelet: not active\n@@restored\n')).toEqual({ ok: false, failure: 'kubelet: not active', restored: true });
    expect(parseRepointOutput('@@repoint-failed kubelet: x\n@@restore-failed could not restore: kubelet\n')).toEqual({
      ok: false,
      failure: 'kubelet: x',
      restored: false,
      restoreFailure: 'could not restore: kubelet',
    });
  });

  /** Runs the whole script with stand-ins for systemctl and ss on PATH; the unit's cgroup is a temp dir. */
  async function runWithFakes(opts: { subState: string; ssPid: string }) {
    const dir = tmp();
    const bin = path.join(dir, 'bin');
    const cg = path.join(dir, 'cg');
    fs.mkdirSync(bin);
    fs.mkdirSync(cg);
    fs.writeFileSync(path.join(cg, 'cgroup.procs'), '4242\n');
    const log = path.join(dir, 'systemctl.log');
    fs.writeFileSync(
      path.join(bin, 'systemctl'),
      `#!/bin/sh\necho "$*" >> ${log}\ncase "$*" in\n*ControlGroup*) echo "ControlGroup=/../../..${cg}" ;;\n` +
        `*ActiveState*) printf 'SubState=%s\\nActiveState=active\\n' ${opts.subState} ;;\nesac\nexit 0\n`,
      { mode: 0o755 },
    );
    fs.writeFileSync(path.join(bin, 'ss'), `#!/bin/sh\necho "0 0 127.0.0.1:40000 127.0.0.1:8443 users:((\\"kubelet\\",pid=${opts.ssPid},fd=7))"\n`, { mode: 0o755 });
    const file = path.join(dir, 'kubelet.kubeconfig');
    fs.writeFileSync(file, KUBECONFIG, { mode: 0o600 });
    const script = repointScript([change(file, 'kubelet')], { listen: '127.0.0.1:8443', timeoutS: 1 });
    const r = await run('/bin/sh', ['-c', script], { env: { ...process.env, PATH: `${bin}:${process.env.PATH}` } });
    return { r, file, calls: fs.readFileSync(log, 'utf8').split('\n').filter((l) => l.startsWith('restart')) };
  }

  it.skipIf(!fs.existsSync('/sys/fs/cgroup'))('succeeds once the restarted unit runs and one of its processes is connected to the balancer', async () => {
    const { r, file, calls } = await runWithFakes({ subState: 'running', ssPid: '4242' });
    expect(r.stdout).toBe('@@repointed\n');
    expect(parseRepointOutput(r.stdout)).toEqual({ ok: true });
    expect(calls).toEqual(['restart kubelet']);
    expect(fs.readFileSync(file, 'utf8')).toBe(REWRITTEN);
  });

  it.skipIf(!fs.existsSync('/sys/fs/cgroup'))('puts the original back and restarts again when the unit never connects', async () => {
    const { r, file, calls } = await runWithFakes({ subState: 'running', ssPid: '999' });
    expect(parseRepointOutput(r.stdout)).toEqual({ ok: false, failure: 'kubelet: no established connection to 127.0.0.1:8443 after 1s', restored: true });
    expect(r.code).toBe(1);
    expect(calls).toEqual(['restart kubelet', 'restart kubelet']);
    expect(fs.readFileSync(file, 'utf8')).toBe(KUBECONFIG);
    expect((fs.statSync(file).mode & 0o777).toString(8)).toBe('600');
  });

  it.skipIf(!fs.existsSync('/sys/fs/cgroup'))('fails when the unit is not running', async () => {
    const { r } = await runWithFakes({ subState: 'auto-restart', ssPid: '4242' });
    expect(parseRepointOutput(r.stdout)).toMatchObject({ ok: false, failure: 'kubelet: not active and running after 1s (ActiveState=active SubState=auto-restart )', restored: true });
  });
});
