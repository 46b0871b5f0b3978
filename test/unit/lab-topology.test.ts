import fs from 'node:fs';
import YAML from 'yaml';
import { describe, expect, it } from 'vitest';
import { COMPOSE_FILE, COMPOSE_IMAGES, COMPOSE_LAB, composeForDefaultLab } from '../../src/lab/compose.js';
import { dockerRunArgs, labAddress, labAddress6, labSubnet6, parseSubnet16, planLab } from '../../src/lab/topology.js';

const images = { node: 'n:1', master: 'm:1', apiserver: 'a:1' };

describe('lab topology', () => {
  it('gives every host a fixed address in the /16 and names containers after the lab', () => {
    const plan = planLab({ id: 'k8s-ha-lab-abc', nodes: 2, masters: 3, subnet: '10.220.0.0/16', dir: '/x/.lab', images });
    expect(plan.network).toEqual({
      name: 'k8s-ha-lab-abc',
      subnet: '10.220.0.0/16',
      gateway: '10.220.0.1',
      subnet6: 'fd00:6b38:a:dc::/64',
      gateway6: 'fd00:6b38:a:dc::1',
    });
    expect(plan.containers.map((c) => [c.name, c.address, c.address6])).toEqual([
      ['k8s-ha-lab-abc-master-1', '10.220.1.11', 'fd00:6b38:a:dc::1:11'],
      ['k8s-ha-lab-abc-master-2', '10.220.1.12', 'fd00:6b38:a:dc::1:12'],
      ['k8s-ha-lab-abc-master-3', '10.220.1.13', 'fd00:6b38:a:dc::1:13'],
      ['k8s-ha-lab-abc-mirror', '10.220.0.10', 'fd00:6b38:a:dc::10'],
      ['k8s-ha-lab-abc-node-1', '10.220.2.11', 'fd00:6b38:a:dc::2:11'],
      ['k8s-ha-lab-abc-node-2', '10.220.2.12', 'fd00:6b38:a:dc::2:12'],
    ]);
  });

  it('derives one IPv6 /64 per lab from its IPv4 /16, every address in canonical form', () => {
    expect(labSubnet6('10.210.0.0/16')).toBe('fd00:6b38:a:d2::/64');
    expect(labSubnet6('10.249.0.0/16')).toBe('fd00:6b38:a:f9::/64');
    // A zero group is compressed, as the inventory writes an address.
    expect(labAddress6('172.0.0.0/16', 'master', 1)).toBe('fd00:6b38:ac::1:11');
    expect(planLab({ id: 'l', nodes: 1, masters: 1, subnet: '172.0.0.0/16', dir: '/l', images }).network.gateway6).toBe('fd00:6b38:ac::1');
  });

  it('holds 200 nodes and 200 masters without address clashes', () => {
    const plan = planLab({ id: 'l', nodes: 200, masters: 200, subnet: '10.210.0.0/16', dir: '/l', images });
    const addresses = plan.containers.map((c) => c.address);
    expect(new Set(addresses).size).toBe(401);
    expect(new Set(plan.containers.map((c) => c.address6)).size).toBe(401);
    expect(labAddress('10.210.0.0/16', 'node', 200)).toBe('10.210.2.210');
  });

  it('boots nodes with systemd as PID 1 and exactly the capabilities it needs, never privileged', () => {
    const plan = planLab({ id: 'l', nodes: 1, masters: 1, subnet: '10.210.0.0/16', dir: '/l', images });
    const node = plan.containers.find((c) => c.role === 'node')!;
    const args = dockerRunArgs(plan, node, { 'io.k8s-ha.lab': 'l' });
    expect(args).not.toContain('--privileged');
    expect(args.join(' ')).toContain(
      '--cap-add SYS_ADMIN --cap-add NET_ADMIN --security-opt seccomp=unconfined --security-opt apparmor=unconfined --cgroupns=host --tmpfs /run --tmpfs /run/lock -v /sys/fs/cgroup:/sys/fs/cgroup:rw',
    );
    expect(args.slice(-2)).toEqual(['n:1', '/lib/systemd/systemd']);
    expect(args).toContain('--ip');
    expect(args[args.indexOf('--ip') + 1]).toBe('10.210.2.11');
    expect(args[args.indexOf('--ip6') + 1]).toBe('fd00:6b38:a:d2::2:11');
  });

  it('boots masters like nodes (systemd as PID 1, the same capabilities and mounts) from the master image, with their certificates', () => {
    const plan = planLab({ id: 'l', nodes: 1, masters: 2, subnet: '10.210.0.0/16', dir: '/l', images });
    const node = plan.containers.find((c) => c.role === 'node')!;
    const master = plan.containers.find((c) => c.service === 'master-2')!;
    expect(master).toMatchObject({ role: 'master', name: 'l-master-2', address: '10.210.1.12', image: 'm:1' });
    const like = (c: typeof node) => ({ ...c, service: '', name: '', address: '', address6: '', role: '', image: '', volumes: [] });
    expect(like(master)).toEqual(like(node));
    expect(master.volumes).toEqual([
      { host: '/sys/fs/cgroup', container: '/sys/fs/cgroup', readOnly: false },
      { host: '/l/hosts/master-2', container: '/etc/k8s-ha-lab/host', readOnly: true },
      { host: '/l/ssh/authorized_keys', container: '/etc/k8s-ha-lab/authorized_keys', readOnly: true },
      { host: '/l/kubeconfig', container: '/etc/k8s-ha-lab/kubeconfig', readOnly: true },
      { host: '/l/pki/master-2', container: '/etc/k8s-ha-lab/pki', readOnly: true },
    ]);
    const args = dockerRunArgs(plan, master, {});
    expect(args).not.toContain('--privileged');
    expect(args.join(' ')).toContain('--hostname master-2');
    expect(args.slice(-2)).toEqual(['m:1', '/lib/systemd/systemd']);
    // The mirror stays one process in the apiserver image.
    expect(plan.containers.find((c) => c.role === 'mirror')).toMatchObject({ image: 'a:1', command: ['/usr/local/bin/node', '/opt/k8s-ha-lab/standin.js', 'mirror', '/srv/mirror'] });
  });

  it('rejects a subnet that is not a /16', () => {
    expect(parseSubnet16('10.1.0.0/24')).toMatch(/must be an IPv4 \/16/);
    expect(parseSubnet16('300.1.0.0/16')).toMatch(/above 255/);
    expect(parseSubnet16('10.1.0.0/16')).toEqual({ a: 10, b: 1 });
  });
});

describe(COMPOSE_FILE, () => {
  it('is exactly what the lab plan renders (regenerate with npm run compose:write)', () => {
    expect(fs.readFileSync(COMPOSE_FILE, 'utf8')).toBe(composeForDefaultLab());
  });

  it('runs every container of the plan with the same image, address, capabilities, mounts, env and command', () => {
    const compose = YAML.parse(fs.readFileSync(COMPOSE_FILE, 'utf8'));
    const plan = planLab({ id: 'k8s-ha-lab', ...COMPOSE_LAB, images: COMPOSE_IMAGES });
    expect(Object.keys(compose.services).sort()).toEqual(plan.containers.map((c) => c.service).sort());
    for (const c of plan.containers) {
      const s = compose.services[c.service];
      expect(s.image).toBe(c.image);
      expect(s.networks.lab.ipv4_address).toBe(c.address);
      expect(s.networks.lab.ipv6_address).toBe(c.address6);
      expect(s.cap_add ?? []).toEqual(c.capAdd);
      expect(s.security_opt ?? []).toEqual(c.securityOpt);
      expect(s.tmpfs ?? []).toEqual(c.tmpfs);
      expect(s.volumes).toEqual(c.volumes.map((v) => `${v.host}:${v.container}:${v.readOnly ? 'ro' : 'rw'}`));
      expect(s.environment).toEqual(c.env);
      expect(s.command).toEqual(c.command);
    }
    expect(compose.networks.lab.ipam.config[0].subnet).toBe(COMPOSE_LAB.subnet);
    expect(compose.networks.lab.enable_ipv6).toBe(true);
    expect(compose.networks.lab.ipam.config[1].subnet).toBe(plan.network.subnet6);
  });
});
