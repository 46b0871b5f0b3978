import { execFileSync } from 'node:child_process';
import YAML from 'yaml';
import { describe, expect, it } from 'vitest';
import { STRIP_PROBES_AWK, KUBELET_STANDIN_SCRIPT, runtimeDockerfile } from '../../src/lab/runtime-image.js';
import { planLab } from '../../src/lab/topology.js';

const images = { node: 'n:1', master: 'm:1', apiserver: 'a:1', runtime: 'r:1' };

describe('lab up --runtime N', () => {
  it('gives the first N nodes the runtime image and the others the node image', () => {
    const plan = planLab({ id: 'l', nodes: 3, masters: 1, subnet: '10.210.0.0/16', dir: '/l', images, runtime: 2 });
    expect(plan.containers.filter((c) => c.role === 'node').map((c) => `${c.service} ${c.image}`)).toEqual(['node-1 r:1', 'node-2 r:1', 'node-3 n:1']);
    expect(plan.containers.filter((c) => c.role !== 'node').every((c) => c.image !== 'r:1')).toBe(true);
  });

  it('without it, plans exactly what it planned before (docker-compose.test.yml stays equal)', () => {
    const before = planLab({ id: 'l', nodes: 3, masters: 1, subnet: '10.210.0.0/16', dir: '/l', images: { node: 'n:1', master: 'm:1', apiserver: 'a:1' } });
    expect(planLab({ id: 'l', nodes: 3, masters: 1, subnet: '10.210.0.0/16', dir: '/l', images, runtime: 0 })).toEqual(before);
  });

  it('refuses a runtime node on a release the runtime image is not built on', () => {
    expect(() => planLab({ id: 'l', nodes: 2, masters: 1, subnet: '10.210.0.0/16', dir: '/l', images: { ...images, nodeByOs: { bullseye: 'b:1', bookworm: 'n:1' } }, os: ['bullseye'], runtime: 1 })).toThrow(/node-1 runs bullseye/);
  });
});

describe('kubelet stand-in', () => {
  it('drops liveness, readiness and startup probes from block YAML and keeps everything else', () => {
    const pod = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'kube-nginx', namespace: 'kube-system' },
      spec: {
        hostNetwork: true,
        containers: [
          { livenessProbe: { httpGet: { host: '127.0.0.1', port: 8443, path: '/healthz' }, periodSeconds: 1 }, name: 'a', image: 'x', readinessProbe: { tcpSocket: { port: 1 } } },
          { name: 'b', image: 'y', startupProbe: { exec: { command: ['true'] } }, volumeMounts: [{ name: 'conf', mountPath: '/etc/kube-nginx', readOnly: true }] },
        ],
        volumes: [{ name: 'conf', hostPath: { path: '/etc/kube-nginx' } }],
      },
    };
    const out = execFileSync('awk', [STRIP_PROBES_AWK], { input: YAML.stringify(pod), encoding: 'utf8' });
    const expected = structuredClone(pod) as { spec: { containers: Record<string, unknown>[] } };
    for (const c of expected.spec.containers) for (const k of ['livenessProbe', 'readinessProbe', 'startupProbe']) delete c[k];
    expect(YAML.parse(out)).toEqual(expected);
  });

  it('says it is a stand-in, and keeps conmon out of kubelet.service so pods outlive a restart', () => {
    expect(KUBELET_STANDIN_SCRIPT).toMatch(/kubelet STAND-IN/);
    expect(KUBELET_STANDIN_SCRIPT).toMatch(/^unset INVOCATION_ID$/m);
    expect(runtimeDockerfile('n:1')).toMatch(/^FROM n:1$/m);
  });
});
