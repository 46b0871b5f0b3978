import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { factScript, parseFacts, parseKubeconfigFacts, type FactRequest } from '../../src/facts/host.js';
import {
  backupName,
  LEGACY_SUFFIX,
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
import { inventorySchema } from '../../src/inventory/schema.js';
import { checkRules } from '../../src/inventory/rules.js';
import { planRepointFor, repointTarget } from '../../src/engine/repoint.js';

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

function facts(kubelet: { servers: string[]; tlsServerNames?: string[]; legacyBackup?: boolean } | null, kubeletUnit = 'loaded') {
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

  it('says whether an earlier version left its *.k8s-ha-orig copy beside it', async () => {
    const dir = tmp();
    const file = path.join(dir, 'kubelet.kubeconfig');
    fs.writeFileSync(file, KUBECONFIG, { mode: 0o600 });
    const req: FactRequest = { files: [], dirs: [], units: [], guards: [], kubeconfigs: [file] };
    const read = async () => parseFacts(req, (await run('sh', ['-c', factScript(req)])).stdout).kubeconfigs![file];
    expect((await read())!.legacyBackup).toBeUndefined();
    fs.writeFileSync(file + LEGACY_SUFFIX, KUBECONFIG, { mode: 0o600 });
    expect(await read()).toMatchObject({ legacyBackup: true, mode: '600' });
  });

  it("names the copies a killed run left beside it (its backup, its staged file), under the name the link resolves to", async () => {
    const dir = tmp();
    const real = path.join(dir, 'kubelet.real');
    const file = path.join(dir, 'kubelet.kubeconfig');
    fs.writeFileSync(real, KUBECONFIG, { mode: 0o600 });
    fs.symlinkSync(real, file);
    const req: FactRequest = { files: [], dirs: [], units: [], guards: [], kubeconfigs: [file] };
    const read = async () => parseFacts(req, (await run('sh', ['-c', factScript(req)])).stdout).kubeconfigs![file];
    expect((await read())!.leftovers).toBeUndefined();
    fs.linkSync(real, `${real}.k8s-ha-prev.20261201T010203-abcdef`);
    fs.writeFileSync(`${real}.k8s-ha-new.20261201T010203-abcdef.Q1w2E3`, REWRITTEN);
    expect((await read())!.leftovers).toEqual([`${real}.k8s-ha-prev.20261201T010203-abcdef`, `${real}.k8s-ha-new.20261201T010203-abcdef.Q1w2E3`]);
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

  it('plans removing the copy an earlier version kept beside a kubeconfig already pointed, with no restart', () => {
    const pointed = { servers: ['https://127.0.0.1:8443'], tlsServerNames: ['kubernetes'] };
    expect(planRepoint(kcs, LISTEN, facts({ ...pointed, legacyBackup: true }), 'kubernetes')).toEqual([
      { path: KUBELET, from: 'https://127.0.0.1:8443', to: 'https://127.0.0.1:8443', why: `remove ${KUBELET}.k8s-ha-orig, the copy an earlier version kept`, forgetOnly: true },
    ]);
    // Still to be pointed: the rewrite removes it once verified.
    expect(planRepoint(kcs, LISTEN, facts({ servers: ['https://192.0.2.11:6443'], legacyBackup: true }))[0]).not.toHaveProperty('forgetOnly');
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
  const RUN_A = '20270101T000000-aaaaaa';
  const RUN_B = '20270102T000000-bbbbbb';

  it('rewrites every server, sets one tls-server-name per cluster, keeps what it replaced under the run id with its mode, leaves the rest untouched', async () => {
    const dir = tmp();
    const file = path.join(dir, "kube let's.kubeconfig");
    fs.writeFileSync(file, KUBECONFIG, { mode: 0o640 });
    const r = await run('/bin/sh', ['-c', rewriteCommands(file, 'https://127.0.0.1:8443', 'kubernetes', RUN_A)]);
    expect(r).toMatchObject({ code: 0, stdout: '', stderr: '' });
    expect(fs.readFileSync(file, 'utf8')).toBe(REWRITTEN);
    expect((fs.statSync(file).mode & 0o777).toString(8)).toBe('640');
    // The backup is the replaced file itself: its bytes, its mode, its owner.
    expect(fs.readFileSync(backupName(file, RUN_A), 'utf8')).toBe(KUBECONFIG);
    expect((fs.statSync(backupName(file, RUN_A)).mode & 0o777).toString(8)).toBe('640');

    // Again: the same file (no second tls-server-name); another run keeps what it replaced, under its own name.
    expect((await run('/bin/sh', ['-c', rewriteCommands(file, 'https://127.0.0.1:8443', 'kubernetes', RUN_B)])).code).toBe(0);
    expect(fs.readFileSync(file, 'utf8')).toBe(REWRITTEN);
    expect(fs.readFileSync(backupName(file, RUN_B), 'utf8')).toBe(REWRITTEN);
    fs.rmSync(backupName(file, RUN_B));
    await run('/bin/sh', ['-c', rewriteCommands(file, 'https://[::1]:8443', undefined, RUN_B)]);
    expect(serversIn(fs.readFileSync(file, 'utf8'))).toEqual(['https://[::1]:8443', 'https://[::1]:8443']);
    // Without a server name, existing tls-server-name lines stay as they are.
    expect(fs.readFileSync(file, 'utf8')).toBe(REWRITTEN.replaceAll('https://127.0.0.1:8443', 'https://[::1]:8443'));
    expect(fs.readdirSync(dir).sort()).toEqual([path.basename(file), path.basename(backupName(file, RUN_A)), path.basename(backupName(file, RUN_B))].sort());
  });

  it('refuses a file whose rewrite has no server line, leaving it and no staged copy or backup behind', async () => {
    const dir = tmp();
    const file = path.join(dir, 'empty.kubeconfig');
    fs.writeFileSync(file, 'apiVersion: v1\nclusters: []\n', { mode: 0o600 });
    const r = await run('/bin/sh', ['-c', rewriteCommands(file, 'https://127.0.0.1:8443', 'kubernetes', RUN_A)]);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toContain('does not name server https://127.0.0.1:8443');
    expect(fs.readFileSync(file, 'utf8')).toBe('apiVersion: v1\nclusters: []\n');
    expect(fs.readdirSync(dir)).toEqual(['empty.kubeconfig']);
  });
});

describe('the repoint script', () => {
  const RUN = '20270101T000000-abcdef';
  const change = (file: string, service?: string): Repoint => ({
    path: file,
    from: 'https://192.0.2.11:6443',
    to: 'https://127.0.0.1:8443',
    serverName: 'kubernetes',
    why: 'x',
    ...(service ? { service } : {}),
  });

  it('restarts, waits on the unit state and its connection to the balancer, and undoes on failure', () => {
    const s = repointScript([change('/etc/kubernetes/kubelet.kubeconfig', 'kubelet')], { listen: '[::1]:8443', timeoutS: 30, runId: RUN });
    expect(s.split('\n').slice(0, 3)).toEqual(['set -u', "trap '' HUP PIPE", `RUN=${RUN}`]);
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
    expect(s).toContain('restore_file "$kept_0"');
    expect(s).toContain('forget_file "$kept_0" /etc/kubernetes/kubelet.kubeconfig');
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

  /**
   * Runs the whole script with stand-ins for systemctl and ss on PATH; the unit's cgroup is a temp
   * dir, reached as /sys/fs/cgroup/../../..DIR (every Linux this runs on has /sys/fs/cgroup). `file` (default: a fresh kubelet.kubeconfig holding KUBECONFIG) is what the kubeconfig
   * entry names; `prepare` plants whatever else the test needs beside it first.
   */
  async function runWithFakes(opts: { subState: string; ssPid: string; runId?: string; dir?: string; file?: string; prepare?: (dir: string, file: string) => void }) {
    const dir = opts.dir ?? tmp();
    const bin = path.join(dir, 'bin');
    const cg = path.join(dir, 'cg');
    fs.mkdirSync(bin, { recursive: true });
    fs.mkdirSync(cg, { recursive: true });
    fs.writeFileSync(path.join(cg, 'cgroup.procs'), '4242\n');
    const log = path.join(dir, 'systemctl.log');
    fs.writeFileSync(log, '');
    fs.writeFileSync(
      path.join(bin, 'systemctl'),
      `#!/bin/sh\necho "$*" >> ${log}\ncase "$*" in\n*ControlGroup*) echo "ControlGroup=/../../..${cg}" ;;\n` +
        `*ActiveState*) printf 'SubState=%s\\nActiveState=active\\n' ${opts.subState} ;;\nesac\nexit 0\n`,
      { mode: 0o755 },
    );
    fs.writeFileSync(path.join(bin, 'ss'), `#!/bin/sh\necho "0 0 127.0.0.1:40000 127.0.0.1:8443 users:((\\"kubelet\\",pid=${opts.ssPid},fd=7))"\n`, { mode: 0o755 });
    const file = opts.file ?? path.join(dir, 'kubelet.kubeconfig');
    if (!opts.file) fs.writeFileSync(file, KUBECONFIG, { mode: 0o600 });
    opts.prepare?.(dir, file);
    const script = repointScript([change(file, 'kubelet')], { listen: '127.0.0.1:8443', timeoutS: 1, runId: opts.runId ?? RUN });
    const r = await run('/bin/sh', ['-c', script], { env: { ...process.env, PATH: `${bin}:${process.env.PATH}` } });
    return { r, dir, file, calls: fs.readFileSync(log, 'utf8').split('\n').filter((l) => l.startsWith('restart')) };
  }

  /** What lies beside the kubeconfig, the fakes' own files aside. */
  const beside = (dir: string) => fs.readdirSync(dir).filter((f) => !['bin', 'cg', 'systemctl.log'].includes(f)).sort();

  it('succeeds once the restarted unit runs and one of its processes is connected to the balancer; no copy of the file stays, nor an earlier version\'s', async () => {
    const { r, dir, file, calls } = await runWithFakes({ subState: 'running', ssPid: '4242', prepare: (_, f) => fs.writeFileSync(f + LEGACY_SUFFIX, KUBECONFIG, { mode: 0o600 }) });
    expect(r.stdout).toBe('@@repointed\n');
    expect(parseRepointOutput(r.stdout)).toEqual({ ok: true });
    expect(calls).toEqual(['restart kubelet']);
    expect(fs.readFileSync(file, 'utf8')).toBe(REWRITTEN);
    // No backup of this run, no *.k8s-ha-orig: the client key is in the kubeconfig alone.
    expect(beside(dir)).toEqual(['kubelet.kubeconfig']);
  });

  it('puts back the file it replaced and restarts again when the unit never connects', async () => {
    const { r, dir, file, calls } = await runWithFakes({ subState: 'running', ssPid: '999' });
    expect(parseRepointOutput(r.stdout)).toEqual({ ok: false, failure: 'kubelet: no established connection to 127.0.0.1:8443 after 1s', restored: true });
    expect(r.code).toBe(1);
    expect(calls).toEqual(['restart kubelet', 'restart kubelet']);
    expect(fs.readFileSync(file, 'utf8')).toBe(KUBECONFIG);
    expect((fs.statSync(file).mode & 0o777).toString(8)).toBe('600');
    expect(beside(dir)).toEqual(['kubelet.kubeconfig']);
  });

  it('a failed run restores the file it replaced, not one an earlier run replaced', async () => {
    const a = await runWithFakes({ subState: 'running', ssPid: '4242', runId: '20270101T000000-aaaaaa' });
    expect(a.r.stdout).toBe('@@repointed\n');
    // The operator's newer file: a new client certificate, the server pointed elsewhere again, mode 640.
    const newer = KUBECONFIG.replace('client-certificate-data: LS0tLS1DRVJU', 'client-certificate-data: TkVXLUNFUlQ=').replaceAll('192.0.2.1', '198.51.100.1');
    fs.rmSync(a.file);
    fs.writeFileSync(a.file, newer, { mode: 0o640 });
    const ino = fs.statSync(a.file).ino;
    const b = await runWithFakes({ subState: 'running', ssPid: '999', runId: '20270102T000000-bbbbbb', dir: a.dir, file: a.file });
    expect(parseRepointOutput(b.r.stdout)).toMatchObject({ ok: false, restored: true });
    expect(fs.readFileSync(a.file, 'utf8')).toBe(newer);
    // Exactly that file: the same inode, so its mode and owner too.
    expect(fs.statSync(a.file).ino).toBe(ino);
    expect((fs.statSync(a.file).mode & 0o777).toString(8)).toBe('640');
    expect(beside(a.dir)).toEqual(['kubelet.kubeconfig']);
  });

  it('follows no symlink planted at the old fixed staging name, nor at this run\'s backup name', async () => {
    const victim = path.join(tmp(), 'victim');
    fs.writeFileSync(victim, 'not yours\n');
    // The name earlier versions staged through: written with `>`, it would have overwritten the victim.
    const ok = await runWithFakes({ subState: 'running', ssPid: '4242', prepare: (_, f) => fs.symlinkSync(victim, `${f}.k8s-ha-new`) });
    expect(ok.r.stdout).toBe('@@repointed\n');
    expect(fs.readFileSync(victim, 'utf8')).toBe('not yours\n');
    expect(fs.readFileSync(ok.file, 'utf8')).toBe(REWRITTEN);
    expect(fs.readlinkSync(`${ok.file}.k8s-ha-new`)).toBe(victim);

    // This run's backup name taken already: the run stops before replacing anything, and the undo moves no stranger's file into place.
    const taken = await runWithFakes({ subState: 'running', ssPid: '4242', prepare: (_, f) => fs.symlinkSync(victim, backupName(f, RUN)) });
    expect(parseRepointOutput(taken.r.stdout)).toMatchObject({ ok: false, restored: true });
    expect(taken.r.stdout).toMatch(/cannot keep .*kubelet\.kubeconfig as .*kubelet\.kubeconfig\.k8s-ha-prev\.20270101T000000-abcdef/);
    expect(taken.calls).toEqual([]);
    expect(fs.readFileSync(taken.file, 'utf8')).toBe(KUBECONFIG);
    expect(fs.lstatSync(taken.file).isSymbolicLink()).toBe(false);
    expect(fs.readFileSync(victim, 'utf8')).toBe('not yours\n');
    expect(beside(taken.dir)).toEqual(['kubelet.kubeconfig', `kubelet.kubeconfig.k8s-ha-prev.${RUN}`]);
  });

  it('rewrites the target of a symlinked kubeconfig (the link stays), and puts that target back on failure', async () => {
    const real = path.join(tmp(), 'kubelet.real');
    fs.writeFileSync(real, KUBECONFIG, { mode: 0o600 });
    const prepare = (_: string, f: string) => {
      fs.rmSync(f);
      fs.symlinkSync(real, f);
    };
    const failed = await runWithFakes({ subState: 'running', ssPid: '999', prepare });
    expect(parseRepointOutput(failed.r.stdout)).toMatchObject({ ok: false, restored: true });
    expect(fs.readlinkSync(failed.file)).toBe(real);
    expect(fs.readFileSync(real, 'utf8')).toBe(KUBECONFIG);
    const ok = await runWithFakes({ subState: 'running', ssPid: '4242', prepare });
    expect(ok.r.stdout).toBe('@@repointed\n');
    expect(fs.readlinkSync(ok.file)).toBe(real);
    expect(fs.readFileSync(real, 'utf8')).toBe(REWRITTEN);
    expect(fs.readdirSync(path.dirname(real))).toEqual(['kubelet.real']);
  });

  it('removes an earlier version\'s copy beside a kubeconfig already pointed, touching nothing else', async () => {
    const dir = tmp();
    const file = path.join(dir, 'kubelet.kubeconfig');
    fs.writeFileSync(file, REWRITTEN, { mode: 0o600 });
    fs.writeFileSync(file + LEGACY_SUFFIX, KUBECONFIG, { mode: 0o600 });
    const script = repointScript([{ path: file, from: 'https://127.0.0.1:8443', to: 'https://127.0.0.1:8443', why: 'x', forgetOnly: true }], { listen: '127.0.0.1:8443', runId: RUN });
    expect(script).not.toContain('systemctl restart');
    expect(script).not.toMatch(/^rewrite_kubeconfig /m);
    const r = await run('/bin/sh', ['-c', script]);
    expect(r.stdout).toBe('@@repointed\n');
    expect(fs.readdirSync(dir)).toEqual(['kubelet.kubeconfig']);
    expect(fs.readFileSync(file, 'utf8')).toBe(REWRITTEN);
  });

  it('removes the copies a killed run left beside a kubeconfig already pointed, and says why in the plan', async () => {
    const dir = tmp();
    const file = path.join(dir, 'kubelet.kubeconfig');
    fs.writeFileSync(file, REWRITTEN, { mode: 0o600 });
    const prev = `${file}.k8s-ha-prev.20261201T010203-abcdef`;
    const staged = `${file}.k8s-ha-new.20261201T010203-abcdef.Q1w2E3`;
    fs.writeFileSync(prev, KUBECONFIG, { mode: 0o600 });
    fs.writeFileSync(staged, REWRITTEN, { mode: 0o600 });
    const kc = { servers: ['https://127.0.0.1:8443'], tlsServerNames: [], mode: '600', leftovers: [prev, staged] };
    const plan = planRepoint([{ path: file, service: 'kubelet' }], '127.0.0.1:8443', { ...facts(null), kubeconfigs: { [file]: kc } });
    expect(plan).toEqual([{ path: file, from: 'https://127.0.0.1:8443', to: 'https://127.0.0.1:8443', why: `remove ${prev}, ${staged}, left by an interrupted run`, forgetOnly: true }]);
    const r = await run('/bin/sh', ['-c', repointScript(plan, { listen: '127.0.0.1:8443', runId: RUN })]);
    expect(r.stdout).toBe('@@repointed\n');
    expect(fs.readdirSync(dir)).toEqual(['kubelet.kubeconfig']);
    expect(fs.readFileSync(file, 'utf8')).toBe(REWRITTEN);
  });

  it('fails when the unit is not running', async () => {
    const { r } = await runWithFakes({ subState: 'auto-restart', ssPid: '4242' });
    expect(parseRepointOutput(r.stdout)).toMatchObject({ ok: false, failure: 'kubelet: not active and running after 1s (ActiveState=active SubState=auto-restart )', restored: true });
  });
});

describe('where a node\'s kubeconfigs go (nodes[].repointTo)', () => {
  const inv = (nodes: Record<string, unknown>[]) =>
    inventorySchema.parse({ masters: [{ name: 'm1', address: '192.0.2.11' }, { name: 'm2', address: '192.0.2.12', port: 6443 }], nodes, lb: { impl: 'kube-lb' } });

  it('the local balancer by default; a control-plane host named by its master: that apiserver, which the plan says', () => {
    const i = inv([{ name: 'w1' }, { name: 'cp2', address: '192.0.2.12', repointTo: 'm2' }]);
    expect(repointTarget(i, i.nodes[0]!)).toEqual({ to: '127.0.0.1:8443', toWhat: 'the local balancer' });
    expect(repointTarget(i, i.nodes[1]!)).toEqual({ to: '192.0.2.12:6443', toWhat: "m2's apiserver" });
    const facts = hostFacts({ kubeconfigs: { '/etc/kubernetes/kubelet.conf': { servers: ['https://192.0.2.11:6443'], tlsServerNames: [], mode: '600' } }, units: {} } as never);
    const plan = planRepointFor(i, facts, i.nodes[1]!);
    expect(plan.to).toBe('192.0.2.12:6443');
    expect(plan.changes.map((c) => [c.path, c.from, c.to])).toEqual([['/etc/kubernetes/kubelet.conf', 'https://192.0.2.11:6443', 'https://192.0.2.12:6443']]);
  });

  it('kubeadm\'s and "the hard way"\'s paths are looked for by default, beside the binary installs\'', () => {
    expect(inv([{ name: 'w1' }]).kubeconfigs.map((k) => k.path)).toEqual([
      '/etc/kubernetes/kubelet.kubeconfig',
      '/etc/kubernetes/kube-proxy.kubeconfig',
      '/etc/kubernetes/kubelet.conf',
      '/var/lib/kubelet/kubeconfig',
      '/var/lib/kube-proxy/kubeconfig',
    ]);
  });

  it('a name that is no master is refused, naming the masters; another host\'s apiserver is warned about', () => {
    const d = checkRules(inv([{ name: 'w1', repointTo: 'm9' }, { name: 'w2', address: '192.0.2.50', repointTo: 'm1' }]));
    expect(d.filter((x) => x.path[0] === 'nodes').map((x) => [x.severity, x.path.join('.'), x.message])).toEqual([
      ['error', 'nodes.0.repointTo', '"m9" is not a master of this inventory: write balancer, or one of m1, m2'],
      ['warning', 'nodes.1.repointTo', expect.stringMatching(/^points w2's kubeconfigs at m1 \(192\.0\.2\.11\), another host's apiserver/)],
    ]);
  });
});
