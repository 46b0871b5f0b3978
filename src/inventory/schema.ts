/**
 * The inventory's shape. Unknown keys are errors (a typo must not be ignored);
 * defaults are the node-local balancer's sensible ones. Cross-field rules
 * (duplicates, references, warnings) live in rules.ts.
 */
import net from 'node:net';
import { z } from 'zod';
import { DURATION, durationMs } from '../util/duration.js';
import { parseHostPort } from '../util/hostport.js';

const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

export { DURATION, durationMs };

const name = z
  .string({ error: 'must be a name' })
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'must be a name of letters, digits, ".", "_" or "-" (at most 63)');
const address = z
  .string({ error: 'must be an IP address or host name' })
  .refine((v) => net.isIP(v) !== 0 || HOSTNAME.test(v), 'not an IP address or host name');
const port = z
  .number({ error: 'must be a port number' })
  .int('must be a whole number')
  .min(1, 'must be a port from 1 to 65535')
  .max(65535, 'must be a port from 1 to 65535');
const duration = z.string({ error: 'must be a duration like 30s' }).regex(DURATION, 'must be a duration like 500ms, 30s, 10m or 1h');
const path = z.string({ error: 'must be a file path' }).min(1, 'must not be empty');

export const sshSettings = z.strictObject({
  user: z.string().min(1).optional(),
  port: port.optional(),
  identityFile: path.optional(),
  knownHostsFile: path.optional(),
  strictHostKeyChecking: z.enum(['yes', 'accept-new', 'no']).optional(),
  connectTimeout: duration.optional(),
});

export const master = z.strictObject({
  name,
  address,
  port: port.default(6443),
});

/** Which balancer runs on a node: nginx's stream proxy, our kube-lb, or auto (nginx where it can be built and run, else kube-lb). */
export const IMPLS = ['nginx', 'kube-lb', 'auto'] as const;
export const impl = z.enum(IMPLS, { error: `must be one of ${IMPLS.join(', ')}` });

export const node = z.strictObject({
  name,
  address,
  ssh: sshSettings.optional(),
  /** This node's own choice of balancer, over lb.impl. */
  lb: z.strictObject({ impl }).optional(),
});

export const listen = z
  .string({ error: 'must be ADDRESS:PORT' })
  .refine((v) => {
    const hp = parseHostPort(v);
    return !!hp && net.isIP(hp.host) !== 0;
  }, 'must be IP:PORT, e.g. 127.0.0.1:8443');

export const lb = z.strictObject({
  impl: impl.default('nginx'),
  listen: listen.default('127.0.0.1:8443'),
  balance: z.enum(['least_conn', 'round_robin', 'hash']).default('least_conn'),
  maxFails: z.number().int().min(0).max(1000).default(3),
  failTimeout: duration.default('30s'),
  connectTimeout: duration.default('1s'),
  proxyTimeout: duration.default('10m'),
  prefix: z.string().regex(/^\/[A-Za-z0-9._/-]+$/, 'must be an absolute path of plain characters').default('/opt/k8s/kube-nginx'),
});

/** kube-lb, the balancer k8s-ha ships as one executable: where it lives and how it checks apiservers. */
export const kubeLb = z.strictObject({
  prefix: z.string().regex(/^\/[A-Za-z0-9._/-]+$/, 'must be an absolute path of plain characters').default('/opt/k8s/kube-lb'),
  /** Its /healthz and /metrics (Prometheus): keep it on loopback. */
  admin: listen.default('127.0.0.1:8444'),
  /** Active health checks: HTTPS GET of path on every apiserver, verified with tls.caFile. */
  check: z
    .strictObject({
      path: z.string().startsWith('/', 'must start with /').default('/readyz'),
      interval: duration.default('1s'),
      /** Between checks while a verdict is turning: a failing apiserver is confirmed down this soon. */
      fastInterval: duration.default('250ms'),
      /** A whole check (connect, TLS, answer). A hung apiserver is down after 2 timeouts: keep interval + 2 x timeout <= 3 s. */
      timeout: duration.default('700ms'),
      rise: z.number().int().min(1).max(100).default(2),
      fall: z.number().int().min(1).max(100).default(2),
      /** A client certificate for the checks, as paths on the node (never copied by k8s-ha). */
      clientCertFile: z.string().regex(/^\/\S+$/, 'must be an absolute path on the node').optional(),
      clientKeyFile: z.string().regex(/^\/\S+$/, 'must be an absolute path on the node').optional(),
    })
    .default({ path: '/readyz', interval: '1s', fastInterval: '250ms', timeout: '700ms', rise: 2, fall: 2 }),
  /** A backend marked down: close its connections at once (0s), or let them run this long first. */
  drainTimeout: duration.default('0s'),
  /** On stop (SIGTERM): how long open connections may finish before they are closed. */
  shutdownTimeout: duration.default('1s'),
});

export const nginx = z.strictObject({
  version: z.string().regex(/^\d+\.\d+\.\d+$/, 'must be a version like 1.22.1'),
  sources: z
    .array(z.url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' }))
    .min(1, 'needs at least one URL'),
  sha256: z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex digits'),
});

export const tls = z.strictObject({
  /** CA that signed the apiservers' certificates, for end-to-end checks. */
  caFile: path.optional(),
  /** Name to verify the apiserver certificate against when connecting through the local port. */
  serverName: z.string().optional(),
  clientCertFile: path.optional(),
  clientKeyFile: path.optional(),
  insecureSkipVerify: z.boolean().default(false),
});

export const build = z.strictObject({
  /** `controller` (this machine) or the name of a node, as the seed compiles on its first node. */
  host: z.string().min(1).default('controller'),
  /** Install gcc and make with the build host's package manager when missing. Default: yes on a node, no on the controller. */
  installToolchain: z.boolean().optional(),
});

/** Kubeconfigs that `deploy --repoint-kubeconfigs` points at the local balancer, and the service to restart after. */
export const kubeconfigs = z
  .array(z.strictObject({ path: z.string().regex(/^\/\S+$/, 'must be an absolute path'), service: z.string().regex(/^[A-Za-z0-9@._-]+$/).optional() }))
  .default([
    { path: '/etc/kubernetes/kubelet.kubeconfig', service: 'kubelet' },
    { path: '/etc/kubernetes/kube-proxy.kubeconfig', service: 'kube-proxy' },
  ]);

export const inventorySchema = z.strictObject({
  ssh: sshSettings.default({}),
  masters: z.array(master, { error: 'must be a list of apiservers' }).min(1, 'must name at least one apiserver'),
  nodes: z.array(node, { error: 'must be a list of nodes' }).min(1, 'must name at least one node'),
  lb: lb.default(lb.parse({})),
  /** Required when any node runs nginx (lb.impl nginx or auto). */
  nginx: nginx.optional(),
  kubeLb: kubeLb.default(kubeLb.parse({})),
  tls: tls.default(tls.parse({})),
  build: build.default(build.parse({})),
  kubeconfigs,
});

export type Inventory = z.infer<typeof inventorySchema>;
export type InventoryNode = z.infer<typeof node>;
export type InventoryMaster = z.infer<typeof master>;
export type Impl = z.infer<typeof impl>;

/** The balancer a node asked for: its own lb.impl, else the inventory's. */
export function wantedImpl(inv: Inventory, node: InventoryNode): Impl {
  return node.lb?.impl ?? inv.lb.impl;
}
export type SshSettings = z.infer<typeof sshSettings>;
