/**
 * ProxyCommand runs with /bin/sh -c on this machine: every token put into it is one quoted word,
 * whatever the value (from the inventory or ssh_config), and ssh_config's User is held to the
 * inventory's rule for user names. The commands are run by a real sh here.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { expandCommandTokens } from '../../src/connect/ssh-config.js';
import { TargetResolver } from '../../src/connect/targets.js';
import { ExitCode } from '../../src/errors.js';
import { parseInventory } from '../../src/inventory/load.js';
import { run } from '../../src/util/exec.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});
function scratch(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-proxycmd-'));
  dirs.push(d);
  return d;
}

/** Each argument the command gets, one per line, run as ssh.ts runs a ProxyCommand (`exec` under sh -c) in `cwd`. */
async function argsOf(command: string, cwd: string): Promise<string[]> {
  const r = await run('/bin/sh', ['-c', `cd ${cwd} && exec ${command}`]);
  expect(r.code, r.stderr).toBe(0);
  return r.stdout.split('\n').slice(0, -1);
}

describe('ProxyCommand tokens', () => {
  it('a hostile value in every token is one word, and nothing in it runs', async () => {
    const dir = scratch();
    const hostile = (x: string) => `${x}$(touch X${x}) \`touch Y${x}\`; touch Z${x} 'q"`;
    const cmd = expandCommandTokens("printf '%%s\\n' %h %p %r %n %d %u 100%%", {
      host: hostile('h'),
      port: 22,
      user: hostile('r'),
      name: hostile('n'),
      home: hostile('d'),
      localUser: hostile('u'),
    });
    expect(await argsOf(cmd, dir)).toEqual([hostile('h'), '22', hostile('r'), hostile('n'), hostile('d'), hostile('u'), '100%']);
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  it('plain values are left as they are: the command reads as written', () => {
    const t = { host: 'fd00::1', port: 2222, user: 'ops', name: 'node-1', home: '/home/op', localUser: 'op' };
    expect(expandCommandTokens('ssh -W [%h]:%p -l %r gw', t)).toBe('ssh -W [fd00::1]:2222 -l ops gw');
  });
});

const USER = '/home/op/.ssh/config';
const reader = (config: string) => ({
  read: (f: string) => (f === USER ? config : undefined),
  list: () => [],
  home: '/home/op',
  localUser: 'op',
});
const inventory = (ssh = '{}') =>
  parseInventory(`ssh: ${ssh}
masters: [{ name: m1, address: 192.0.2.11 }]
nodes: [{ name: node-1 }]
lb: { impl: kube-lb }
tls: { insecureSkipVerify: true }
`).inventory!;

describe('values from ssh_config', () => {
  it('a HostName with shell in it reaches ProxyCommand as one quoted word, never run', async () => {
    const dir = scratch();
    const inv = inventory();
    const config = `Host node-1\n  HostName "a$(touch X)b"\n  ProxyCommand printf x%%s. %h %r\n`;
    const t = new TargetResolver(inv, { reader: reader(config), configFiles: [{ file: USER, includeBase: '/home/op/.ssh' }] }).resolve(inv.nodes[0]!).target;
    expect(t.proxyCommand).toBe("printf x%s. 'a$(touch X)b' root");
    const r = await run('/bin/sh', ['-c', `cd ${dir} && exec ${t.proxyCommand}`]);
    expect(r.stdout).toBe('xa$(touch X)b.xroot.');
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  it('a User that is not a user name stops the run at load, naming the file and line (exit 2)', () => {
    const inv = inventory();
    const config = `Host *\n  User "ops$(touch X)"\n  ProxyCommand nc %h %p\n`;
    const resolve = () => new TargetResolver(inv, { reader: reader(config), configFiles: [{ file: USER, includeBase: '/home/op/.ssh' }] }).resolve(inv.nodes[0]!);
    expect(resolve).toThrow(/^\/home\/op\/\.ssh\/config:2: User for node-1: "ops\$\(touch X\)" is not a user name: a login name is letters/);
    try {
      resolve();
    } catch (e) {
      expect((e as { exitCode: number }).exitCode).toBe(ExitCode.usage);
    }
    // The inventory's ssh.user comes first: ssh_config's User is then not used, nor judged.
    const own = inventory('{ user: deploy }');
    expect(new TargetResolver(own, { reader: reader(config), configFiles: [{ file: USER, includeBase: '/home/op/.ssh' }] }).resolve(own.nodes[0]!).target.user).toBe('deploy');
  });

  it("a bastion's User is held to the same rule", () => {
    const inv = inventory('{ proxyJump: gw }');
    const config = `Host gw\n  User "a b"\n`;
    expect(() => new TargetResolver(inv, { reader: reader(config), configFiles: [{ file: USER, includeBase: '/home/op/.ssh' }] }).resolve(inv.nodes[0]!)).toThrow(
      /config:2: User for bastion gw: "a b" is not a user name/,
    );
  });
});
