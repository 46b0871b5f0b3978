/**
 * A lab master cut off from the network, as a pulled cable or a partition cuts
 * a real host off: every packet to and from it is dropped without a trace (no
 * handshake, no reset, no ICMP, no ARP answer), for established connections
 * and new ones alike, whoever the peer is. `docker pause` (freeze) is gentler:
 * its kernel still completes handshakes.
 *
 * Done inside the master's own network namespace with iproute2's `tc`, the one
 * tool the lab image has for it. The machine's kernel offers no netem, no
 * matchall and no gact (drop) action, but it has the `blackhole` qdisc (drops
 * everything sent) and the u32 classifier with the `mirred` action: every
 * packet arriving on the interface is redirected into its own egress, where the
 * blackhole swallows it. So the blackhole goes in first and comes out last:
 * while the redirect stands without it, arriving packets would be sent back
 * out onto the lab network.
 *
 * A qdisc lives in the namespace: a container stopped and started has none, so
 * `lab up` applies it again to a master lab.json records as partitioned.
 */
import { quote } from '../util/quote.js';
import { docker } from './docker.js';
import type { LabContainer } from './topology.js';

/** The lab network's interface in every lab container (one network each). */
export const LAB_INTERFACE = 'eth0';

/**
 * Shell run in a master (as root, with NET_ADMIN there): cut it off or heal it,
 * printing `changed` or `kept`, so that a second run changes nothing.
 */
export function partitionScript(partitioned: boolean, dev = LAB_INTERFACE): string {
  const d = quote(dev);
  const blackholed = `tc qdisc show dev ${d} root | grep -q '^qdisc blackhole'`;
  const redirected = `tc filter show dev ${d} ingress | grep -q mirred`;
  const hasIngress = `tc qdisc show dev ${d} ingress | grep -q '^qdisc ingress'`;
  if (partitioned) {
    return (
      `if ${blackholed} && ${redirected}; then echo kept; else ` +
      `tc qdisc replace dev ${d} root blackhole && ` +
      `{ ! ${hasIngress} || tc qdisc del dev ${d} ingress; } && ` +
      `tc qdisc add dev ${d} ingress && ` +
      `tc filter add dev ${d} parent ffff: protocol all prio 1 u32 match u32 0 0 action mirred egress redirect dev ${d} && ` +
      `echo changed; fi`
    );
  }
  // The redirect first: the blackhole must outlive it (see above).
  return (
    `if ${hasIngress} || ${blackholed}; then ` +
    `{ ! ${hasIngress} || tc qdisc del dev ${d} ingress; } && ` +
    `{ ! ${blackholed} || tc qdisc del dev ${d} root; } && ` +
    `echo changed; else echo kept; fi`
  );
}

/** Cut a running master off, or heal it; true when something changed. */
export async function applyPartition(m: LabContainer, partitioned: boolean): Promise<boolean> {
  const out = await docker(['exec', m.name, 'sh', '-c', partitionScript(partitioned)], {
    step: `${partitioned ? 'partitioning' : 'healing'} ${m.service}`,
  });
  return out.trim() === 'changed';
}
