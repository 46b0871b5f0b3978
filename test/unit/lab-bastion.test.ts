/** The lab's bastion as plain data: its place in the plan, the inventories through it, its CA and isolation scripts. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { afterEach, describe, expect, it } from 'vitest';
import { parseInventory } from '../../src/inventory/load.js';
import { bastionJump, labBastion, labPaths, renderLabInventory, renderLabSshConfig } from '../../src/lab/files.js';
import { bastionPrincipals, bastionSshdConfig, certAuthorityLine, labHostPattern, signScript } from '../../src/lab/host-ca.js';
import { isolationScript } from '../../src/lab/isolation.js';
import { prepareLabUp } from '../../src/lab/lab.js';
import { LAB_FILES, STATE_KIND, type LabState } from '../../src/lab/state.js';
import { BASTION_HOST_CERT_PATH, dockerRunArgs, labAddress, planLab } from '../../src/lab/topology.js';

const images = { node: 'n:1', master: 'm:1', apiserver: 'a:1' };
const plan = (bastion?: boolean) => planLab({ id: 'k8s-ha-lab-abc', nodes: 2, masters: 1, subnet: '10.220.0.0/16', dir: '/x/.lab', images, bastion });

describe('lab plan with a bastion', () => {
  it('adds one bastion at .0.20, before the nodes, and nothing else changes', () => {
    const withBastion = plan(true);
    expect(withBastion.containers.map((c) => [c.service, c.role, c.address])).toEqual([
      ['master-1', 'master', '10.220.1.11'],
      ['mirror', 'mirror', '10.220.0.10'],
      ['bastion', 'bastion', '10.220.0.20'],
      ['node-1', 'node', '10.220.2.11'],
      ['node-2', 'node', '10.220.2.12'],
    ]);
    expect(withBastion.containers.filter((c) => c.role !== 'bastion')).toEqual(plan(false).containers);
    expect(plan().containers.some((c) => c.role === 'bastion')).toBe(false);
    expect(labAddress('10.220.0.0/16', 'bastion', 0)).toBe('10.220.0.20');
  });

  it('boots the bastion like a node (same image, systemd, its own host key) and mounts its sshd settings', () => {
    const p = plan(true);
    const b = labBastion(p)!;
    const node = p.containers.find((c) => c.service === 'node-1')!;
    expect(b.name).toBe('k8s-ha-lab-abc-bastion');
    expect({ ...b, service: '', name: '', address: '', address6: '', role: '', volumes: [] }).toEqual({ ...node, service: '', name: '', address: '', address6: '', role: '', volumes: [] });
    expect(b.volumes).toEqual([
      { host: '/sys/fs/cgroup', container: '/sys/fs/cgroup', readOnly: false },
      { host: '/x/.lab/hosts/bastion', container: '/etc/k8s-ha-lab/host', readOnly: true },
      { host: '/x/.lab/ssh/authorized_keys', container: '/etc/k8s-ha-lab/authorized_keys', readOnly: true },
      { host: '/x/.lab/kubeconfig', container: '/etc/k8s-ha-lab/kubeconfig', readOnly: true },
      { host: '/x/.lab/hosts/bastion/sshd-bastion.conf', container: '/etc/ssh/sshd_config.d/k8s-ha-lab-bastion.conf', readOnly: true },
    ]);
    const args = dockerRunArgs(p, b, { 'io.k8s-ha.lab.role': 'bastion' }).join(' ');
    expect(args).toContain('--name k8s-ha-lab-abc-bastion --hostname bastion --network k8s-ha-lab-abc --ip 10.220.0.20');
    expect(args).not.toContain('--privileged');
    expect(args).toMatch(/n:1 \/lib\/systemd\/systemd$/);
  });

  it('the certificate sshd is told to present is in the host directory the bastion mounts', () => {
    const b = labBastion(plan(true))!;
    const hostDir = b.volumes.find((v) => v.host.endsWith('/hosts/bastion'))!.container;
    expect(path.posix.dirname(BASTION_HOST_CERT_PATH)).toBe(hostDir);
    expect(bastionSshdConfig(BASTION_HOST_CERT_PATH)).toMatch(/^HostCertificate \/etc\/k8s-ha-lab\/host\/ssh_host_ed25519_key-cert\.pub$/m);
  });
});

describe('lab inventories', () => {
  const p = plan(true);
  const paths = labPaths('/x/.lab');

  it('through the bastion: ssh.proxyJump is root@<bastion address>, everything else as the direct one', () => {
    const direct = YAML.parse(renderLabInventory(p, paths));
    const jumped = YAML.parse(renderLabInventory(p, paths, { proxyJump: bastionJump(labBastion(p)!) }));
    expect(direct.ssh.proxyJump).toBeUndefined();
    expect(jumped.ssh).toEqual({ ...direct.ssh, proxyJump: 'root@10.220.0.20' });
    expect({ ...jumped, ssh: undefined }).toEqual({ ...direct, ssh: undefined });
    expect(jumped.nodes).toEqual([
      { name: 'node-1', address: '10.220.2.11' },
      { name: 'node-2', address: '10.220.2.12' },
    ]);
  });

  it('both are valid inventories', () => {
    for (const proxyJump of [undefined, 'root@10.220.0.20']) {
      const { diagnostics, inventory } = parseInventory(renderLabInventory(p, paths, { proxyJump }));
      expect(diagnostics).toEqual([]);
      expect(inventory!.ssh?.proxyJump).toBe(proxyJump);
    }
  });

  it('names the lab files lab down removes, the bastion ones included', () => {
    for (const f of [paths.inventory, paths.bastionInventory, paths.knownHosts, paths.certAuthorityKnownHosts, paths.sshConfig]) {
      expect(LAB_FILES).toContain(path.basename(f));
    }
    expect(path.relative(paths.dir, paths.hostCaPublicKey)).toBe('ssh/host-ca.pub');
  });

  it('ssh_config gives both hops of `ssh -F ... -J` the lab key and known_hosts, strictly', () => {
    const text = renderLabSshConfig(p, paths);
    expect(text).toContain('ssh -F /x/.lab/ssh_config -J root@10.220.0.20 root@<node address>');
    expect(text.split('\n').filter((l) => !l.startsWith('#'))).toEqual([
      'Host *',
      '  User root',
      '  IdentityFile /x/.lab/ssh/id_ed25519',
      '  IdentitiesOnly yes',
      '  UserKnownHostsFile /x/.lab/known_hosts',
      '  StrictHostKeyChecking yes',
      '',
    ]);
  });
});

describe('lab SSH host CA', () => {
  it('one @cert-authority line for every address of the lab', () => {
    expect(labHostPattern('10.220.0.0/16')).toBe('10.220.*');
    expect(certAuthorityLine('10.220.0.0/16', 'ssh-ed25519 AAAAC3Nz k8s-ha lab host CA (x)\n')).toBe(
      '@cert-authority 10.220.* ssh-ed25519 AAAAC3Nz k8s-ha lab host CA (x)\n',
    );
  });

  it('signs the bastion host key for its address and name, making the CA only when missing', () => {
    const b = labBastion(plan(true))!;
    expect(bastionPrincipals(b)).toEqual(['10.220.0.20', 'bastion']);
    const script = signScript({ caComment: "lab's CA", keyId: 'bastion', principals: bastionPrincipals(b), uid: 1000, gid: 1001 });
    expect(script).toContain(`ssh-keygen -q -t ed25519 -N '' -C 'lab'\\''s CA' -f host-ca`);
    expect(script).toContain(`if [ ! -s host-ca ] || [ ! -s host-ca.pub ]; then`);
    expect(script).toContain(`ssh-keygen -q -s host-ca -I 'bastion' -h -n '10.220.0.20,bastion' /lab/host/ssh_host_ed25519_key.pub`);
    expect(script).toContain('chown 1000:1001 host-ca host-ca.pub /lab/host/ssh_host_ed25519_key-cert.pub');
  });
});

describe('node isolation', () => {
  it('adds or removes an unreachable route to the gateway, saying whether it changed anything', () => {
    expect(isolationScript('10.220.0.1', 'fd00:6b38:a:dc::1', true)).toBe(
      "c=kept && { ip route show 10.220.0.1/32 | grep -q '^unreachable' || { ip route add unreachable 10.220.0.1/32 && c=changed; }; } && " +
        "{ ip -6 route show fd00:6b38:a:dc::1/128 | grep -q '^unreachable' || { ip -6 route add unreachable fd00:6b38:a:dc::1/128 && c=changed; }; } && echo $c",
    );
    expect(isolationScript('10.220.0.1', 'fd00:6b38:a:dc::1', false)).toBe(
      "c=kept && { ! ip route show 10.220.0.1/32 | grep -q '^unreachable' || { ip route del unreachable 10.220.0.1/32 && c=changed; }; } && " +
        "{ ! ip -6 route show fd00:6b38:a:dc::1/128 | grep -q '^unreachable' || { ip -6 route del unreachable fd00:6b38:a:dc::1/128 && c=changed; }; } && echo $c",
    );
  });
});

describe('lab up flags for the bastion', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  });
  const labDir = (state?: Partial<LabState>): string => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-lab-bastion-'));
    dirs.push(dir);
    if (state) {
      const full: LabState = {
        kind: STATE_KIND,
        version: 1,
        id: 'x',
        dir,
        nodes: 2,
        masters: 1,
        subnet: '10.220.0.0/16',
        images,
        createdAt: '2026-01-01T00:00:00.000Z',
        ...state,
      };
      fs.writeFileSync(path.join(dir, 'lab.json'), JSON.stringify(full));
    }
    return dir;
  };
  const resolved = async (dir: string, flags: { bastion?: boolean; keepDirect?: boolean }) => {
    const { options } = await prepareLabUp({ dir, ...flags });
    return { bastion: options.bastion, isolated: options.isolated };
  };

  it('a new lab: none by default, --bastion isolates the nodes, --keep-direct keeps them reachable', async () => {
    expect(await resolved(labDir(), {})).toEqual({ bastion: false, isolated: false });
    expect(await resolved(labDir(), { bastion: true })).toEqual({ bastion: true, isolated: true });
    expect(await resolved(labDir(), { bastion: true, keepDirect: true })).toEqual({ bastion: true, isolated: false });
  });

  it('--keep-direct without a bastion is refused before anything is made', async () => {
    const dir = labDir();
    await expect(prepareLabUp({ dir, keepDirect: true })).rejects.toThrow(/--keep-direct keeps the nodes reachable beside a bastion/);
    expect(fs.readdirSync(dir)).toEqual([]);
    await expect(prepareLabUp({ dir: labDir({}), keepDirect: true })).rejects.toThrow(/has none/);
  });

  it('an existing lab keeps what it had without flags; flags change it', async () => {
    expect(await resolved(labDir({}), {})).toEqual({ bastion: false, isolated: false });
    expect(await resolved(labDir({ bastion: true, isolated: true }), {})).toEqual({ bastion: true, isolated: true });
    expect(await resolved(labDir({ bastion: true, isolated: false }), {})).toEqual({ bastion: true, isolated: false });
    expect(await resolved(labDir({ bastion: true, isolated: true }), { keepDirect: true })).toEqual({ bastion: true, isolated: false });
    expect(await resolved(labDir({ bastion: true, isolated: false }), { bastion: true })).toEqual({ bastion: true, isolated: true });
    expect(await resolved(labDir({}), { bastion: true, keepDirect: true })).toEqual({ bastion: true, isolated: false });
  });
});
