// The demo behind `npm run demo`: start the lab, deploy the node-local load balancer to
// every node, deploy again to show that nothing changes, then show each node's status, and a real
// client (kubectl, on node-1) listing pods through that node's balancer. Each step is the real
// command line, printed before it runs.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';

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
// kubectl on a node talks to 127.0.0.1:8443 as kubelet does: the stand-ins answer through k8s-ha's balancer.
const { id } = JSON.parse(fs.readFileSync('.lab/lab.json', 'utf8'));
const kubectl = ['exec', `${id}-node-1`, 'kubectl', 'get', 'pods'];
process.stdout.write(`\n$ docker ${kubectl.join(' ')}    # kubectl on node-1, through its 127.0.0.1:8443\n`);
const k = spawnSync('docker', kubectl, { stdio: 'inherit' });
if (k.status !== 0) {
  process.stderr.write(`\ndemo stopped: \`docker ${kubectl.join(' ')}\` exited ${k.status}\n`);
  process.exit(k.status ?? 1);
}
process.stdout.write('\nThe lab stays up for you to explore. Remove it with: npx k8s-ha lab down\n');
