/**
 * SSH as operators use it, against the lab's real bastion (systemd + sshd): the nodes are cut off
 * from this machine for the whole file, so every byte of deploy, status and a roll goes through
 * the bastion, with strict host key checking on every hop. The bastion's own sshd journal counts
 * the logins. Then ssh_config's HostName, a host certificate from the lab's SSH CA, and a
 * passphrase-protected default key with and without ssh-agent.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SshConnection } from '../../src/connect/ssh.js';
import { setNodeIsolation } from '../../src/lab/isolation.js';
import { BIN, k8sha } from '../helpers/cli.js';
import { deployJson } from '../helpers/deploy.js';
import { inContainer, lab, nodeTarget, scratchDir } from '../helpers/lab.js';

/** A copy of the lab's bastion inventory with a change, in this run's scratch folder. */
function bastionVariant(name: string, change: (inv: Record<string, any>) => void): string {
  const inv = YAML.parse(fs.readFileSync(lab().bastionInventory, 'utf8'));
  change(inv);
  const file = path.join(scratchDir(), `inventory.ssh-${name}.yaml`);
  fs.writeFileSync(file, YAML.stringify(inv));
  return file;
}

/** Logins the bastion's sshd has accepted so far (its journal, not our count). */
async function bastionLogins(): Promise<number> {
  const out = await inContainer('bastion', "journalctl -u ssh --no-pager -o cat | grep -c '^Accepted publickey' || true");
  return Number(out.trim());
}

/** What an operator would compare on a node: the config's checksum and any journal of a run in flight. */
async function nodeFiles(): Promise<string[]> {
  return Promise.all(
    lab().nodes.map((n) => inContainer(n.name, 'sha256sum /opt/k8s/kube-nginx/conf/kube-nginx.conf 2>/dev/null; ls /var/lib/k8s-ha/journal 2>/dev/null; true')),
  );
}

const via = () => `root@${lab().bastion.address}`;

beforeAll(async () => {
  await setNodeIsolation(lab().dir, true);
});

afterAll(async () => {
  await setNodeIsolation(lab().dir, false);
});

describe('through the lab bastion (the nodes do not answer this machine)', () => {
  it('the nodes are out of reach directly; the bastion is not', async () => {
    const n1 = lab().nodes[0]!;
    await expect(SshConnection.open(nodeTarget(n1, { connectTimeoutMs: 3000 }))).rejects.toThrow(/node-1: cannot reach/);
    const b = await SshConnection.open(nodeTarget(lab().bastion));
    b.close();
  });

  it('deploy makes ONE bastion login for every node, with strict host keys on both hops', async () => {
    const inv = bastionVariant('deploy', (i) => (i.lb.proxyTimeout = '11m'));
    const before = await bastionLogins();
    const r = await deployJson(['-i', inv]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.report.ok).toBe(true);
    for (const n of lab().nodes) {
      const h = r.report.hosts[n.name] as (typeof r.report.hosts)[string] & { address: string; via?: string };
      expect([h.address, h.via, h.config]).toEqual([n.address, via(), 'new']);
    }
    expect((r.report as unknown as { bastionLogins: number }).bastionLogins).toBe(1);
    expect(await bastionLogins()).toBe(before + 1);
    const text = await k8sha(['deploy', '-i', inv]);
    expect(text.code).toBe(0);
    expect(text.stdout).toContain(`${lab().nodes[0]!.address} via ${via()}`);
    expect(text.stdout).toContain(`through bastions: 1 bastion login for ${lab().nodes.length} nodes`);
  });

  it('a config change rolls through the bastion in batches, still one bastion login', async () => {
    const inv = bastionVariant('roll', (i) => (i.lb.proxyTimeout = '12m'));
    const before = await bastionLogins();
    const r = await deployJson(['-i', inv, '--serial', '1']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.report.roll?.batches).toEqual(lab().nodes.map((n) => [n.name]));
    expect(Object.values(r.report.hosts).map((h) => [h.status, h.config])).toEqual(lab().nodes.map(() => ['changed', 'new']));
    expect(await bastionLogins()).toBe(before + 1);
    for (const n of lab().nodes) expect(await inContainer(n.name, 'grep -c "proxy_timeout 12m" /opt/k8s/kube-nginx/conf/kube-nginx.conf')).toBe('1\n');
  });

  it('status through the bastion names the address dialed and the bastion', async () => {
    const inv = bastionVariant('roll', (i) => (i.lb.proxyTimeout = '12m'));
    const r = await k8sha(['status', '-i', inv, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const s = JSON.parse(r.stdout);
    expect(s.nodes.map((n: { name: string; address: string; via: string; healthy: boolean }) => [n.name, n.address, n.via, n.healthy])).toEqual(
      lab().nodes.map((n) => [n.name, n.address, via(), true]),
    );
    const table = await k8sha(['status', '-i', inv]);
    expect(table.stdout).toContain(`${lab().nodes[1]!.address} via ${via()}`);
  });

  it('the bastion down: every node is unreachable through it, exit 3, nothing touched', async () => {
    const inv = bastionVariant('down', (i) => (i.lb.proxyTimeout = '13m'));
    const files = await nodeFiles();
    await inContainer('bastion', 'systemctl stop ssh');
    try {
      const r = await deployJson(['-i', inv]);
      expect(r.code).toBe(3);
      const cause = `through bastion ${via()}, which failed: cannot reach ${lab().bastion.address}:22: connect ECONNREFUSED`;
      for (const n of lab().nodes) {
        const h = r.report.hosts[n.name]!;
        expect(h.status).toBe('unreachable');
        expect(h.error).toContain(`${n.name}: cannot reach ${n.address}:22 ${cause}`);
        // Never reached: what it runs is not claimed.
        expect(h.impl?.running).toBeUndefined();
      }
      const names = lab().nodes.map((n) => n.name);
      // --check in text: the cause once as it happens, once in the summary with every node it cost; no name twice on a line.
      const check = await k8sha(['deploy', '--check', '-i', inv]);
      expect(check.code).toBe(3);
      const text = `${check.stdout}\n${check.stderr}`;
      const said = text.split('\n').filter((l) => l.includes(cause));
      // The first to fail, whichever it is, in its own words.
      const first = lab().nodes.find((n) => said[0]?.startsWith(`${n.name}: `));
      expect(said).toEqual([
        `${first?.name}: unreachable: cannot reach ${first?.address}:22 ${cause} ${lab().bastion.address}:22`,
        `${names.length} hosts (${names.join(', ')}): unreachable: cannot reach <address>:22 ${cause} ${lab().bastion.address}:22`,
      ]);
      // The second points at it; the third is left to the summary.
      expect(text.match(new RegExp(`^\\S+: unreachable, as ${first?.name}; more hosts failing alike are not listed one by one until the end$`, 'gm'))).toHaveLength(1);
      expect(text).toContain(`${names.length} nodes could not be checked (exit 3)`);
      expect(text).not.toMatch(/^(\S+): unreachable: \1: /m);
      // status: nothing said of drift it could not see; the cause on the first node's row, the others pointing at it.
      const st = await k8sha(['status', '-i', inv]);
      expect(st.code).toBe(3);
      expect(st.stdout).toContain(`0/${names.length} nodes healthy, ${names.length} down, none could be compared with the inventory`);
      expect(st.stdout).not.toContain('none differs');
      expect(st.stdout.split('\n').filter((l) => l.includes(cause))).toHaveLength(1);
      for (const n of names.slice(1)) expect(st.stdout).toMatch(new RegExp(`^${n} .* unreachable .* as ${names[0]}$`, 'm'));
      expect(await nodeFiles()).toEqual(files);
    } finally {
      await inContainer('bastion', 'systemctl start ssh');
    }
  });
});

describe('ssh_config, as OpenSSH reads it', () => {
  const home = () => path.join(scratchDir(), 'home-ssh-config');

  function writeSshConfig(text: string): void {
    fs.mkdirSync(path.join(home(), '.ssh'), { recursive: true, mode: 0o700 });
    fs.writeFileSync(path.join(home(), '.ssh', 'config'), text);
  }

  it("dials ssh_config's HostName (and its ProxyJump) for a node the inventory gives no address, and shows it", async () => {
    const [n1] = lab().nodes;
    writeSshConfig(`Host lab-first\n  HostName ${n1!.address}\n  ProxyJump ${via()}\n`);
    const inv = bastionVariant('hostname', (i) => {
      delete i.ssh.proxyJump;
      i.nodes = [{ name: 'lab-first' }];
    });
    const r = await k8sha(['status', '-i', inv, '--json'], { env: { HOME: home() } });
    expect(r.code, r.stderr).toBe(0);
    const s = JSON.parse(r.stdout);
    expect([s.nodes[0].name, s.nodes[0].address, s.nodes[0].via, s.nodes[0].healthy]).toEqual(['lab-first', n1!.address, via(), true]);
  });

  it("keeps the inventory's address over a different HostName, and warns naming the file and line", async () => {
    const [n1, n2] = lab().nodes;
    writeSshConfig(`\nHost node-1\n  HostName ${n2!.address}\n`);
    const inv = bastionVariant('hostname-warn', (i) => (i.nodes = [{ name: 'node-1', address: n1!.address }]));
    const r = await k8sha(['status', '-i', inv, '--json'], { env: { HOME: home() } });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).nodes[0].address).toBe(n1!.address);
    expect(r.stderr).toContain(
      `warning: node-1: ${path.join(home(), '.ssh', 'config')}:3 sets HostName ${n2!.address}, but the inventory's address ${n1!.address} is dialed (the inventory comes first); remove one of them`,
    );
  });
});

describe('-u and --private-key, as ssh -l and ssh -i', () => {
  it("take the place of the inventory's ssh.user and ssh.identityFile: refused with them, logged in with the flags", async () => {
    const other = path.join(scratchDir(), 'unknown_ed25519');
    fs.rmSync(other, { force: true });
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', other]);
    const inv = bastionVariant('flags', (i) => {
      i.ssh.user = 'nobody';
      i.ssh.identityFile = other;
    });
    type Nodes = { nodes: { name: string; reachable: boolean; error?: string }[] };
    const refused = JSON.parse((await k8sha(['status', '-i', inv, '--json'])).stdout) as Nodes;
    expect(refused.nodes.map((n) => [n.name, n.reachable])).toEqual(lab().nodes.map((n) => [n.name, false]));
    for (const n of refused.nodes) expect(n.error).toMatch(/nobody|authentication|refused our key/i);
    const r = await k8sha(['status', '-i', inv, '--json', '-u', 'root', '--private-key', lab().identityFile]);
    const s = JSON.parse(r.stdout) as Nodes & { schemaVersion: number; hosts: Record<string, unknown> };
    expect(s.nodes.map((n) => [n.name, n.reachable, n.error])).toEqual(lab().nodes.map((n) => [n.name, true, undefined]));
    // The same objects keyed by name, as deploy's --json has them.
    expect(s.schemaVersion).toBe(1);
    expect(s.hosts).toEqual(Object.fromEntries(s.nodes.map((n) => [n.name, n])));
    // --verbose: each login with the user, the address, the bastion and the host key checked; each command's kind, exit and time, never its text.
    const v = await k8sha(['status', '-i', inv, '-v', '-u', 'root', '--private-key', lab().identityFile]);
    for (const n of lab().nodes) {
      expect(v.stderr).toMatch(new RegExp(`^debug: ${n.name}: logged in as root to ${n.address.replace(/\./g, '\\.')}:22 through bastion root@[\\d.]+; host key ssh-ed25519 SHA256:\\S+ \\(match\\)$`, 'm'));
      expect(v.stderr).toMatch(new RegExp(`^debug: ${n.name}: gathering facts \\(\\d+ B\\): exit 0 in \\d+ ms, \\d+ B back$`, 'm'));
    }
    expect(v.stderr).not.toMatch(/^debug: .*(@@|set -e|systemctl)/m);
  });
});

describe('host certificates', () => {
  /** known_hosts with the nodes' plain keys and, for the bastion, only the lab CA's @cert-authority line. */
  function caKnownHosts(extraPattern = ''): string {
    const plain = fs.readFileSync(lab().knownHosts, 'utf8').split('\n').filter((l) => l && !l.startsWith(`${lab().bastion.address} `));
    const ca = fs.readFileSync(path.join(lab().dir, 'known_hosts-cert-authority'), 'utf8').trim();
    const caLine = extraPattern ? ca.replace(/^@cert-authority (\S+)/, `@cert-authority $1,${extraPattern}`) : ca;
    const file = path.join(scratchDir(), `known_hosts.ca${extraPattern ? '-extra' : ''}`);
    fs.writeFileSync(file, [...plain, caLine].join('\n') + '\n');
    return file;
  }

  it('the bastion, known only by a @cert-authority line, is accepted on its certificate: status through it works', async () => {
    const known = caKnownHosts();
    expect(fs.readFileSync(known, 'utf8')).not.toContain(`${lab().bastion.address} ssh-`);
    const inv = bastionVariant('ca', (i) => (i.ssh.knownHostsFile = known));
    const r = await k8sha(['status', '-i', inv, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).nodes.every((n: { healthy: boolean }) => n.healthy)).toBe(true);
  });

  it('the same host presenting its unsigned key is refused with the same known_hosts', async () => {
    const port = 2222;
    const known = caKnownHosts(`[${lab().bastion.address}]:${port}`);
    // A second sshd on the bastion with the same host key and no certificate.
    await inContainer('bastion', `printf 'Port ${port}\\nHostKey /etc/ssh/ssh_host_ed25519_key\\nPasswordAuthentication no\\nPidFile /tmp/sshd-plain.pid\\n' > /tmp/sshd-plain && /usr/sbin/sshd -f /tmp/sshd-plain`);
    try {
      await expect(SshConnection.open(nodeTarget(lab().bastion, { port, knownHostsFile: known }))).rejects.toThrow(
        new RegExp(`host key of ${lab().bastion.address.replace(/\./g, '\\.')}:${port} is not in ${known}`),
      );
      const certified = await SshConnection.open(nodeTarget(lab().bastion, { knownHostsFile: known }));
      certified.close();
    } finally {
      await inContainer('bastion', 'kill "$(cat /tmp/sshd-plain.pid)"');
    }
  });
});

describe('a passphrase-protected default key', () => {
  const home = () => path.join(scratchDir(), 'home-locked-key');
  const keyFile = () => path.join(home(), '.ssh', 'id_ed25519');
  const hosts = () => [...lab().nodes.map((n) => n.name), 'bastion'];
  let agent: ChildProcess | undefined;
  const socket = () => path.join(scratchDir(), 'agent.sock');
  let inv: string;

  beforeAll(async () => {
    fs.mkdirSync(path.join(home(), '.ssh'), { recursive: true, mode: 0o700 });
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', 'lab passphrase', '-C', 'k8s-ha-test-locked', '-f', keyFile()]);
    const pub = fs.readFileSync(`${keyFile()}.pub`, 'utf8').trim();
    for (const h of hosts()) await inContainer(h, `echo '${pub}' >> /root/.ssh/authorized_keys`);
    // No identityFile: the default key in the (test) home directory is the one to use.
    inv = bastionVariant('locked', (i) => delete i.ssh.identityFile);
    agent = spawn('ssh-agent', ['-D', '-a', socket()], { stdio: 'ignore' });
    for (let i = 0; i < 100 && !fs.existsSync(socket()); i++) await new Promise((r) => setTimeout(r, 20));
    const askpass = path.join(scratchDir(), 'askpass.sh');
    fs.writeFileSync(askpass, "#!/bin/sh\necho 'lab passphrase'\n", { mode: 0o700 });
    execFileSync('ssh-add', [keyFile()], { env: { ...process.env, SSH_AUTH_SOCK: socket(), SSH_ASKPASS: askpass, SSH_ASKPASS_REQUIRE: 'force', DISPLAY: 'none' }, stdio: 'ignore' });
  });

  afterAll(async () => {
    agent?.kill();
    for (const h of hosts()) await inContainer(h, "sed -i '/k8s-ha-test-locked/d' /root/.ssh/authorized_keys");
  });

  it('works when ssh-agent holds it (bastion and nodes alike), and says so once', async () => {
    const env = { HOME: home(), SSH_AUTH_SOCK: socket() };
    const r = await k8sha(['status', '-i', inv, '--json'], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).nodes.every((n: { healthy: boolean }) => n.healthy)).toBe(true);
    // --check reaches every node (0: nothing pending, 5: changes pending; 3 would be a node not reached).
    const check = await k8sha(['deploy', '--check', '-i', inv], { env });
    expect([0, 5], check.stdout + check.stderr).toContain(check.code);
    const note = `note: ${keyFile()} is protected by a passphrase: ssh-agent holds it, so the agent signs with it`;
    expect(check.stdout.split('\n').filter((l) => l === note)).toHaveLength(1);
  });

  it('with --ask-pass in a terminal: asked once for every node and the bastion, not echoed, and it logs in', async () => {
    const cmd = `stty cols 120 rows 40; env HOME=${home()} SSH_AUTH_SOCK= ${process.execPath} ${BIN} status -i ${inv} --ask-pass; echo "EXIT=$?"`;
    const child = spawn('script', ['-qec', cmd, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout!.on('data', (b) => (out += b));
    const closed = new Promise((r) => child.on('close', r));
    for (let i = 0; i < 200 && !/Enter passphrase for key/.test(out); i++) await new Promise((r) => setTimeout(r, 50));
    child.stdin!.write('lab passphrase\r');
    await closed;
    const text = out.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '');
    expect(text.match(/Enter passphrase for key/g)).toEqual(['Enter passphrase for key']);
    expect(text).toContain(`Enter passphrase for key '${keyFile()}':`);
    expect(text).not.toContain('lab passphrase');
    expect(text).toMatch(new RegExp(`${lab().nodes.length}/${lab().nodes.length} nodes healthy`));
    expect(text).toMatch(/EXIT=0/);
  });

  it('without the agent: a clear error naming the key and the way out, not "unreachable"', async () => {
    const r = await k8sha(['status', '-i', inv, '--json'], { env: { HOME: home(), SSH_AUTH_SOCK: '' } });
    expect(r.code).toBe(3);
    const n = JSON.parse(r.stdout).nodes[0];
    expect(n.error).toContain(`${keyFile()} is protected by a passphrase and ssh-agent does not hold it: add it with "ssh-add ${keyFile()}", or rerun with --ask-pass`);
  });
});
