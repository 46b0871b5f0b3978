import { describe, expect, it } from 'vitest';
import { TargetResolver, resolveTarget } from '../../src/connect/targets.js';
import { lookupSshConfig, patternListMatches, tokenize, type SshConfigReader } from '../../src/connect/ssh-config.js';
import { parseInventory } from '../../src/inventory/load.js';

const inventory = (ssh: string, node = '{ name: node-1, address: 192.0.2.21 }') =>
  parseInventory(`
ssh: ${ssh}
masters: [{ name: m1, address: 192.0.2.11 }]
nodes: [${node}]
nginx: { version: 1.22.1, sources: [http://x.invalid/n.tar.gz], sha256: ${'a'.repeat(64)} }
`).inventory!;

/** A home directory and /etc/ssh as plain data. */
function files(tree: Record<string, string>): SshConfigReader {
  return {
    read: (f) => tree[f],
    list: (d) => Object.keys(tree).filter((f) => f.startsWith(`${d}/`) && !f.slice(d.length + 1).includes('/')).map((f) => f.slice(d.length + 1)),
    home: '/home/op',
    localUser: 'op',
  };
}

const USER = '/home/op/.ssh/config';
const SYSTEM = '/etc/ssh/ssh_config';
const resolver = (inv: ReturnType<typeof inventory>, tree: Record<string, string>, o: { acceptNewHostKeys?: boolean } = {}) => new TargetResolver(inv, { reader: files(tree), ...o });

describe('ssh_config, read the way OpenSSH reads it', () => {
  it('splits Key value, Key=value and "quoted args", and skips comments', () => {
    expect(tokenize('  IdentityFile "/keys/my key"  ')).toEqual(['IdentityFile', '/keys/my key']);
    expect(tokenize('Port=2222')).toEqual(['Port', '2222']);
    expect(tokenize('Port = 2222')).toEqual(['Port', '2222']);
    expect(tokenize('ProxyCommand ssh -W %h:%p gw # comment')).toEqual(['ProxyCommand', 'ssh', '-W', '%h:%p', 'gw']);
    expect(tokenize('# Host x')).toBeUndefined();
  });

  it('matches Host patterns without regard to case, with ? and *, and a ! pattern excludes', () => {
    expect(patternListMatches(['NODE-*'], ['node-1'])).toBe(true);
    expect(patternListMatches(['node-?'], ['node-12'])).toBe(false);
    expect(patternListMatches(['*', '!node-1'], ['node-1', '192.0.2.21'])).toBe(false);
    expect(patternListMatches(['!node-1'], ['node-2'])).toBe(false); // a negation alone never matches
    expect(patternListMatches(['192.0.2.*'], ['node-1', '192.0.2.21'])).toBe(true);
  });

  it("takes RevokedHostKeys with its tokens expanded, naming the line it came from; none is no file", () => {
    const inv = inventory('{}');
    const t = resolver(inv, { [USER]: 'Host node-*\n  RevokedHostKeys ~/.ssh/revoked-%n\n' }).resolve(inv.nodes[0]!).target;
    expect(t.revokedHostKeys).toEqual({ file: '/home/op/.ssh/revoked-node-1', from: `RevokedHostKeys at ${USER}:2` });
    expect(resolver(inv, { [USER]: 'RevokedHostKeys none\n' }).resolve(inv.nodes[0]!).target.revokedHostKeys).toBeUndefined();
  });

  it("stops at a host key setting inside a Match block it cannot evaluate, rather than go on without it", () => {
    const inv = inventory('{}');
    const tree = { [USER]: 'Host node-1\n  User admin\nMatch exec "test -f /etc/prod"\n  RevokedHostKeys /etc/ssh/revoked\n  User other\n' };
    expect(() => resolver(inv, tree).resolve(inv.nodes[0]!)).toThrow(
      `${USER}:4: RevokedHostKeys is in ${USER}:3: "Match exec test -f /etc/prod", which k8s-ha cannot evaluate: whether it applies to node-1 decides which host keys are trusted`,
    );
    // Other settings there are only reported, as before; and a Host line after it ends the block.
    const harmless = { [USER]: 'Match exec "test -f /etc/prod"\n  User other\nHost *\n  StrictHostKeyChecking yes\n' };
    const r = resolver(inv, harmless).resolve(inv.nodes[0]!);
    expect(r.target.user).toBe('root');
    expect(r.warnings.join('\n')).toMatch(/"Match exec test -f \/etc\/prod" is ignored/);
  });

  it('keeps the first value obtained: a later Host * does not override the node block, an earlier one does', () => {
    const tree = {
      [USER]: 'Host node-1\n  User admin\n  Port 2201\nHost *\n  User nobody\n  Port 22\n  ConnectTimeout 3\n',
    };
    const inv = inventory('{}');
    const t = resolver(inv, tree).resolve(inv.nodes[0]!).target;
    expect([t.user, t.port, t.connectTimeoutMs]).toEqual(['admin', 2201, 3000]);

    const first = { [USER]: 'Host *\n  User everyone\nHost node-1\n  User admin\n' };
    expect(resolver(inv, first).resolve(inv.nodes[0]!).target.user).toBe('everyone');
  });

  it('reads ~/.ssh/config before /etc/ssh/ssh_config, and the system file fills only what is left', () => {
    const tree = { [USER]: 'Host node-1\n  Port 2201\n', [SYSTEM]: 'Host *\n  Port 22\n  StrictHostKeyChecking accept-new\n' };
    const inv = inventory('{}');
    const t = resolver(inv, tree).resolve(inv.nodes[0]!).target;
    expect([t.port, t.strictHostKeyChecking]).toEqual([2201, 'accept-new']);
  });

  it('follows Include: relative to ~/.ssh, globs in name order, and inside a Host block only for that host', () => {
    const tree = {
      [USER]: 'Include conf.d/*.conf\nHost other\n  Include other.conf\n',
      '/home/op/.ssh/conf.d/20-late.conf': 'Host node-1\n  User late\n  Port 2203\n',
      '/home/op/.ssh/conf.d/10-early.conf': 'Host node-*\n  User early\n',
      '/home/op/.ssh/conf.d/notes.txt': 'Host *\n  Port 1\n',
      '/home/op/.ssh/other.conf': 'Port 9999\n',
    };
    const inv = inventory('{}');
    const t = resolver(inv, tree).resolve(inv.nodes[0]!).target;
    expect([t.user, t.port]).toEqual(['early', 2203]);
  });

  it('reports a Match block it does not evaluate once, and never applies it; Match host / user are evaluated', () => {
    const tree = {
      [USER]: 'Match exec "test -f /tmp/x"\n  User fromexec\nMatch host 192.0.2.* user root\n  Port 2222\nMatch originalhost node-1\n  ConnectTimeout 7\n',
    };
    const inv = parseInventory(`
masters: [{ name: m1, address: 192.0.2.11 }]
nodes: [{ name: node-1, address: 192.0.2.21 }, { name: node-2, address: 192.0.2.22 }]
lb: { impl: kube-lb }
tls: { insecureSkipVerify: true }
`).inventory!;
    const r = resolver(inv, tree);
    const a = r.resolve(inv.nodes[0]!);
    const b = r.resolve(inv.nodes[1]!);
    expect([a.target.user, a.target.port, a.target.connectTimeoutMs]).toEqual(['root', 2222, 7000]);
    expect(b.target.connectTimeoutMs).toBe(10_000);
    expect(a.warnings).toEqual([
      `${USER}:1: "Match exec test -f /tmp/x" is ignored: k8s-ha does not evaluate "exec" (it never runs commands from ssh_config); the block's settings are not applied`,
    ]);
    expect(b.warnings).toEqual([]);
  });

  it('collects every IdentityFile in order; OpenSSH default keys only when none is named', () => {
    const inv = inventory('{}');
    const named = resolver(inv, { [USER]: 'Host node-1\n  IdentityFile ~/.ssh/%r-key\nHost *\n  IdentityFile /keys/all\n' }).resolve(inv.nodes[0]!).target;
    expect(named.identityFiles).toEqual(['/home/op/.ssh/root-key', '/keys/all']);
    const none = resolver(inv, {}).resolve(inv.nodes[0]!).target;
    expect(none.identityFiles).toEqual(['/home/op/.ssh/id_rsa', '/home/op/.ssh/id_ecdsa', '/home/op/.ssh/id_ed25519']);
    expect(none.knownHostsFile).toEqual(['/home/op/.ssh/known_hosts', '/home/op/.ssh/known_hosts2']);
    expect(none.globalKnownHostsFiles).toEqual(['/etc/ssh/ssh_known_hosts', '/etc/ssh/ssh_known_hosts2']);
  });

  it('IdentityAgent none means no agent; SSH_AUTH_SOCK (or unset) the environment\'s; a path is that socket', () => {
    const inv = inventory('{}');
    const agentOf = (line: string) => resolver(inv, { [USER]: line }).resolve(inv.nodes[0]!).target.identityAgent;
    expect(agentOf('IdentityAgent none\n')).toBeNull();
    expect(agentOf('IdentityAgent SSH_AUTH_SOCK\n')).toBeUndefined();
    expect(agentOf('')).toBeUndefined();
    expect(agentOf('IdentityAgent ~/.ssh/agent-%r.sock\n')).toBe('/home/op/.ssh/agent-root.sock');
  });

  it('lets the node override the inventory, and the inventory override ssh_config', () => {
    const tree = { [USER]: 'Host node-*\n  User admin\n  Port 2200\n  UserKnownHostsFile /kh/a /kh/b\n  GlobalKnownHostsFile /kh/global\n  StrictHostKeyChecking no\n' };
    const inv = inventory('{ user: ops, port: 22, identityFile: /keys/root, strictHostKeyChecking: "yes" }', '{ name: node-1, address: 192.0.2.21, ssh: { user: deploy } }');
    const t = resolver(inv, tree).resolve(inv.nodes[0]!).target;
    expect(t).toMatchObject({ user: 'deploy', port: 22, identityFile: '/keys/root', strictHostKeyChecking: 'yes', knownHostsFile: ['/kh/a', '/kh/b'], globalKnownHostsFiles: ['/kh/global'] });
  });

  it('defaults like OpenSSH, except the user: root (what installing a system service needs)', () => {
    const inv = inventory('{}');
    const t = resolveTarget(inv, inv.nodes[0]!, { sshConfig: null, reader: files({}) });
    expect(t).toMatchObject({ address: '192.0.2.21', addressFrom: 'inventory', user: 'root', port: 22, strictHostKeyChecking: 'yes', connectTimeoutMs: 10_000 });
    expect(t.jump).toBeUndefined();
  });

  it('--accept-new-host-keys relaxes only strict checking, never an explicit "no"; "ask" is "yes"', () => {
    const strict = inventory('{}');
    expect(resolver(strict, {}, { acceptNewHostKeys: true }).resolve(strict.nodes[0]!).target.strictHostKeyChecking).toBe('accept-new');
    const off = inventory('{ strictHostKeyChecking: "no" }');
    expect(resolver(off, {}, { acceptNewHostKeys: true }).resolve(off.nodes[0]!).target.strictHostKeyChecking).toBe('no');
    const ask = inventory('{}');
    expect(resolver(ask, { [USER]: 'StrictHostKeyChecking ask\n' }).resolve(ask.nodes[0]!).target.strictHostKeyChecking).toBe('yes');
  });
});

describe('the address dialed', () => {
  it('is the inventory address; a different HostName is a warning naming the file and line', () => {
    const inv = inventory('{}');
    const r = resolver(inv, { [USER]: '\nHost node-1\n  HostName 192.0.2.22\n' }).resolve(inv.nodes[0]!);
    expect(r.target.address).toBe('192.0.2.21');
    expect(r.warnings).toEqual([
      `node-1: ${USER}:3 sets HostName 192.0.2.22, but the inventory's address 192.0.2.21 is dialed (the inventory comes first); remove one of them`,
    ]);
  });

  it("is ssh_config's HostName (tokens expanded) when the inventory gives no address, else the name", () => {
    const inv = inventory('{}', '{ name: node-1 }');
    const r = resolver(inv, { [USER]: 'Host node-*\n  HostName %h.dc1.example\n' }).resolve(inv.nodes[0]!);
    expect([r.target.address, r.target.addressFrom, r.warnings]).toEqual(['node-1.dc1.example', `HostName at ${USER}:2`, []]);
    const bare = resolver(inv, {}).resolve(inv.nodes[0]!).target;
    expect([bare.address, bare.addressFrom]).toEqual(['node-1', 'name']);
  });
});

describe('bastions', () => {
  it('come from ssh.proxyJump: each hop resolved like a host, the last one in front of the node', () => {
    const tree = { [USER]: 'Host gw2\n  HostName 198.51.100.2\n  Port 2222\n' };
    const inv = inventory('{ proxyJump: "ops@198.51.100.1, gw2", identityFile: /keys/k, knownHostsFile: /kh/known }');
    const t = resolver(inv, tree).resolve(inv.nodes[0]!).target;
    expect(t.jump).toMatchObject({ name: 'bastion op@gw2', address: '198.51.100.2', port: 2222, user: 'op', bastion: true, identityFile: '/keys/k', knownHostsFile: ['/kh/known'] });
    expect(t.jump!.jump).toMatchObject({ name: 'bastion ops@198.51.100.1', address: '198.51.100.1', port: 22, user: 'ops' });
    expect(t.jump!.jump!.jump).toBeUndefined();
  });

  it('come from ssh_config ProxyJump, whose own Host block is used for the bastion; the node may say none', () => {
    const tree = { [USER]: 'Host node-*\n  ProxyJump bastion\nHost bastion\n  HostName 198.51.100.9\n  User jump\n' };
    const inv = inventory('{}');
    const t = resolver(inv, tree).resolve(inv.nodes[0]!).target;
    expect(t.jump).toMatchObject({ address: '198.51.100.9', user: 'jump', port: 22 });
    const direct = inventory('{ proxyJump: none }');
    expect(resolver(direct, tree).resolve(direct.nodes[0]!).target.jump).toBeUndefined();
  });

  it('ProxyCommand, with its tokens expanded, when ssh_config gives it before any ProxyJump', () => {
    const tree = { [USER]: 'Host node-1\n  ProxyCommand ssh -W %h:%p gw\n  ProxyJump other\n' };
    const inv = inventory('{}');
    const t = resolver(inv, tree).resolve(inv.nodes[0]!).target;
    expect([t.proxyCommand, t.jump]).toEqual(['ssh -W 192.0.2.21:22 gw', undefined]);
  });

  it('a bastion whose ProxyJump names itself is an error, not an endless loop', () => {
    const tree = { [USER]: 'Host gw\n  ProxyJump gw\n' };
    const inv = inventory('{ proxyJump: gw }');
    expect(() => resolver(inv, tree).resolve(inv.nodes[0]!)).toThrow(/more than 8 bastions in a row/);
  });
});

describe('lookupSshConfig', () => {
  it('stops following Include past 16 levels and says so', () => {
    const tree = { '/loop': 'Include /loop\n' };
    const r = lookupSshConfig([{ file: '/loop', includeBase: '/' }], { name: 'x' }, files(tree));
    expect(r.notes).toEqual(['/loop:1: Include nested more than 16 deep: not followed']);
  });
});
