import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { formatDiagnostic } from '../../src/inventory/diagnostics.js';
import { parseInventory } from '../../src/inventory/load.js';
import { defaultPlaybookPath, parsePlaybook, playbookSteps } from '../../src/engine/playbook.js';
import { TEMPLATES } from '../../src/lb/templates.js';

const inv = parseInventory(`
masters: [{ name: m1, address: 192.0.2.11 }]
nodes: [{ name: n1, address: 192.0.2.21 }]
lb: { prefix: /srv/lb }
nginx: { version: 1.22.1, sources: [http://mirror.invalid/nginx-1.22.1.tar.gz], sha256: ${'a'.repeat(64)} }
`).inventory!;
const templates = Object.keys(TEMPLATES);

function errors(text: string): string[] {
  return parsePlaybook(text, inv, templates).diagnostics.map((d) => formatDiagnostic('pb.yaml', d));
}

describe('the kube-nginx playbook', () => {
  it('loads, and declares what deploy does in order', () => {
    const parsed = parsePlaybook(fs.readFileSync(defaultPlaybookPath(), 'utf8'), inv, templates);
    expect(parsed.diagnostics).toEqual([]);
    const steps = playbookSteps(parsed.raw!, inv, inv.nodes[0]!);
    expect(steps.map((s) => [s.name, s.type === 'op' ? s.op.type : s.type])).toEqual([
      ['build nginx', 'nginxBuild'],
      ['directories', 'directory'],
      ['binary', 'file'],
      ['user', 'command'],
      ['config', 'template'],
      ['unit', 'systemdUnit'],
      ['service', 'service'],
      ['verify', 'verify'],
    ]);
    // Variables come from the inventory.
    expect(steps[2]!.args).toMatchObject({ dest: '/srv/lb/sbin/kube-nginx', validate: '/srv/lb/sbin/kube-nginx -v' });
    // The workers' user exists before kube-nginx -t looks it up.
    expect(steps[3]!.args).toMatchObject({ unless: 'id -u kube-nginx', stage: true });
    expect(steps[7]!.args).toEqual({ unit: 'kube-nginx', listen: '127.0.0.1:8443', path: '/readyz' });
  });
});

describe('playbook errors', () => {
  it('names the file, line, column and path of each', () => {
    const text = `name: broken
steps:
  - name: a
    directory: { path: relative/dir }
  - name: b
    template: { template: nope.conf, dest: "{{ lb.nothing }}/x" }
  - name: c
    frobnicate: {}
  - name: d
    service: { name: kube-nginx, colour: blue }
  - name: e
`;
    expect(errors(text)).toEqual([
      'pb.yaml:8:17: steps[2].frobnicate: unknown step type; use one of nginxBuild, kubeLbBuild, verify, directory, file, template, systemdUnit, service, command, packages',
      'pb.yaml:11:5: steps[4]: needs a step type: one of nginxBuild, kubeLbBuild, verify, directory, file, template, systemdUnit, service, command, packages',
    ]);
    // Once every step has a known type, the arguments are checked.
    const text2 = text.replace('  - name: c\n    frobnicate: {}\n', '').replace('  - name: e\n', '');
    expect(errors(text2)).toEqual([
      'pb.yaml:4:24: steps[0].directory.path: must be an absolute path',
      'pb.yaml:6:44: steps[1].template.dest: unknown variable {{ lb.nothing }}; known: lb.*, nginx.*, kubeLb.*, vip.* (with vip:), node.name, node.address',
      'pb.yaml:6:44: steps[1].template.dest: must be an absolute path',
      'pb.yaml:6:27: steps[1].template.template: no template named nope.conf; known: kube-nginx.conf, kube-nginx.service, kube-lb.yaml, kube-lb.service, kube-haproxy.cfg, kube-haproxy.service, kube-haproxy-ca.crt, kube-haproxy-client.pem, kube-lb-client.pem',
      'pb.yaml:8:14: steps[2].service: unknown key colour',
    ]);
  });

  it('a command step must have a guard, so that it is idempotent', () => {
    expect(errors('name: x\nsteps:\n  - name: c\n    command: { run: "touch /x" }\n')).toEqual(['pb.yaml:4:14: steps[0].command.unless: is required']);
  });
});
