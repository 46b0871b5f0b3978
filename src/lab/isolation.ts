/**
 * Nodes this machine cannot reach, as behind a real bastion: inside each node
 * an `unreachable` route to the lab network's gateway address, IPv4 and IPv6. This machine
 * talks to the containers from that address (the bridge's own), so a node's
 * replies to it go nowhere and a direct SSH login times out, while everything
 * else keeps working: the bastion, masters and mirror are on the same bridge
 * (reached directly, not through the gateway), and traffic to the internet
 * still leaves through the gateway as next hop, which a route to the gateway's
 * own address does not touch. Nothing changes on this machine (no iptables
 * rule to clean up), and `lab down` takes it away with the containers.
 *
 * A route lives in the container's network namespace: a stopped and started
 * node has lost it, so `lab up` applies it again on every run.
 */
import { UsageError } from '../errors.js';
import { mapLimit } from '../util/pool.js';
import { docker, labContainers } from './docker.js';
import { planOfState, readState } from './state.js';
import type { LabContainer, LabPlan } from './topology.js';

/**
 * Shell run in a node (as root, which has NET_ADMIN there): add or remove the
 * routes, printing `changed` or `kept` so `lab up` can say what it did. Both
 * families: this machine reaches the node from the bridge's IPv6 address too
 * (gateway6), and a route for one family does nothing for the other.
 */
export function isolationScript(gateway: string, gateway6: string, isolated: boolean): string {
  const routes = [
    { ip: 'ip', dest: `${gateway}/32` },
    { ip: 'ip -6', dest: `${gateway6}/128` },
  ];
  const steps = routes.map(({ ip, dest }) => {
    const has = `${ip} route show ${dest} | grep -q '^unreachable'`;
    return isolated
      ? `{ ${has} || { ${ip} route add unreachable ${dest} && c=changed; }; }`
      : `{ ! ${has} || { ${ip} route del unreachable ${dest} && c=changed; }; }`;
  });
  // One word for both: the node's isolation is one fact.
  return `c=kept && ${steps.join(' && ')} && echo $c`;
}

/** docker exec runs at once: each is cheap, and the engine serialises much of it anyway. */
const EXECS_AT_ONCE = 8;

/**
 * Make every node of the plan isolated or not; returns the nodes whose route
 * changed. The containers must be running. `freshlyStarted` names containers
 * started since their namespace was made: they have no route, so reconnecting
 * them is nothing to do (a default lab's `lab up` then runs no exec at all).
 */
export async function applyNodeIsolation(plan: LabPlan, isolated: boolean, freshlyStarted: ReadonlySet<string> = new Set()): Promise<string[]> {
  const nodes = plan.containers.filter((c) => c.role === 'node' && (isolated || !freshlyStarted.has(c.name)));
  const script = isolationScript(plan.network.gateway, plan.network.gateway6, isolated);
  const changed = await mapLimit(nodes, EXECS_AT_ONCE, async (n: LabContainer) => {
    const out = await docker(['exec', n.name, 'sh', '-c', script], {
      step: `${isolated ? 'isolating' : 'reconnecting'} ${n.service} ${isolated ? 'from' : 'to'} this machine`,
    });
    return out.trim() === 'changed' ? n.service : undefined;
  });
  return changed.filter((s): s is string => s !== undefined);
}

/**
 * Isolate the nodes of the lab in `dir` from this machine, or reconnect them.
 * A fault to inject, like `lab master NAME down`: lab.json and the inventories stay
 * as they are, and the next `lab up` puts back what lab.json says.
 */
export async function setNodeIsolation(dir: string, isolated: boolean): Promise<void> {
  const state = await readState(dir);
  if (!state) throw new UsageError(`no lab in ${dir}`, { hint: `start one with \`k8s-ha lab up --dir ${dir} --bastion\`` });
  const plan = planOfState(state, dir);
  const running = new Set((await labContainers(state.id)).filter((c) => c.running).map((c) => c.name));
  const down = plan.containers.filter((c) => c.role === 'node' && !running.has(c.name)).map((c) => c.service);
  if (down.length) {
    throw new UsageError(`cannot ${isolated ? 'isolate' : 'reconnect'} the nodes of ${dir}: ${down.join(', ')} ${down.length === 1 ? 'is' : 'are'} not running`, {
      hint: `run \`k8s-ha lab up --dir ${dir}\` first`,
    });
  }
  await applyNodeIsolation(plan, isolated);
}
