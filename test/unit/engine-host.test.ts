import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { factRequest, planHost } from '../../src/engine/plan.js';
import { stagedPath, withStagedPaths } from '../../src/engine/scripts.js';
import type { PlaybookStep } from '../../src/engine/playbook.js';
import { parseFacts, factScript, type HostFacts } from '../../src/facts/host.js';
import { portOwnerProblem } from '../../src/engine/verify.js';
import { OPERATIONS } from '../../src/ops/catalogue.js';
import { run } from '../../src/util/exec.js';

const node = { name: 'node-1', address: '192.0.2.21' };

function step(type: string, args: unknown, name = type): PlaybookStep {
  return { name, type: 'op', op: OPERATIONS[type]!, args: OPERATIONS[type]!.args.parse(args) };
}

function noFacts(): HostFacts {
  return parseFacts({ files: [], dirs: [], units: [], guards: [] }, '');
}

describe('planHost', () => {
  it('passes handlers from earlier steps to the service step', () => {
    const steps = [
      step('template', { template: 'a', dest: '/etc/a.conf', notify: ['reload'] }),
      step('service', { name: 'kube-nginx' }),
    ];
    const facts = noFacts();
    facts.files['/etc/a.conf'] = { sha256: 'old', mode: '644' };
    facts.units['kube-nginx'] = { loadState: 'loaded', activeState: 'active', subState: 'running', unitFileState: 'enabled', activeEnterTimestamp: 't', mainPid: 7 };
    const plan = planHost(node, steps, facts, { artifacts: {}, render: () => 'new\n' });
    expect(plan.steps[1]!.plan!.summary).toBe('reload');
  });

  it('asks for the facts every step needs, once each', () => {
    const req = factRequest([
      step('template', { template: 'a', dest: '/etc/a.conf' }),
      step('template', { template: 'b', dest: '/etc/a.conf' }),
      step('directory', { path: ['/opt/x', '/opt/y'] }),
      step('service', { name: 'kube-nginx' }),
      { name: 'verify', type: 'verify', args: { unit: 'kube-nginx', listen: '127.0.0.1:8443', path: '/readyz' } },
    ]);
    expect(req).toEqual({ files: ['/etc/a.conf'], dirs: ['/opt/x', '/opt/y'], units: ['kube-nginx'], guards: [] });
  });
});

describe('withStagedPaths', () => {
  it('points validation at the staged copies of files staged in the same run, and nothing else', () => {
    const cmd = '/opt/k/sbin/kube-nginx -t -q -p /opt/k -c /opt/k/conf/kube-nginx.conf';
    const R = '20261128T180000-abc123';
    expect(withStagedPaths(cmd, ['/opt/k/conf/kube-nginx.conf'], R)).toBe(`/opt/k/sbin/kube-nginx -t -q -p /opt/k -c ${stagedPath('/opt/k/conf/kube-nginx.conf', R)}`);
    expect(withStagedPaths(cmd, ['/opt/k/sbin/kube-nginx', '/opt/k/conf/kube-nginx.conf'], R)).toBe(
      `/opt/k/sbin/kube-nginx.k8s-ha-new.${R} -t -q -p /opt/k -c /opt/k/conf/kube-nginx.conf.k8s-ha-new.${R}`,
    );
    expect(withStagedPaths('/opt/k/sbin/kube-nginx-old -v', ['/opt/k/sbin/kube-nginx'], R)).toBe('/opt/k/sbin/kube-nginx-old -v');
  });
});

describe('facts', () => {
  it('parses the sections of the facts script', () => {
    const req = { files: ['/a', '/b'], dirs: ['/d', '/e'], units: ['kube-nginx', 'kube-lb'], guards: ['true'] };
    const out = [
      '@@os', 'ID=debian', 'VERSION_ID="12"', 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"', 'ARCH=x86_64', 'GLIBC=2.36',
      '@@pkg', 'apt-get',
      '@@tools', 'tar',
      '@@sha256', `${'a'.repeat(64)}  /a`,
      '@@stat', 'regular file|755|/a', 'directory|755|/d',
      // systemctl's own property order, two units in one call; is-enabled only for the unit that has a file.
      '@@units', 'MainPID=129', 'Id=kube-nginx.service', 'LoadState=loaded', 'ActiveState=active', 'SubState=running', 'ActiveEnterTimestamp=Sun 2026-11-22',
      'MainPID=0', 'Id=kube-lb.service', 'LoadState=not-found', 'ActiveState=inactive', 'SubState=dead', 'ActiveEnterTimestamp=',
      '@@enabled kube-nginx', 'enabled',
      '@@enabled kube-lb',
      '@@guard 0', '0',
    ].join('\n');
    const f = parseFacts(req, out);
    expect(f.os).toEqual({ id: 'debian', versionId: '12', prettyName: 'Debian GNU/Linux 12 (bookworm)', arch: 'x86_64', glibc: '2.36' });
    expect(f.packageManager).toBe('apt-get');
    expect(f.tools).toEqual(['tar']);
    expect(f.files).toEqual({ '/a': { sha256: 'a'.repeat(64), mode: '755' }, '/b': null });
    expect(f.dirs).toEqual({ '/d': '755', '/e': null });
    expect(f.units['kube-nginx']).toMatchObject({ loadState: 'loaded', activeState: 'active', subState: 'running', unitFileState: 'enabled', mainPid: 129 });
    expect(f.units['kube-lb']).toMatchObject({ loadState: 'not-found', activeState: 'inactive', unitFileState: '', mainPid: 0 });
    expect(f.guards).toEqual({ true: 0 });
  });

  it('the facts script runs under plain sh and reads a real file', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-facts-'));
    const file = path.join(dir, 'f');
    fs.writeFileSync(file, 'hello', { mode: 0o640 });
    const spaced = path.join(dir, 'a file|with bars');
    fs.writeFileSync(spaced, '');
    const req = { files: [file, path.join(dir, 'missing'), spaced, dir], dirs: [dir, file], units: [], guards: ['exit 3'] };
    const r = await run('sh', ['-c', factScript(req)]);
    const f = parseFacts(req, r.stdout);
    expect(f.files[file]).toEqual({ sha256: createHash('sha256').update('hello').digest('hex'), mode: '640', owner: expect.stringMatching(/^[^:]+:[^:]+$/) });
    expect(f.files[path.join(dir, 'missing')]).toBeNull();
    expect(f.files[spaced]).toEqual({ sha256: createHash('sha256').update('').digest('hex'), mode: '644', owner: expect.stringMatching(/^[^:]+:[^:]+$/) });
    expect(f.files[dir]).toBeNull(); // a directory where a file should be
    expect(f.dirs[dir]).toBe('700');
    expect(f.dirs[file]).toBeNull(); // a file where a directory should be
    expect(f.os.glibc).toMatch(/^2\.\d+$/);
    expect(f.guards['exit 3']).toBe(3);
    fs.rmSync(dir, { recursive: true });
  });

  it("carries the output of scripts asked for, their own @@ lines and blank lines as printed, apart from the sections", async () => {
    // Scripts that print what portOwnerScript and the lock probe print, here without ss, systemd or a lock.
    const req = {
      files: [],
      dirs: [],
      units: [],
      guards: [],
      scripts: [
        { key: 'owner kube-nginx', script: 'echo "@@owner other 4242 python3"\nexit 0' },
        { key: 'owner kube-lb', script: 'echo "@@owner ours"' },
        { key: 'lock', script: 'echo "@@journal"; echo \'{"run":"R"}\'; echo; echo "@@end-journal"' },
        { key: 'silent', script: 'true' },
      ],
    };
    const r = await run('sh', ['-c', factScript(req)]);
    const f = parseFacts(req, r.stdout);
    expect(f.scripts).toEqual({ 'owner kube-nginx': '@@owner other 4242 python3\n', 'owner kube-lb': '@@owner ours\n', lock: '@@journal\n{"run":"R"}\n\n@@end-journal\n', silent: '' });
    expect(portOwnerProblem(f.scripts!['owner kube-nginx']!, 'kube-nginx', '127.0.0.1:8443')).toBe('127.0.0.1:8443 is held by another process (pid 4242, python3), not by kube-nginx: it cannot take the port while that runs');
    expect(portOwnerProblem(f.scripts!['owner kube-lb']!, 'kube-lb', '127.0.0.1:8443')).toBeUndefined();
    // The other sections are read as before around them.
    expect(f.os.arch).not.toBe('unknown');
  });
});
