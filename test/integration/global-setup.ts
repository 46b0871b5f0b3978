/**
 * One lab for the whole integration suite, started through the real CLI in
 * .lab-test (apart from a user's .lab). It has a bastion, with the nodes still
 * reachable directly: the SSH tests cut them off from this machine while they
 * run (setNodeIsolation) and go through the bastion. Its nodes have podman, docker and
 * the kubelet stand-in (--runtime 3). K8S_HA_KEEP_LAB=1 leaves it up afterwards;
 * K8S_HA_LAB_OS=trixie runs every host on that release instead.
 */
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { k8sha, ROOT } from '../helpers/cli.js';

const DIR = path.join(ROOT, '.lab-test');

export default async function setup(project: TestProject) {
  // K8S_HA_LAB_OS=trixie: every node and master on that release, by hand (docs/development.md); no
  // container runtime then (its image is built on bookworm only), so the files that need one do not apply.
  const release = process.env.K8S_HA_LAB_OS;
  const os = release ? ['--os', release, '--masters-os', release, '--runtime', '0'] : ['--runtime', '3'];
  const r = await k8sha(['lab', 'up', '--dir', DIR, '--nodes', '3', '--masters', '4', '--bastion', '--keep-direct', ...os, '--json']);
  if (r.code !== 0) throw new Error(`k8s-ha lab up failed (exit ${r.code}):\n${r.stderr}`);
  const info = JSON.parse(r.stdout);
  project.provide('lab', { dir: DIR, ...info });
  return async () => {
    if (process.env.K8S_HA_KEEP_LAB) return;
    const down = await k8sha(['lab', 'down', '--dir', DIR]);
    if (down.code !== 0) throw new Error(`k8s-ha lab down failed:\n${down.stderr}`);
  };
}
