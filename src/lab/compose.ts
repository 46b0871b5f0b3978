/**
 * docker-compose.test.yml, rendered from the same plan `lab up` runs.
 * Compose v1 (1.29) has no cgroupns setting: on cgroup v1 engines the host
 * namespace is the default, which is what systemd in the nodes and masters needs.
 */
import YAML from 'yaml';
import { planLab, type LabPlan } from './topology.js';

export const COMPOSE_FILE = 'docker-compose.test.yml';

/** The topology the committed compose file describes: the default lab in ./.lab. */
export const COMPOSE_LAB = { nodes: 3, masters: 3, dir: '.lab', subnet: '10.210.0.0/16' } as const;

/** Stable image names the compose file refers to; `lab up` and `lab prepare` tag them. */
export const COMPOSE_IMAGES = {
  node: 'k8s-ha-lab-node:latest',
  master: 'k8s-ha-lab-master:latest',
  apiserver: 'k8s-ha-lab-apiserver:latest',
} as const;

export function renderCompose(plan: LabPlan): string {
  const services: Record<string, unknown> = {};
  for (const c of plan.containers) {
    const service: Record<string, unknown> = {
      image: c.image,
      hostname: c.service,
      networks: { lab: { ipv4_address: c.address, ipv6_address: c.address6 } },
    };
    if (c.capAdd.length) service.cap_add = c.capAdd;
    if (c.securityOpt.length) service.security_opt = c.securityOpt;
    if (c.tmpfs.length) service.tmpfs = c.tmpfs;
    service.volumes = c.volumes.map((v) => `${v.host}:${v.container}:${v.readOnly ? 'ro' : 'rw'}`);
    service.environment = c.env;
    service.command = c.command;
    services[c.service] = service;
  }
  const doc = {
    version: '2.4',
    services,
    networks: {
      lab: {
        enable_ipv6: true,
        ipam: {
          config: [
            { subnet: plan.network.subnet, gateway: plan.network.gateway },
            { subnet: plan.network.subnet6, gateway: plan.network.gateway6 },
          ],
        },
      },
    },
  };
  const header = [
    '# The k8s-ha lab for docker-compose v1: 3 systemd+sshd nodes, 3 systemd+sshd masters whose kube-apiserver is a stand-in, one nginx source mirror.',
    '# Generated from src/lab/topology.ts by `npm run compose:write`; a unit test keeps it equal to what `k8s-ha lab up` runs.',
    '# First write the images and the lab files (keys, certificates, tarball) it mounts from ./.lab:',
    '#   npx k8s-ha lab prepare',
    '#   docker-compose -f docker-compose.test.yml -p k8s-ha up -d',
    '# Use either this file or `k8s-ha lab up`, not both at once: they use the same addresses.',
    '',
  ].join('\n');
  return header + YAML.stringify(doc, { lineWidth: 0 });
}

/** The committed docker-compose.test.yml: the default lab, as `lab up` would plan it. */
export function composeForDefaultLab(): string {
  return renderCompose(planLab({ id: 'k8s-ha-lab', ...COMPOSE_LAB, images: COMPOSE_IMAGES }));
}
