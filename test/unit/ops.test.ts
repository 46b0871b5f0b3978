/** Operations are pure: {args, facts} -> changes. JSON cases under ops-cases/<op>/, plus the ones that carry content. */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { OPERATIONS } from '../../src/ops/catalogue.js';
import type { Handler, PlanContext } from '../../src/ops/types.js';
import { hostFacts as facts } from '../helpers/facts.js';

const CASES = path.join(import.meta.dirname, 'ops-cases');

function ctx(notified: Handler[] = [], extra: Partial<PlanContext> = {}): PlanContext {
  return { notified: new Set(notified), artifacts: {}, render: (t) => `rendered ${t}\n`, ...extra };
}

describe.each(fs.readdirSync(CASES))('%s', (op) => {
  it.each(fs.readdirSync(path.join(CASES, op)))('%s', (file) => {
    const c = JSON.parse(fs.readFileSync(path.join(CASES, op, file), 'utf8'));
    const operation = OPERATIONS[op]!;
    const args = operation.args.parse(c.args);
    expect(operation.plan(args, facts(c.facts), ctx(c.notified))).toEqual(c.expect);
  });
});

const sha = (s: string) => createHash('sha256').update(s).digest('hex');

describe('template', () => {
  const args = OPERATIONS.template!.args.parse({ template: 'kube-nginx.conf', dest: '/etc/x.conf', validate: 'check /etc/x.conf', notify: ['reload'] });

  it('writes a new file, with its validation and handler', () => {
    const p = OPERATIONS.template!.plan(args, facts({ files: { '/etc/x.conf': null } }), ctx());
    expect(p.summary).toBe('write /etc/x.conf (new)');
    expect(p.notify).toEqual(['reload']);
    expect(p.changes).toMatchObject([{ kind: 'put', path: '/etc/x.conf', mode: '644', sha256: sha('rendered kube-nginx.conf\n'), validate: 'check /etc/x.conf' }]);
  });

  it('does nothing when the checksum and mode match', () => {
    const p = OPERATIONS.template!.plan(args, facts({ files: { '/etc/x.conf': { sha256: sha('rendered kube-nginx.conf\n'), mode: '644' } } }), ctx());
    expect(p).toEqual({ changes: [], notify: [], summary: '/etc/x.conf up to date' });
  });

  it('rewrites a file whose content changed, and says so', () => {
    const p = OPERATIONS.template!.plan(args, facts({ files: { '/etc/x.conf': { sha256: sha('old'), mode: '644' } } }), ctx());
    expect(p.summary).toBe('write /etc/x.conf (content changed)');
  });
});

describe('systemdUnit', () => {
  it('asks for daemon-reload before its own handlers when the unit changes, and nothing when it does not', () => {
    const args = OPERATIONS.systemdUnit!.args.parse({ name: 'kube-nginx.service', template: 'kube-nginx.service', notify: ['restart'] });
    const changed = OPERATIONS.systemdUnit!.plan(args, facts({ files: { '/etc/systemd/system/kube-nginx.service': null } }), ctx());
    expect(changed.notify).toEqual(['daemon-reload', 'restart']);
    const same = OPERATIONS.systemdUnit!.plan(
      args,
      facts({ files: { '/etc/systemd/system/kube-nginx.service': { sha256: sha('rendered kube-nginx.service\n'), mode: '644' } } }),
      ctx(),
    );
    expect(same.changes).toEqual([]);
    expect(same.notify).toEqual([]);
  });
});

describe('file', () => {
  const args = OPERATIONS.file!.args.parse({ source: 'artifact:nginx', dest: '/opt/k/sbin/kube-nginx', mode: '0755', notify: ['restart'] });
  const binary = Buffer.from('ELF...');
  const artifacts = { nginx: { content: binary, sha256: sha('ELF...'), describe: 'nginx 1.22.1' } };

  it('installs the build output when the node has another binary', () => {
    const p = OPERATIONS.file!.plan(args, facts({ files: { '/opt/k/sbin/kube-nginx': { sha256: sha('older'), mode: '755' } } }), ctx([], { artifacts }));
    expect(p.summary).toBe('install nginx 1.22.1 as /opt/k/sbin/kube-nginx (content changed)');
    expect(p.notify).toEqual(['restart']);
  });

  it('fixes only a wrong mode', () => {
    const p = OPERATIONS.file!.plan(args, facts({ files: { '/opt/k/sbin/kube-nginx': { sha256: sha('ELF...'), mode: '644' } } }), ctx([], { artifacts }));
    expect(p.summary).toBe('install nginx 1.22.1 as /opt/k/sbin/kube-nginx (mode 644 -> 755)');
  });

  it('refuses a source that is not a build output', () => {
    expect(OPERATIONS.file!.args.safeParse({ source: '/etc/passwd', dest: '/x' }).success).toBe(false);
  });
});
