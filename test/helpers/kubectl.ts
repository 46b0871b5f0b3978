/**
 * The lab's real Kubernetes client (Debian's kubectl, on client-go) in tests: on a node, where it
 * goes through the node-local balancer as kubelet does, or on this machine toward a VIP.
 */
import { expect } from 'vitest';
import { labPaths } from '../../src/lab/files.js';
import { kubectlInContainer, kubectlToward } from '../../src/lab/kubectl.js';
import type { FaultRun, KubectlRunner } from '../../src/lab/reflector.js';
export { holderDown, standinFaults, underFault, underFaults } from '../../src/lab/reflector.js';
import { lab, labContainer } from './lab.js';

/** kubectl on a lab host: it talks to the host's own 127.0.0.1:8443. */
export async function kubectlOn(service: string): Promise<KubectlRunner> {
  return kubectlInContainer(await labContainer(service));
}

/** kubectl on this machine (copied out of the node image by lab up), with the lab's kubeconfig, toward `server`. */
export function kubectlHere(server: string): KubectlRunner {
  const p = labPaths(lab().dir);
  return kubectlToward(p.kubectl, p.kubeconfig, server);
}

/** What a user checks of a reflector's run: every event once, in order, none lost, its store right. */
export function expectNothingLost(run: FaultRun, through?: string): void {
  const v = run.verdict;
  const why = JSON.stringify({ ...(through ? { through } : {}), victim: run.victim, verdict: { ...v, missing: v.missing.slice(0, 10) }, failures: run.log.failures.slice(0, 5), watches: run.log.watches.length });
  expect(v.missing, why).toEqual([]);
  expect(v.repeated, why).toEqual([]);
  expect(v.wrong, why).toBe(0);
  expect(v.storeMatches, why).toBe(true);
  expect(run.log.gone, why).toBe(0);
}
