import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ExitCode } from '../../src/errors.js';
import { formatDiagnostic, type InventoryError } from '../../src/inventory/diagnostics.js';
import { parseInventory } from '../../src/inventory/load.js';
import { defaultPlaybookPath, loadPlaybook, parsePlaybook, playbookSteps, substituteArgs } from '../../src/engine/playbook.js';
import { run } from '../../src/util/exec.js';
import { quote } from '../../src/util/quote.js';
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
      'pb.yaml:8:17: steps[2].frobnicate: unknown step type; use one of nginxBuild, kubeLbBuild, verify, directory, file, template, systemdUnit, service, command, packages, image, staticPod',
      'pb.yaml:11:5: steps[4]: needs a step type: one of nginxBuild, kubeLbBuild, verify, directory, file, template, systemdUnit, service, command, packages, image, staticPod',
    ]);
    // Once every step has a known type, the arguments are checked.
    const text2 = text.replace('  - name: c\n    frobnicate: {}\n', '').replace('  - name: e\n', '');
    expect(errors(text2)).toEqual([
      'pb.yaml:4:24: steps[0].directory.path: must be an absolute path, like /etc/k8s-ha/file.conf',
      'pb.yaml:6:44: steps[1].template.dest: unknown variable {{ lb.nothing }}; known: lb.*, nginx.*, kubeLb.*, vip.* (with vip:), node.name, node.address, container.runtime, container.image, container.repository, container.binary, container.snapshotter',
      'pb.yaml:6:44: steps[1].template.dest: must be an absolute path, like /etc/k8s-ha/file.conf',
      'pb.yaml:6:27: steps[1].template.template: no template named nope.conf; known: kube-nginx.conf, kube-nginx.service, kube-nginx-container.conf, kube-nginx-container.service, kube-nginx.pod.yaml, kube-lb.yaml, kube-lb.service, kube-haproxy.cfg, kube-haproxy.service, kube-haproxy-ca.crt, kube-haproxy-client.pem, kube-lb-client.pem',
      'pb.yaml:8:14: steps[2].service: unknown key colour',
    ]);
  });

  it('a command step must have a guard, so that it is idempotent', () => {
    expect(errors('name: x\nsteps:\n  - name: c\n    command: { run: "touch /x" }\n')).toEqual(['pb.yaml:4:14: steps[0].command.unless: is required']);
  });
});

describe('playbook values that reach a shell', () => {
  it('a dest with shell in it is refused at load, with file:line and exit 2', async () => {
    const text = 'name: custom\nsteps:\n  - name: conf\n    template: { template: kube-nginx.conf, dest: "/etc/app/$(reboot).conf" }\n';
    expect(errors(text)).toEqual([
      'pb.yaml:4:50: steps[0].template.dest: holds "$": a path on a node may hold only letters, digits and . _ + @ = : , / - (nothing a shell or a config file reads specially), like /etc/k8s-ha/file.conf',
    ]);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-pb-'));
    try {
      fs.writeFileSync(path.join(dir, 'pb.yaml'), text);
      const e = await loadPlaybook(path.join(dir, 'pb.yaml'), inv, templates).then(() => undefined, (err: unknown) => err as InventoryError);
      expect(e?.exitCode).toBe(ExitCode.usage);
      expect(e?.message).toContain(`${dir}/pb.yaml:4:50: steps[0].template.dest: holds "$"`);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('directories, pid files and ".." are held to the same path rule', () => {
    expect(errors('name: x\nsteps:\n  - name: d\n    directory: { path: ["/srv/ok", "/srv/a b"] }\n')).toEqual([
      expect.stringMatching(/^pb\.yaml:4:36: steps\[0\]\.directory\.path\[1\]: holds " "/),
    ]);
    expect(errors('name: x\nsteps:\n  - name: s\n    service: { name: x, binaryUpgrade: { pidFile: "/run/`id`.pid" } }\n')[0]).toMatch(/steps\[0\]\.service\.binaryUpgrade\.pidFile: holds "`"/);
    expect(errors('name: x\nsteps:\n  - name: d\n    directory: { path: /srv/../etc }\n')[0]).toMatch(/steps\[0\]\.directory\.path: must not hold a "\.\." segment/);
  });

  it("verify's unit, its other units and its HTTP path are held to their rules at load", () => {
    const verify = (args: string) => errors(`name: x\nsteps:\n  - name: v\n    verify: { listen: "127.0.0.1:8443", ${args} }\n`);
    expect(verify('unit: kube-nginx, also: [keepalived], path: /readyz?verbose')).toEqual([]);
    expect(verify('unit: "kube-nginx; reboot"')[0]).toMatch(/^pb\.yaml:4:\d+: steps\[0\]\.verify\.unit: must be a unit name like kube-nginx/);
    // An option to systemctl, not a unit.
    expect(verify('unit: "-H", also: [ok]')[0]).toMatch(/steps\[0\]\.verify\.unit: must be a unit name/);
    expect(verify('unit: x, also: ["$(id)"]')[0]).toMatch(/steps\[0\]\.verify\.also\[0\]: must be a unit name/);
    // Nothing that could end the request line or add a header.
    expect(verify('unit: x, path: "/readyz HTTP/1.1\\r\\nX-Evil: 1"')[0]).toMatch(/steps\[0\]\.verify\.path: must be an HTTP path such as \/readyz/);
  });

  it('{{ }} in a shell command (run, unless, validate) is one quoted word, whatever the value', async () => {
    const hostile = `x'; touch X; echo "$(touch Y)`;
    const vars = { node: { name: hostile }, lb: { prefix: '/opt/k8s/kube-nginx' } };
    const errs: { path: (string | number)[]; message: string }[] = [];
    const args = substituteArgs('command', { run: 'printf %s {{ node.name }}', unless: 'test -e {{ lb.prefix }}/x', notify: ['{{ node.name }}'] }, vars, [], errs) as Record<string, unknown>;
    expect(errs).toEqual([]);
    expect(args.run).toBe(`printf %s ${quote(hostile)}`);
    // A value with nothing a shell reads specially stays as it is.
    expect(args.unless).toBe('test -e /opt/k8s/kube-nginx/x');
    // Elsewhere (not a shell command) the value goes in as it is: the argument's own schema judges it.
    expect(args.notify).toEqual([hostile]);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-pb-'));
    try {
      const r = await run('/bin/sh', ['-c', `cd ${dir} && ${args.run as string}`]);
      expect(r.stdout).toBe(hostile);
      expect(fs.readdirSync(dir)).toEqual([]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('{{ }} written inside quotes in a shell command is an error: the value is quoted for the shell already', () => {
    expect(errors('name: x\nsteps:\n  - name: c\n    command: { run: "echo \\"{{ node.name }}\\"", unless: "false" }\n')).toEqual([
      'pb.yaml:4:21: steps[0].command.run: {{ node.name }} is inside quotes in a shell command: write it unquoted, k8s-ha quotes its value for the shell',
    ]);
    expect(errors("name: x\nsteps:\n  - name: c\n    command: { run: \"echo '{{ node.name }}'\", unless: \"false\" }\n")[0]).toMatch(/is inside quotes/);
    // In quotes that closed before it: fine.
    expect(errors("name: x\nsteps:\n  - name: c\n    command: { run: \"echo 'a' {{ node.name }}\", unless: \"false\" }\n")).toEqual([]);
  });
});
