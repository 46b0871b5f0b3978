/**
 * Each node installs the build output of its own CPU architecture (its facts' uname -m), and a node
 * whose architecture nothing was built for fails in planning, before anything changes on it, with the
 * fix named. Plain data: the kube-lb playbook's binary step, planned against faked facts.
 */
import { describe, expect, it } from 'vitest';
import { artifactFor, file } from '../../src/ops/files.js';
import type { PlanContext } from '../../src/ops/types.js';
import { hostFacts } from '../helpers/facts.js';

const binary = (arch: string, sha: string) => ({ content: Buffer.from(`kube-lb for ${arch}`), sha256: sha.repeat(64), arch, describe: `kube-lb 0.1.0 (Bun 1.4.5) (${arch})` });
const both: PlanContext['artifacts'] = { 'kube-lb': binary('x86_64', 'a'), 'kube-lb@x86_64': binary('x86_64', 'a'), 'kube-lb@aarch64': binary('aarch64', 'b') };
const step = { source: 'artifact:kube-lb', dest: '/opt/k8s/kube-lb/sbin/kube-lb', mode: '0755', notify: [] };
const ctx = (artifacts: PlanContext['artifacts']): PlanContext => ({ notified: new Set(), artifacts, render: () => '' });
const put = (arch: string, artifacts: PlanContext['artifacts']) => {
  const plan = file.plan(step, hostFacts({ os: { id: 'debian', versionId: '12', prettyName: 'Debian', arch, glibc: '2.36' } }), ctx(artifacts));
  return plan.changes.find((c) => c.kind === 'put') as { sha256: string; path: string } | undefined;
};

describe("a node's kube-lb, by its architecture", () => {
  it('an aarch64 node gets the aarch64 build, an x86_64 node the x86_64 one', () => {
    expect(put('aarch64', both)).toMatchObject({ path: '/opt/k8s/kube-lb/sbin/kube-lb', sha256: 'b'.repeat(64) });
    expect(put('x86_64', both)).toMatchObject({ sha256: 'a'.repeat(64) });
  });

  it('an aarch64 node when only x86_64 was built: refused in planning, naming what to add', () => {
    const only = { 'kube-lb': binary('x86_64', 'a'), 'kube-lb@x86_64': binary('x86_64', 'a') };
    expect(() => put('aarch64', only)).toThrow('kube-lb is built for x86_64, but this node is aarch64: nothing was changed on it; add aarch64 to build.architectures in the inventory');
  });

  it('nginx built on two hosts, one per architecture: each node installs its own; a third architecture names the fix', () => {
    const two = { nginx: binary('x86_64', 'c'), 'nginx@x86_64': binary('x86_64', 'c'), 'nginx@aarch64': binary('aarch64', 'd') };
    expect(artifactFor(two, 'nginx', 'aarch64')?.sha256).toBe('d'.repeat(64));
    expect(artifactFor(two, 'nginx', 'x86_64')?.sha256).toBe('c'.repeat(64));
    expect(() => artifactFor(two, 'nginx', 'riscv64')).toThrow(/^nginx is built for x86_64 and aarch64, but this node is riscv64: nothing was changed on it; add a node of riscv64 to build.host/);
  });

  it('nginx built on a host of another architecture names the build host as the fix; an unknown architecture takes the one there is', () => {
    const nginx = { nginx: binary('x86_64', 'c') };
    expect(() => artifactFor(nginx, 'nginx', 'aarch64')).toThrow(/^nginx is built for x86_64, but this node is aarch64: nothing was changed on it; add a node of aarch64 to build.host \(one build host per CPU architecture\)/);
    expect(artifactFor(nginx, 'nginx', 'unknown')?.sha256).toBe('c'.repeat(64));
    expect(artifactFor({ nginx: { ...binary('x86_64', 'd'), arch: undefined } }, 'nginx', 'aarch64')?.sha256).toBe('d'.repeat(64));
  });
});
