import { describe, expect, it } from 'vitest';
import { parseInventory } from '../../src/inventory/load.js';
import { closestKeys, editDistance, formatDiagnostic, unknownKeyMessage } from '../../src/inventory/diagnostics.js';
import { inventorySchema, sshSettings } from '../../src/inventory/schema.js';

const BASE = `masters: [{ name: m1, address: 10.0.0.11 }]
nodes: [{ name: n1, address: 10.0.0.21 }]
tls: { caFile: ca.crt }
`;

function lines(extra: string, base = BASE): string[] {
  return parseInventory(base + extra).diagnostics.map((d) => formatDiagnostic('inv.yaml', d));
}

/** zod's own phrasing, which must never reach a reader of the inventory's errors. */
const ZOD_WORDING = /Invalid option|Invalid input|Invalid string|Invalid number|Invalid [A-Z]|expected .* received|Too small|Too big|Unrecognized key|must match pattern|>=|<=/;

describe('unknown keys: did you mean', () => {
  it('suggests the allowed key a typo, a case or a separator away', () => {
    expect(lines('lb: { impl: kube-lb, listne: 127.0.0.1:8443 }\nssh: { Port: 22, identity_file: k, usr: root }\nvip: { address: 10.0.0.9, hosts: [m1, n1], routerID: 3 }\n')).toEqual([
      'inv.yaml:5:8: ssh.Port: unknown key; did you mean port?',
      'inv.yaml:5:18: ssh.identity_file: unknown key; did you mean identityFile?',
      'inv.yaml:5:36: ssh.usr: unknown key; did you mean user?',
      'inv.yaml:4:22: lb.listne: unknown key; did you mean listen?',
      'inv.yaml:6:44: vip.routerID: unknown key; did you mean routerId?',
    ]);
  });

  it('knows the names other tools use, where the key they mean is allowed', () => {
    expect(lines('', BASE.replace('address: 10.0.0.21', 'hostname: 10.0.0.21'))).toEqual(['inv.yaml:2:21: nodes[0].hostname: unknown key; did you mean address?']);
    expect(lines('workers: []\n')).toEqual(['inv.yaml:4:1: workers: unknown key; did you mean nodes?']);
  });

  it('lists the keys allowed there when none is close, taken from the schema', () => {
    const top = lines('frobnicate: 1\n');
    expect(top).toEqual([
      'inv.yaml:4:1: frobnicate: unknown key; the keys here are ssh, masters, nodes, lb, nginx, kubeLb, tls, build, kubeconfigs, vip, cluster and timeouts',
    ]);
    expect(top[0]).toContain(Object.keys(inventorySchema.shape).slice(-1)[0]);
    expect(lines('ssh: { frobnicate: 1 }\n')).toEqual([`inv.yaml:4:8: ssh.frobnicate: unknown key; the keys here are ${Object.keys(sshSettings.shape).slice(0, -1).join(', ')} and proxyJump`]);
    // Inside lists and optional sections too.
    expect(lines('kubeconfigs: [{ path: /etc/k.conf, servce: kubelet }]\nkubeLb: { check: { intervall: 1s } }\n')).toEqual([
      'inv.yaml:5:20: kubeLb.check.intervall: unknown key; did you mean interval?',
      'inv.yaml:4:36: kubeconfigs[0].servce: unknown key; did you mean service?',
    ]);
  });

  it('keeps a long list short, and a short key needs a closer match', () => {
    const many = Array.from({ length: 15 }, (_, i) => `key${String.fromCharCode(97 + i)}long`);
    expect(unknownKeyMessage('zzz', many)).toBe(`unknown key; the keys here are ${many.slice(0, 12).join(', ')} and 3 more`);
    expect(unknownKeyMessage('x')).toBe('unknown key');
    expect(closestKeys('xy', ['lb', 'vip'])).toEqual([]);
    expect(closestKeys('lbb', ['lb', 'vip'])).toEqual(['lb']);
    expect(closestKeys('timout', ['timeout', 'timeouts'])).toEqual(['timeout']);
    expect(closestKeys('prot', ['port', 'user'])).toEqual(['port']);
  });

  it('counts a swap of neighbours as one edit, and stops counting past its limit', () => {
    expect(editDistance('listne', 'listen')).toBe(1);
    expect(editDistance('kitten', 'sitting')).toBe(3);
    expect(editDistance('a'.repeat(10_000), 'listen', 2)).toBe(3);
  });
});

describe("zod's messages in the project's words", () => {
  const mistakes = [
    'ssh: { strictHostKeyChecking: maybe, port: "22x", connectTimeout: 30m1h }',
    'lb: { impl: kube-lb, balance: fastest, maxFails: "3", failTimeout: "1.5h", proxyTimeout: 30 }',
    'kubeLb: { check: { rise: 0, fall: 1.5 } }',
    'build: { link: 5, installToolchain: yes, architectures: [], host: [5], store: "" }',
    'kubeconfigs: [{ path: /etc/k.conf, service: "kube let" }, 5]',
    'timeouts: { command: "", lock: -5s, facts: soon }',
    'nginx: { version: 1.22, sources: [], sha256: 5 }',
    'vip: { address: 10.0.0.9, hosts: [m1, n1], routerId: "x", port: true }',
  ].join('\n');

  it('say what the value must be and what was found, with no zod wording', () => {
    const out = lines(mistakes + '\n');
    expect(out.length).toBeGreaterThanOrEqual(20);
    for (const l of out) expect(l, l).not.toMatch(ZOD_WORDING);
    for (const l of out) expect(l, l).toMatch(/^inv\.yaml:\d+:\d+: [\w.[\]]+: \S/);
    expect(out).toEqual(
      expect.arrayContaining([
        'inv.yaml:4:31: ssh.strictHostKeyChecking: must be one of yes, accept-new or no (got "maybe")',
        'inv.yaml:4:44: ssh.port: must be a port number',
        'inv.yaml:4:67: ssh.connectTimeout: must give each unit at most once, from hours down to milliseconds: write 1h30m',
        'inv.yaml:5:31: lb.balance: must be one of least_conn, round_robin or hash (got "fastest")',
        'inv.yaml:5:50: lb.maxFails: must be a number (got "3")',
        'inv.yaml:5:68: lb.failTimeout: takes whole numbers of each unit: write 1h30m',
        'inv.yaml:5:90: lb.proxyTimeout: must be a duration with its unit, like 500ms, 30s, 10m or 1h30m',
        'inv.yaml:6:26: kubeLb.check.rise: must be from 1 to 100',
        'inv.yaml:6:35: kubeLb.check.fall: must be a whole number',
        'inv.yaml:7:16: build.link: must be one of static or native (got 5)',
        'inv.yaml:7:37: build.installToolchain: must be true or false (got "yes")',
        'inv.yaml:7:57: build.architectures: needs at least one item',
        'inv.yaml:7:68: build.host[0]: must be a string (got a number: put the value in quotes)',
        'inv.yaml:7:79: build.store: must not be empty',
        'inv.yaml:8:45: kubeconfigs[0].service: must be a systemd service name such as kubelet (letters, digits, "@", ".", "_" or "-")',
        'inv.yaml:8:59: kubeconfigs[1]: must be a mapping of keys to values (got a number)',
        'inv.yaml:9:22: timeouts.command: is empty: write a duration like 500ms, 30s, 10m or 1h30m',
        'inv.yaml:9:32: timeouts.lock: cannot be negative: write a duration like 500ms, 30s, 10m or 1h30m',
        'inv.yaml:9:44: timeouts.facts: must be a duration like 500ms, 30s, 10m or 1h30m',
        'inv.yaml:10:19: nginx.version: must be a string (got a number: put the value in quotes)',
        'inv.yaml:10:34: nginx.sources: needs at least one URL',
        'inv.yaml:10:46: nginx.sha256: must be a string (got a number: put the value in quotes)',
        'inv.yaml:11:54: vip.routerId: must be a number from 1 to 255',
        'inv.yaml:11:65: vip.port: must be a port number',
      ]),
    );
  });

  it('a value of the wrong kind names both kinds', () => {
    expect(lines('ssh: 5\nkubeconfigs: { path: /etc/k.conf }\nbuild: { host: 5 }\n')).toEqual([
      'inv.yaml:4:6: ssh: must be a mapping of keys to values (got a number)',
      'inv.yaml:6:16: build.host: must be a string or a list (got a number)',
      'inv.yaml:5:14: kubeconfigs: must be a list (got a mapping)',
    ]);
  });

  it("a field's own message still wins, and a missing value is still required", () => {
    expect(lines('lb: { impl: fastest }\ncluster: {}\n')).toEqual([
      'inv.yaml:4:13: lb.impl: must be one of nginx, kube-lb, haproxy, container, static-pod, auto',
      'inv.yaml:5:10: cluster.kubeconfig: is required',
    ]);
  });

  it('compound durations are accepted wherever a duration is', () => {
    expect(lines('lb: { impl: kube-lb, proxyTimeout: 1h30m, failTimeout: 2m30s, connectTimeout: 1s500ms }\ntimeouts: { build: 2h0m5s }\n')).toEqual([]);
    expect(lines('lb: { impl: kube-lb, connectTimeout: 1m15s1ms }\n')).toEqual(['inv.yaml:4:38: lb.connectTimeout: must be from 100ms to 75s']);
  });
});
