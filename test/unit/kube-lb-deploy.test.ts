/** The deploy side of kube-lb, with plain data: its rendered config and unit, the switch plans, and auto's choice. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { describe, expect, it } from 'vitest';
import { buildKey, builtFor, cannotRun, hasToolchain, linkArgs, staticElf, toolchainInstallCommand } from '../../src/build/nginx.js';
import type { UnitFacts } from '../../src/facts/host.js';
import { parseInventory, resolvePaths } from '../../src/inventory/load.js';
import { renderKubeLbConf, renderKubeLbUnit } from '../../src/lb/kube-lb.js';
import { OPERATIONS } from '../../src/ops/catalogue.js';
import type { Change, Handler } from '../../src/ops/types.js';
import { proxyConfigSchema } from '../../src/proxy/config.js';
import { hostFacts } from '../helpers/facts.js';

const CA = '-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n';
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kube-lb-deploy-'));
fs.writeFileSync(path.join(dir, 'ca.crt'), CA);

const inv = (extra = '') =>
  resolvePaths(
    parseInventory(`
masters:
  - { name: master-1, address: 192.0.2.11 }
  - { name: master-2, address: 192.0.2.12, port: 6444 }
nodes: [{ name: n1, address: 192.0.2.21 }]
lb: { impl: kube-lb, balance: round_robin, proxyTimeout: 12m }
tls: { caFile: ca.crt, serverName: kubernetes }
${extra}
`).inventory!,
    dir,
  );

describe('kube-lb.yaml', () => {
  it('is accepted by kube-lb\'s own schema and carries the masters, timeouts, checks and the cluster CA', () => {
    const cfg = proxyConfigSchema.parse(YAML.parse(renderKubeLbConf(inv())));
    expect(cfg.backends).toEqual([
      { name: 'master-1', address: '192.0.2.11', port: 6443 },
      { name: 'master-2', address: '192.0.2.12', port: 6444 },
    ]);
    expect(cfg).toMatchObject({ listen: '127.0.0.1:8443', admin: '127.0.0.1:8444', balance: 'round_robin', idleTimeout: 12 * 60_000, connectTimeout: 1000 });
    expect(cfg.passive).toEqual({ maxFails: 3, failTimeout: 30_000 });
    expect(cfg.active).toMatchObject({ enabled: true, path: '/readyz', interval: 1000, fastInterval: 250, timeout: 700, rise: 2, fall: 2, serverName: 'kubernetes', insecureSkipVerify: false, ca: CA });
  });

  it('passes check settings and a node-side client certificate through', () => {
    const cfg = proxyConfigSchema.parse(
      YAML.parse(renderKubeLbConf(inv('kubeLb: { check: { interval: 2s, fall: 3, clientCertFile: /etc/kubernetes/pki/lb.crt, clientKeyFile: /etc/kubernetes/pki/lb.key }, drainTimeout: 5s }'))),
    );
    expect(cfg.active).toMatchObject({ interval: 2000, fall: 3, clientCertFile: '/etc/kubernetes/pki/lb.crt', clientKeyFile: '/etc/kubernetes/pki/lb.key' });
    expect(cfg.drainTimeout).toBe(5000);
  });

  it('names the inventory field when the CA cannot be read', () => {
    const i = inv();
    i.tls.caFile = path.join(dir, 'missing.crt');
    expect(() => renderKubeLbConf(i)).toThrow(/cannot read tls\.caFile .*missing\.crt: ENOENT/);
  });
});

describe('kube-lb.service', () => {
  it('checks the config before starting, reloads with SIGHUP, always restarts', () => {
    const unit = renderKubeLbUnit(inv());
    expect(unit).toContain('ExecStartPre=/opt/k8s/kube-lb/sbin/kube-lb --check-config /opt/k8s/kube-lb/conf/kube-lb.yaml\n');
    expect(unit).toContain('ExecStart=/opt/k8s/kube-lb/sbin/kube-lb --config /opt/k8s/kube-lb/conf/kube-lb.yaml\n');
    expect(unit).toContain('ExecReload=/bin/kill -HUP $MAINPID\n');
    expect(unit).toContain('Restart=always\n');
  });
});

const unit = (activeState: string, unitFileState = 'enabled'): UnitFacts => ({
  loadState: 'loaded',
  activeState,
  subState: activeState === 'active' ? 'running' : 'dead',
  unitFileState,
  activeEnterTimestamp: '',
  mainPid: 0,
});
const missing: UnitFacts = { loadState: 'not-found', activeState: 'inactive', subState: 'dead', unitFileState: '', activeEnterTimestamp: '', mainPid: 0 };

function plan(args: Record<string, unknown>, units: Record<string, UnitFacts>, notified: Handler[] = []) {
  const facts = hostFacts({ units });
  const op = OPERATIONS.service!;
  return op.plan(op.args.parse(args), facts, { notified: new Set(notified), artifacts: {}, render: () => '' });
}

const runs = (changes: Change[]) => changes.filter((c): c is Extract<Change, { kind: 'run' }> => c.kind === 'run');

describe('switching implementation (service with replaces)', () => {
  const toKubeLb = { name: 'kube-lb', replaces: { unit: 'kube-nginx', listen: '127.0.0.1:8443', order: 'start-first', ready: '127.0.0.1:8444' } };
  const toNginx = { name: 'kube-nginx', replaces: { unit: 'kube-lb', listen: '127.0.0.1:8443', order: 'stop-first' } };

  it('kube-nginx serving: kube-lb starts, is ready, then kube-nginx stops; which one is enabled flips only after verify', () => {
    const p = plan(toKubeLb, { 'kube-lb': missing, 'kube-nginx': unit('active') }, ['daemon-reload', 'restart']);
    const r = runs(p.changes);
    expect(r.map((c) => c.label)).toEqual(['daemon-reload', 'switch from kube-nginx', 'enable', 'disable kube-nginx']);
    const sw = r[1]!;
    expect(sw.switchFrom).toBe('kube-nginx');
    // kube-nginx is stopped only if kube-lb's admin port (8444 = 0x20FC) came up.
    expect(sw.command).toMatch(/^systemctl restart --no-block kube-lb && \{ ok=0; for i in .*:20FC 0\+:0000 0A.*then ok=1; break; fi; .*\[ \$ok = 1 \] \|\| \{ echo 'kube-lb did not become ready: nothing listens on 127\.0\.0\.1:8444' >&2; false; \} && systemctl stop kube-nginx; \}$/);
    // The undo re-enables kube-nginx (it was enabled), and starts it only if it is not serving still.
    expect(sw.undo).toMatch(
      /^systemctl stop --no-block kube-lb; systemctl disable -q --no-reload kube-lb; systemctl enable -q --no-reload kube-nginx; systemctl is-active -q kube-nginx \|\| \{ for i in .*:20FB .*; systemctl start kube-nginx; \}$/,
    );
    expect(r[2]).toMatchObject({ command: 'systemctl enable -q --no-reload kube-lb', when: 'verified' });
    expect(r[3]).toMatchObject({ command: 'systemctl disable -q --no-reload kube-nginx', when: 'verified' });
    expect(p.summary).toBe('daemon-reload, switch from kube-nginx, enable, disable kube-nginx');
  });

  it('kube-lb serving: it lets go of the port first, kube-nginx starts the moment the port is free', () => {
    const r = runs(plan(toNginx, { 'kube-nginx': unit('inactive', 'disabled'), 'kube-lb': unit('active') }).changes);
    expect(r.map((c) => c.label)).toEqual(['switch from kube-lb', 'enable', 'disable kube-lb']);
    expect(r[0]!.command).toMatch(/^systemctl stop --no-block kube-lb; for i in \$\(seq 1 500\); do grep -Eq ':20FB 0\+:0000 0A' .* \|\| break; sleep 0\.01; done; systemctl restart kube-nginx$/);
  });

  it('the other unit installed but stopped: a plain start, then it is disabled after verify', () => {
    const r = runs(plan(toKubeLb, { 'kube-lb': unit('inactive', 'disabled'), 'kube-nginx': unit('inactive', 'enabled') }).changes);
    expect(r.map((c) => c.label)).toEqual(['start', 'enable', 'disable kube-nginx']);
    expect(r.filter((c) => c.when === 'verified').map((c) => c.label)).toEqual(['enable', 'disable kube-nginx']);
    expect(r.some((c) => c.switchFrom)).toBe(false);
  });

  it('nothing to switch and nothing to do once the other unit is gone or disabled', () => {
    expect(plan(toKubeLb, { 'kube-lb': unit('active'), 'kube-nginx': missing }).changes).toEqual([]);
    expect(plan(toKubeLb, { 'kube-lb': unit('active'), 'kube-nginx': unit('inactive', 'disabled') }).changes).toEqual([]);
  });
});

describe('lb.impl auto: can the nginx binary run on this node?', () => {
  const os = (arch: string, glibc: string) => ({ id: 'x', versionId: '1', prettyName: 'X', arch, glibc });
  const built = builtFor({ osKey: 'debian-12-x86_64-glibc2.36' })!;

  it('reads the build host from its OS key', () => {
    expect(built).toEqual({ arch: 'x86_64', glibc: '2.36', static: false });
  });

  it('a static (musl) build runs on any glibc, or none, of its architecture: only another CPU stops it', () => {
    const st = builtFor({ osKey: 'static-musl-x86_64' })!;
    expect(st).toEqual({ arch: 'x86_64', glibc: '', static: true });
    for (const glibc of ['2.17', '2.28', '2.31', '2.36', '']) expect(cannotRun(st, os('x86_64', glibc))).toBeUndefined();
    expect(cannotRun(st, os('aarch64', '2.36'))).toBe('the nginx binary is for x86_64, this node is aarch64');
  });

  it('runs on the same or a newer glibc of the same architecture', () => {
    expect(cannotRun(built, os('x86_64', '2.36'))).toBeUndefined();
    expect(cannotRun(built, os('x86_64', '2.39'))).toBeUndefined();
  });

  it('not on an older glibc, another architecture, or no glibc at all: each says why', () => {
    expect(cannotRun(built, os('x86_64', '2.31'))).toBe('the nginx binary needs glibc 2.36 or later (built on glibc 2.36), this node has 2.31');
    expect(cannotRun(built, os('x86_64', '1.99'))).toMatch(/needs glibc 2\.36/);
    expect(cannotRun(built, os('aarch64', '2.36'))).toBe('the nginx binary is for x86_64, this node is aarch64');
    expect(cannotRun(built, os('x86_64', ''))).toBe('the nginx binary needs glibc 2.36; this node has no glibc');
  });
});

describe('the static nginx build', () => {
  const os = (id: string, glibc: string, arch = 'x86_64') => ({ id, versionId: '1', prettyName: id, arch, glibc });
  const src = { version: '1.22.1', sources: ['http://x/nginx-1.22.1.tar.gz'], sha256: 'a'.repeat(64) };
  const configure = ['--with-stream', '--without-http'];

  it('is cached once per architecture, whatever the build host OS; a native build once per OS; the two never share a key', () => {
    expect(buildKey(src, configure, os('debian', '2.36'), 'static')).toBe(buildKey(src, configure, os('rocky', '2.28'), 'static'));
    expect(buildKey(src, configure, os('debian', '2.36'), 'static')).not.toBe(buildKey(src, configure, os('debian', '2.36', 'aarch64'), 'static'));
    expect(buildKey(src, configure, os('debian', '2.36'), 'native')).not.toBe(buildKey(src, configure, os('rocky', '2.28'), 'native'));
    expect(buildKey(src, configure, os('debian', '2.36'), 'native')).not.toBe(buildKey(src, configure, os('debian', '2.36'), 'static'));
  });

  it('compiles with musl-gcc, statically, and needs musl-gcc and strip on the build host', () => {
    expect(linkArgs('static')).toEqual(['--with-cc=musl-gcc', '--with-cc-opt=-static -Os -Imusl-compat', '--with-ld-opt=-static']);
    expect(linkArgs('native')).toEqual([]);
    expect(hasToolchain(['gcc', 'make'], 'native')).toBe(true);
    expect(hasToolchain(['gcc', 'make', 'strip'], 'static')).toBe(false);
    expect(hasToolchain(['gcc', 'make', 'musl-gcc', 'strip'], 'static')).toBe(true);
    expect(toolchainInstallCommand('apt-get', 'static')).toMatch(/apt-get install -y -qq --no-install-recommends gcc make libc6-dev musl-tools binutils$/);
    expect(toolchainInstallCommand('dnf', 'static')).toBe('dnf install -y -q gcc make glibc-devel musl-gcc binutils');
    expect(toolchainInstallCommand('apt-get', 'native')).toMatch(/libc6-dev$/);
  });

  it('tells a static ELF executable from a dynamic one by its program headers', () => {
    // A 64-bit little-endian ELF header with program headers at 64, each 56 bytes.
    const elf = (types: number[]) => {
      const b = Buffer.alloc(64 + 56 * types.length);
      b.writeUInt32BE(0x7f454c46, 0);
      b[4] = 2;
      b[5] = 1;
      b.writeBigUInt64LE(64n, 32);
      b.writeUInt16LE(56, 54);
      b.writeUInt16LE(types.length, 56);
      types.forEach((t, i) => b.writeUInt32LE(t, 64 + 56 * i));
      return b;
    };
    expect(staticElf(elf([6, 1, 1, 4]))).toBe(true); // PHDR, LOAD, LOAD, NOTE
    expect(staticElf(elf([6, 3, 1, 2]))).toBe(false); // an interpreter and a dynamic section
    expect(staticElf(elf([1, 2]))).toBe(false);
    expect(staticElf(Buffer.from('#!/bin/sh\n'.padEnd(64)))).toBeUndefined();
    // This machine's own node binary is dynamically linked.
    const head = Buffer.alloc(4096);
    const fd = fs.openSync(process.execPath, 'r');
    fs.readSync(fd, head, 0, 4096, 0);
    fs.closeSync(fd);
    expect(staticElf(head)).toBe(false);
  });
});

describe("nginx's binary upgrade in place (service with binaryUpgrade)", () => {
  const nginx = { name: 'kube-nginx', binaryUpgrade: { pidFile: '/opt/k8s/kube-nginx/logs/kube-nginx.pid' } };

  it('a new binary for a running kube-nginx: upgraded in place, nginx\'s own rollback as the undo, the old master retired only once verified', () => {
    const r = runs(plan(nginx, { 'kube-nginx': unit('active') }, ['upgrade', 'reload']).changes);
    expect(r.map((c) => [c.label, c.when])).toEqual([
      ['upgrade in place', undefined],
      ['retire the old master', 'verified'],
    ]);
    const [up, retire] = r;
    expect(up!.command).toContain('kill -USR2 "$old"');
    expect(up!.command).toContain('kill -WINCH "$old"');
    expect(up!.command.indexOf('USR2')).toBeLessThan(up!.command.indexOf('WINCH'));
    expect(up!.undo).toMatch(/if ours "\$old"; then .*kill -HUP "\$old"; if \[ "\$new" != "\$old" \] && ours "\$new"; then kill -QUIT "\$new"; fi/);
    expect(up!.undo).toContain('else rm -f /opt/k8s/kube-nginx/logs/kube-nginx.pid.oldbin; systemctl restart kube-nginx; fi');
    // Only a process of the unit is ever signalled: a PID file left by a master that is gone names some other process after a reboot.
    for (const c of [up!.command, up!.undo!, retire!.command]) expect(c).toContain("ours() { [ -n \"$1\" ] && grep -q '/kube-nginx.service$' /proc/$1/cgroup 2>/dev/null; }");
    expect(retire!.command).toMatch(/if ours "\$o"; then kill -QUIT "\$o"; else rm -f \/opt\/k8s\/kube-nginx\/logs\/kube-nginx\.pid\.oldbin; fi$/);
  });

  it('a changed unit, a stopped service, or a service with no binaryUpgrade: restarted or started as before', () => {
    expect(runs(plan(nginx, { 'kube-nginx': unit('active') }, ['upgrade', 'daemon-reload', 'restart']).changes).map((c) => c.label)).toEqual(['daemon-reload', 'restart']);
    expect(runs(plan(nginx, { 'kube-nginx': unit('inactive') }, ['upgrade']).changes).map((c) => c.label)).toEqual(['start']);
    expect(runs(plan({ name: 'kube-nginx' }, { 'kube-nginx': unit('active') }, ['upgrade']).changes).map((c) => c.label)).toEqual(['restart']);
  });
});

describe('a toolchain install that fails: why, from what the package manager printed', () => {
  it('tells a busy package manager and an unreachable mirror from a package that does not exist', async () => {
    const { packageFailure } = await import('../../src/build/nginx.js');
    expect(packageFailure('E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 1234 (unattended-upgr)\nE: Unable to acquire the dpkg frontend lock')).toBe('busy');
    // apt-get update only warns when no mirror answers; the install then finds no package at all: the mirror is the cause.
    expect(packageFailure('W: Failed to fetch http://deb.debian.org/debian/dists/bookworm/InRelease  Could not connect to 127.0.0.1:9 (127.0.0.1). - connect (111: Connection refused)\nE: Unable to locate package gcc')).toBe('unreachable');
    expect(packageFailure('Err:1 http://deb.debian.org/debian bookworm InRelease\n  Temporary failure resolving \'deb.debian.org\'')).toBe('unreachable');
    expect(packageFailure('Error: Failed to download metadata for repo \'baseos\': Cannot download repomd.xml')).toBe('unreachable');
    expect(packageFailure('E: Unable to locate package musl-tools')).toBe('missing');
    expect(packageFailure('Error: Unable to find a match: musl-gcc\nNo match for argument: musl-gcc')).toBe('missing');
    expect(packageFailure('E: Sub-process /usr/bin/dpkg returned an error code (1)')).toBeUndefined();
  });
});
