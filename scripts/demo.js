// The demo behind `npm run demo`: start the lab, deploy the node-local load balancer to
// every node, deploy again to show that nothing changes, then show each node's status. Each step is the real
// k8s-ha command line, printed before it runs.
import { spawnSync } from 'node:child_process';

const bin = new URL('../bin/k8s-ha.js', import.meta.url).pathname;
const steps = [
  ['lab', 'up'],
  ['deploy', '-i', '.lab/inventory.yaml'],
  ['deploy', '-i', '.lab/inventory.yaml'],
  ['status', '-i', '.lab/inventory.yaml'],
];

for (const args of steps) {
  process.stdout.write(`\n$ k8s-ha ${args.join(' ')}\n`);
  const r = spawnSync(process.execPath, [bin, ...args], { stdio: 'inherit' });
  if (r.status !== 0) {
    process.stderr.write(`\ndemo stopped: \`k8s-ha ${args.join(' ')}\` exited ${r.status}\n`);
    process.exit(r.status ?? 1);
  }
}
process.stdout.write('\nThe lab stays up for you to explore. Remove it with: npx k8s-ha lab down\n');
