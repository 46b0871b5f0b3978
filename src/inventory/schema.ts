/**
 * The inventory's shape. Unknown keys are errors (a typo must not be ignored);
 * defaults are the node-local balancer's sensible ones. Cross-field rules
 * (duplicates, references, collisions, warnings) live in rules.ts.
 */
import net from 'node:net';
import posix from 'node:path/posix';
import { z } from 'zod';
import { parseProxyJump } from '../connect/proxy-jump.js';
import { DURATION, DURATION_EXAMPLES, durationMs, durationProblem, durationRangeProblem, UNIT_MS } from '../util/duration.js';
import { ipv4LiteralProblem, isWildcard } from '../util/hostport.js';
import { count, DEFAULT_MAX_CONNECTIONS, MAX_CONNECTIONS, requestPath } from '../proxy/config.js';
import { nodePathProblem, userNameProblem } from '../util/safe-values.js';

const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

export { DURATION, durationMs };

/** A schema that also runs a pure check: its message, when it has one, is the issue. */
function checked<S extends z.ZodType>(schema: S, problem: (v: z.output<S>) => string | undefined): S {
  return schema.superRefine((v, ctx) => {
    const message = problem(v);
    if (message !== undefined) ctx.addIssue({ code: 'custom', message, input: v });
  }) as S;
}

const name = z
  .string({ error: 'must be a name' })
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'must be a name of letters, digits, ".", "_" or "-" (at most 63)');

/**
 * Why a master's or node's address is not one to dial. IPv6 is written plain (`fd00::1`): brackets
 * belong to ADDRESS:PORT only. A master's address goes into nginx's config and URLs, which cannot
 * carry an IPv6 zone (`%eth0`).
 */
export function addressProblem(v: string, of: 'master' | 'node'): string | undefined {
  const v4 = ipv4LiteralProblem(v);
  if (v4) return v4;
  const bracketed = /^\[([^\]]*)\]$/.exec(v);
  if (bracketed && net.isIPv6(bracketed[1]!)) return `write an IPv6 address without brackets here: ${bracketed[1]} (brackets go only around the address in ADDRESS:PORT)`;
  if (net.isIP(v) === 0) {
    const withPort = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d+)$/.exec(v);
    const host = withPort?.[1] ?? withPort?.[2];
    if (host !== undefined && (net.isIP(host) !== 0 || HOSTNAME.test(host))) {
      return of === 'master'
        ? `has a port: write the address alone (${host}) and the port as port: ${withPort![3]}`
        : `has a port: write the address alone (${host}) and the SSH port as ssh: { port: ${withPort![3]} }`;
    }
    return HOSTNAME.test(v) ? undefined : 'not an IP address or host name';
  }
  if (isWildcard(v)) return `${v} means every address, not one to connect to: write the ${of}'s own address`;
  if (of === 'master' && v.includes('%')) {
    return `has an IPv6 zone (${v.slice(v.indexOf('%'))}), which nginx's config and https:// URLs cannot carry: use the master's global or unique-local address`;
  }
  return undefined;
}

const masterAddress = checked(z.string({ error: 'must be an IP address or host name' }), (v) => addressProblem(v, 'master'));
const nodeAddress = checked(z.string({ error: 'must be an IP address or host name' }), (v) => addressProblem(v, 'node'));
const port = z
  .number({ error: 'must be a port number' })
  .int('must be a whole number')
  .min(1, 'must be a port from 1 to 65535')
  .max(65535, 'must be a port from 1 to 65535');

const MS = UNIT_MS;
/**
 * A duration within bounds chosen per field (see each field). None may exceed 2^31-1 ms, the
 * longest a Node.js timer waits (kube-lb and k8s-ha arm timers with them); durationRangeProblem
 * refuses such bounds.
 */
const duration = (minMs: number, maxMs: number) =>
  checked(z.string({ error: `must be a duration with its unit, like ${DURATION_EXAMPLES}` }), (v) => durationProblem(v) ?? durationRangeProblem(v, { minMs, maxMs }));
/** A file on this machine (the controller): relative to the inventory file; load.ts checks that it is there. */
const path = z.string({ error: 'must be a file path' }).min(1, 'must not be empty');

/** A file on the nodes, written into their scripts and configs: the one node path rule (util/safe-values.ts). */
export const nodePath = (example: string) => checked(z.string({ error: 'must be an absolute path' }), (v) => nodePathProblem(v, example));

/** A login name (ssh.user): it reaches ProxyCommand's %r and the messages; useradd's rule. */
const userName = checked(z.string({ error: 'must be a user name' }), userNameProblem);

/**
 * Why a name to verify the apiservers' certificate against is not a DNS name or IP address. It is
 * written into haproxy's config (check-sni, verifyhost) and kube-lb's: one word, nothing else.
 */
export function serverNameProblem(v: string): string | undefined {
  if (HOSTNAME.test(v) || (net.isIP(v) !== 0 && !v.includes('%'))) return undefined;
  return `${JSON.stringify(v.length > 80 ? v.slice(0, 80) + '...' : v)} is not a DNS name or IP address: write a name the apiservers' certificate carries, e.g. kubernetes or kubernetes.default.svc`;
}

/** parseProxyJump's message, or undefined for `none` and for bastions. */
const proxyJumpProblem = (v: string | string[]) => {
  const r = parseProxyJump(v);
  return typeof r === 'string' && r !== 'none' ? r : undefined;
};

/** A value for ssh.proxyJump, read by the same parser that will dial it; a list is placed at its bad element when one alone is bad. */
function proxyJumpIssues(v: string | string[], ctx: z.core.$RefinementCtx<string | string[]>): void {
  if (Array.isArray(v)) {
    for (const [i, item] of v.entries()) {
      const message = proxyJumpProblem(item);
      if (message !== undefined) return ctx.addIssue({ code: 'custom', path: [i], message, input: item });
    }
  }
  const message = proxyJumpProblem(v);
  if (message !== undefined) ctx.addIssue({ code: 'custom', message, input: v });
}

export const sshSettings = z.strictObject({
  /** A login name by useradd's rule (letters, digits, _ . -, a trailing $): it reaches ProxyCommand's %r. */
  user: userName.optional(),
  port: port.optional(),
  identityFile: path.optional(),
  knownHostsFile: path.optional(),
  strictHostKeyChecking: z.enum(['yes', 'accept-new', 'no']).optional(),
  /** TCP connect and SSH handshake: at least 100ms, at most 10m (a node that needs longer is down for our purposes). */
  connectTimeout: duration(100, 10 * MS.m).optional(),
  /**
   * Bastions to go through, like OpenSSH's ProxyJump: `[user@]host[:port]`, a list (or a
   * comma-separated string) for several hops in order, or `none` to go direct even where
   * ssh_config names a ProxyJump.
   */
  proxyJump: z
    .union([z.string(), z.array(z.string()).min(1, 'needs at least one bastion')], { error: 'must be [user@]host[:port], a list of them, or none' })
    .superRefine(proxyJumpIssues)
    .optional(),
});

export const master = z.strictObject({
  name,
  /** An IPv4 or IPv6 address (plain, `fd00::1`) or a host name that resolves on every node. */
  address: masterAddress,
  port: port.default(6443),
  /** How to log in, when the master is a VIP host (vip.hosts): as for a node, over the inventory's ssh. */
  ssh: sshSettings.optional(),
  /**
   * A control-plane host that runs a kubelet: also a node (the balancer on it, `--repoint-kubeconfigs`
   * pointing its kubelet at its own apiserver), without a second entry under nodes (expand.ts).
   */
  node: z.boolean({ error: 'must be true (this master is also a node) or false' }).optional(),
});

/**
 * Which balancer runs on a node: nginx's stream proxy, our kube-lb, haproxy from the node's own
 * packages (active checks, no compiler), the same nginx as a container under systemd (container)
 * or as a static pod the node's kubelet runs (static-pod),
 * or auto (nginx where it can be built and run, else kube-lb).
 */
export const IMPLS = ['nginx', 'kube-lb', 'haproxy', 'container', 'static-pod', 'auto'] as const;

/**
 * A container image reference as registries and runtimes read it, fully qualified (a registry host
 * first: a short name makes each runtime guess a registry) and pinned (a tag, a digest, or both).
 */
const IMAGE_REF =
  /^((?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::\d+)?\/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)(?::([\w][\w.-]{0,127}))?(?:@(sha256:[a-f0-9]{64}))?$/;

/** Why a value is not a pinned, fully qualified image reference, with the fix. */
export function imageRefProblem(v: string): string | undefined {
  const example = 'registry.example.com/k8s-ha/kube-nginx:1.22.1-0123456789ab';
  const m = IMAGE_REF.exec(v);
  if (!m) return `must be an image reference such as ${example} (lowercase repository, optional :tag and @sha256:digest)`;
  const host = m[1]!.split('/')[0]!;
  if (!m[1]!.includes('/') || !(host.includes('.') || host.includes(':') || host === 'localhost')) return `must name its registry first (${example}): a short name makes each runtime guess a registry`;
  if (!m[2] && !m[3]) return `must be pinned with a :tag or an @sha256: digest, e.g. ${example}`;
  return undefined;
}

/** The repository of an image reference (no tag, no digest): what runtimes list its tags under. */
export function imageRepository(ref: string): string {
  return IMAGE_REF.exec(ref)?.[1] ?? ref;
}

/**
 * The container runtime that runs lb.impl container (podman or docker), or (static-pod) the one
 * kubelet runs pods with, which the image is loaded into (also containerd). auto: for container,
 * podman where the node has it, else docker; for static-pod, the one kubelet's CRI endpoint names.
 */
export const RUNTIMES = ['auto', 'podman', 'docker', 'containerd'] as const;
export const impl = z.enum(IMPLS, { error: `must be one of ${IMPLS.join(', ')}` });

export const node = z.strictObject({
  name,
  /** Where to dial (IPv4, plain IPv6, or a name). Without it, ssh_config's HostName for the name is dialed, else the name itself (as `ssh NAME` would). */
  address: nodeAddress.optional(),
  ssh: sshSettings.optional(),
  /** This node's own choice of balancer, over lb.impl. */
  lb: z.strictObject({ impl }).optional(),
  /**
   * Where --repoint-kubeconfigs points this node's kubeconfigs: its local balancer (the default), or
   * the apiserver of the master named here. For a control-plane host that runs a kubelet: its own
   * apiserver, as kubeadm should have (it leaves it on controlPlaneEndpoint, one host for all).
   */
  repointTo: z.string({ error: 'must be "balancer" or the name of a master' }).optional(),
});

/**
 * Why a listener is not IP:PORT, with the fix. An IPv6 address needs brackets (`[::1]:8443`):
 * unbracketed, `::1:8443` is itself an IPv6 address and could mean either. A name is refused: a
 * balancer binds an address, before and without any resolver. nginx cannot listen on an IPv6 zone.
 */
export function listenProblem(v: string, example: string): string | undefined {
  const bracketed = /^\[([^\]]*)\]:(\d+)$/.exec(v);
  const plain = bracketed ? undefined : /^(.*):(\d+)$/.exec(v);
  const m = bracketed ?? plain;
  const examplePort = example.replace(/^.*:/, '');
  const generic = `must be IP:PORT, e.g. ${example} or [::1]:${examplePort}`;
  // `fd00::1` reads as host `fd00:` and port 1: an address alone, really.
  if (!m || (plain && m[1]!.includes(':') && !net.isIPv6(m[1]!))) {
    if (net.isIP(v) === 0) return generic;
    const ip = net.isIPv6(v) ? `[${v}]` : v;
    return `has no port: write ${ip}:PORT, e.g. ${ip}:${examplePort}`;
  }
  const host = m[1]!;
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return `port ${m[2]} is not from 1 to 65535`;
  if (bracketed) {
    if (net.isIPv4(host)) return `only an IPv6 address goes in brackets: write ${host}:${port}`;
    if (!net.isIPv6(host)) return generic;
  } else if (net.isIPv6(host)) {
    return `an IPv6 address needs brackets before :PORT: write [${host}]:${port}`;
  }
  const v4 = ipv4LiteralProblem(host);
  if (v4) return v4;
  if (net.isIP(host) === 0) return HOSTNAME.test(host) ? `"${host}" is a host name: a balancer listens on an IP address, e.g. ${example}` : generic;
  if (host.includes('%')) return `has an IPv6 zone (${host.slice(host.indexOf('%'))}), which nginx cannot listen on: use an address without one`;
  return undefined;
}

const listen = (example: string) => checked(z.string({ error: 'must be ADDRESS:PORT' }), (v) => listenProblem(v, example));

/**
 * Directories k8s-ha must never take as a prefix: it creates sbin/, conf/ (and logs/) there and
 * replaces the files it installs, so a prefix is a directory of the balancer's own.
 */
const SYSTEM_DIRS = new Set([
  '/', '/bin', '/boot', '/dev', '/etc', '/home', '/lib', '/lib32', '/lib64', '/libx32', '/media', '/mnt', '/opt',
  '/proc', '/root', '/run', '/sbin', '/srv', '/sys', '/tmp', '/usr', '/usr/bin', '/usr/sbin', '/usr/lib',
  '/usr/lib32', '/usr/lib64', '/usr/libexec', '/usr/include', '/usr/share', '/usr/src', '/usr/local',
  '/usr/local/bin', '/usr/local/sbin', '/usr/local/lib', '/usr/local/share', '/usr/local/etc', '/var', '/var/lib',
  '/var/log', '/var/cache', '/var/tmp', '/var/run', '/var/spool', '/var/opt', '/var/lib/k8s-ha', '/etc/systemd',
  '/etc/systemd/system', '/etc/kubernetes', '/etc/kubernetes/pki', '/var/lib/kubelet',
]);
/** Not disk at all: the kernel's files, or a tmpfs emptied at every boot (a balancer that vanishes on reboot). */
const VOLATILE_ROOTS = ['/proc', '/sys', '/dev', '/run', '/var/run'];

/** Why a prefix is not a directory of its own for the balancer, with the fix (`example` is the field's default). */
export function prefixProblem(v: string, example: string): string | undefined {
  if (!v.startsWith('/')) return `must be an absolute path, like ${example}`;
  if (!/^[A-Za-z0-9._/-]+$/.test(v)) return `must be an absolute path of plain characters (letters, digits, ".", "_", "-" and "/"), like ${example}`;
  const plain = posix.normalize(v).replace(/(.)\/+$/, '$1');
  if (plain !== v) return `must be written plainly, without "//", "/./", "/../" or a trailing "/": write ${plain}`;
  if (v === '/') return `is the root directory: k8s-ha puts sbin/ and conf/ in the prefix and owns them; use a directory of its own, like ${example}`;
  if (SYSTEM_DIRS.has(v)) return `${v} is a system directory: k8s-ha puts sbin/ and conf/ in the prefix and owns them; use a directory of its own, like ${example}`;
  const root = VOLATILE_ROOTS.find((r) => v.startsWith(r + '/'));
  if (root) return `is under ${root}, which is ${root === '/proc' || root === '/sys' || root === '/dev' ? 'the kernel\'s, not a disk' : 'emptied at every boot'}: use a directory of its own, like ${example}`;
  return undefined;
}

const prefix = (example: string) => checked(z.string({ error: 'must be an absolute path' }), (v) => prefixProblem(v, example)).default(example);

/**
 * Bounds of the nginx/kube-lb timings, and why:
 * - failTimeout 1s..1h: both the window for maxFails and how long a master stays marked down.
 * - connectTimeout 100ms..75s: nginx's proxy_connect_timeout "cannot usually exceed 75 seconds"
 *   (the kernel's SYN retries give up first).
 * - proxyTimeout 1s..24h: an idle stream is closed after it. client-go's watches sit idle for
 *   5-10 minutes, so longer than an hour is fine for streams; beyond a day only keeps half-open
 *   connections of vanished clients. Still far below 2^31-1 ms (about 24.8 days) for kube-lb's timer.
 */
export const lb = z.strictObject({
  impl: impl.default('nginx'),
  /** IP:PORT, IPv6 in brackets: `[::1]:8443`. */
  listen: listen('127.0.0.1:8443').default('127.0.0.1:8443'),
  balance: z.enum(['least_conn', 'round_robin', 'hash']).default('least_conn'),
  maxFails: count(0, 1000).default(3),
  failTimeout: duration(MS.s, MS.h).default('30s'),
  connectTimeout: duration(100, 75 * MS.s).default('1s'),
  proxyTimeout: duration(MS.s, 24 * MS.h).default('10m'),
  /** A directory of the balancer's own (sbin/, conf/, logs/), not a system directory. */
  prefix: prefix('/opt/k8s/kube-nginx'),
  /** lb.impl container: the runtime that runs the image (auto: podman where the node has it, else docker); static-pod: kubelet's (auto: from its CRI endpoint). */
  runtime: z.enum(RUNTIMES, { error: `must be one of ${RUNTIMES.join(', ')}` }).default('auto'),
  /** lb.impl container: the site's own image (from its registry, pulled by the node's runtime) instead of the one k8s-ha builds. */
  image: checked(z.string({ error: 'must be an image reference' }), imageRefProblem).optional(),
});

/**
 * kube-lb, the balancer k8s-ha ships as one executable: where it lives and how it checks apiservers.
 * Check timings are 100ms..1h: below 100ms the checks alone load every apiserver (each node checks
 * each master); a check's timeout is at most 1m. drainTimeout and shutdownTimeout may be 0s (at
 * once), at most 1h.
 */
export const kubeLb = z.strictObject({
  prefix: prefix('/opt/k8s/kube-lb'),
  /** Its /healthz and /metrics (Prometheus), without authentication: keep it on loopback. */
  admin: listen('127.0.0.1:8444').default('127.0.0.1:8444'),
  /** Active health checks: HTTPS GET of path on every apiserver, verified with tls.caFile. */
  check: z
    .strictObject({
      path: requestPath.default('/readyz'),
      interval: duration(100, MS.h).default('1s'),
      /** Between checks while a verdict is turning: a failing apiserver is confirmed down this soon. */
      fastInterval: duration(100, MS.h).default('250ms'),
      /** A whole check (connect, TLS, answer). A hung apiserver is down after 2 timeouts: keep interval + 2 x timeout <= 3 s. */
      timeout: duration(100, MS.m).default('700ms'),
      rise: count(1, 100).default(2),
      fall: count(1, 100).default(2),
      /** A client certificate for the checks, as paths on the node (never copied by k8s-ha). */
      clientCertFile: nodePath('/etc/kubernetes/pki/apiserver-kubelet-client.crt').optional(),
      clientKeyFile: nodePath('/etc/kubernetes/pki/apiserver-kubelet-client.key').optional(),
    })
    .default({ path: '/readyz', interval: '1s', fastInterval: '250ms', timeout: '700ms', rise: 2, fall: 2 }),
  /** A backend marked down: close its connections at once (0s), or let them run this long first. */
  drainTimeout: duration(0, MS.h).default('0s'),
  /** On stop (SIGTERM): how long open connections may finish before they are closed (kube-lb.service waits for it). */
  shutdownTimeout: duration(0, MS.h).default('1s'),
  /** Client connections kube-lb holds open at most (beyond, new ones are refused); the unit's LimitNOFILE follows it. */
  maxConnections: count(1, MAX_CONNECTIONS).default(DEFAULT_MAX_CONNECTIONS),
  /**
   * Opt-in: kube-lb follows the cluster's apiservers (the kubernetes Service's EndpointSlices), the
   * masters above as seeds; asked with this kubeconfig on the node (kube-proxy's: allowed to list and
   * watch them), which the unit copies as root for kube-lb's user alone.
   */
  discovery: z.strictObject({ kubeconfig: nodePath('/var/lib/kube-proxy/kubeconfig') }).optional(),
});

export const nginx = z.strictObject({
  version: z.string().regex(/^\d+\.\d+\.\d+$/, 'must be a version like 1.22.1'),
  sources: z
    .array(z.url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' }))
    .min(1, 'needs at least one URL'),
  sha256: z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex digits'),
  /**
   * Opt-in: an HTTP port where nginx itself answers /healthz and /stub_status (the build then adds
   * nginx's HTTP core and stub_status module, nothing else). No authentication: keep it on loopback.
   * Absent, the build and the config are exactly as without it.
   */
  statusListen: listen('127.0.0.1:8081').optional(),
});

export const tls = z.strictObject({
  /** CA that signed the apiservers' certificates, for end-to-end checks. */
  caFile: path.optional(),
  /** Name to verify the apiserver certificate against when connecting through the local port. */
  serverName: checked(z.string({ error: 'must be a DNS name or IP address' }), serverNameProblem).optional(),
  clientCertFile: path.optional(),
  clientKeyFile: path.optional(),
  insecureSkipVerify: z.boolean().default(false),
});

/** build.host as a list: the hosts nginx is built on, one per CPU architecture. */
export const buildHostNames = (b: { host: string | string[] }): string[] => (Array.isArray(b.host) ? b.host : [b.host]);

export const build = z.strictObject({
  /**
   * Where nginx is built: `controller` (this machine) or the name of a node, as the seed compiles on
   * its first node; or a list of them, one per CPU architecture (each builds for its own, and each
   * node installs the build of its architecture).
   */
  host: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]).default('controller'),
  /** Install gcc and make (and musl-gcc for a static build) with the build host's package manager when missing. Default: yes on a node, no on the controller. */
  installToolchain: z.boolean().optional(),
  /**
   * static (default): nginx linked statically against musl, one binary for every Linux of the build
   * host's CPU architecture, whatever its libc. native: linked against the build host's glibc, as a
   * distribution's own package is; it runs only where that glibc (or a later one) is.
   */
  link: z.enum(['static', 'native']).default('static'),
  /**
   * The CPU architectures (uname -m) kube-lb is built for; default: the controller's. Each node gets
   * the one its facts name; a node of an architecture not listed fails before anything changes on it.
   */
  architectures: z.array(z.enum(['x86_64', 'aarch64'])).min(1).optional(),
  /**
   * A shared artifact store: a folder (an NFS mount, any path every operator's controller has) that
   * runs read built artifacts from and put theirs into, so every controller deploys the same files
   * and builds each one once. Relative to the inventory file. Or a build node's folder,
   * `[USER@]HOST:/PATH` (HOST a node or master of the inventory, or any host ssh reaches), read and
   * written over SFTP as the login user. Not writable by others.
   */
  store: checked(z.string().min(1), storeProblemOf).optional(),
});

/** build.store as written: a folder here, or `[USER@]HOST:/PATH` on a build node (as scp and rsync read it: a colon before any slash). */
export function parseStore(spec: string): { host?: string; user?: string; path: string } {
  const m = /^(?:([^@/:\s]+)@)?(\[[0-9A-Fa-f:.]+\]|[^@/:\s[\]]+):(.*)$/.exec(spec);
  if (!m) return { path: spec };
  return { ...(m[1] ? { user: m[1] } : {}), host: m[2]!.replace(/^\[(.*)\]$/, '$1'), path: m[3]! };
}

function storeProblemOf(spec: string): string | undefined {
  // An IPv6 address without brackets reads as a host name ending at its first colon.
  const colon = spec.indexOf(':/');
  if (colon > 0 && net.isIPv6(spec.slice(0, colon).replace(/^[^@]*@/, ''))) return `an IPv6 address goes in brackets: [${spec.slice(0, colon).replace(/^[^@]*@/, '')}]${spec.slice(colon)}`;
  const at = parseStore(spec);
  if (!at.host) return /[\x00-\x1f\x7f]/.test(spec) ? 'holds a control character: name the folder plainly' : undefined;
  const example = `${at.host}:/srv/k8s-ha-store`;
  if (net.isIP(at.host) === 0 && !HOSTNAME.test(at.host)) return `${JSON.stringify(at.host)} is not a host name or IP address: write HOST:/PATH, like ${example} (a local folder whose name holds a colon: write it as ./${spec})`;
  if (at.user !== undefined) {
    const p = userNameProblem(at.user);
    if (p) return `its user ${p}`;
  }
  const p = nodePathProblem(at.path, '/srv/k8s-ha-store');
  return p && `the folder on ${at.host} ${p}: write HOST:/PATH, like ${example}`;
}

/**
 * Deadlines of the commands k8s-ha runs on hosts, per kind of step (defaults and why in
 * src/connect/deadlines.ts). Past one, the command's channel is closed and the host fails
 * (`timed out after 60 s in gathering facts`); the others go on. 1s..2h (build: up to 10h).
 */
export const timeouts = z.strictObject({
  command: duration(MS.s, 2 * MS.h).optional(),
  lock: duration(MS.s, 2 * MS.h).optional(),
  facts: duration(MS.s, 2 * MS.h).optional(),
  apply: duration(MS.s, 2 * MS.h).optional(),
  restore: duration(MS.s, 2 * MS.h).optional(),
  repoint: duration(MS.s, 2 * MS.h).optional(),
  build: duration(MS.s, 10 * MS.h).optional(),
});

/**
 * Where kubelet's and kube-proxy's kubeconfigs are, as the usual installs put them: kubeadm's
 * kubelet.conf (its kube-proxy is a DaemonSet: no file on the node), kubeasz's and other binary
 * installs' /etc/kubernetes/*.kubeconfig, "the hard way"'s /var/lib/{kubelet,kube-proxy}/kubeconfig.
 * A path missing on a node is skipped there.
 */
export const DEFAULT_KUBECONFIGS = [
  { path: '/etc/kubernetes/kubelet.kubeconfig', service: 'kubelet' },
  { path: '/etc/kubernetes/kube-proxy.kubeconfig', service: 'kube-proxy' },
  { path: '/etc/kubernetes/kubelet.conf', service: 'kubelet' },
  { path: '/var/lib/kubelet/kubeconfig', service: 'kubelet' },
  { path: '/var/lib/kube-proxy/kubeconfig', service: 'kube-proxy' },
];

/** Kubeconfigs that `deploy --repoint-kubeconfigs` points at the local balancer (or nodes[].repointTo), and the service to restart after. */
export const kubeconfigs = z
  .array(z.strictObject({ path: nodePath('/etc/kubernetes/kubelet.kubeconfig'), service: z.string().regex(/^[A-Za-z0-9@._-]+$/, 'must be a systemd service name such as kubelet (letters, digits, "@", ".", "_" or "-")').optional() }))
  .default(DEFAULT_KUBECONFIGS);

/** An IP address alone: what keepalived holds and VRRP peers write to each other. */
const ipLiteral = checked(z.string({ error: 'must be an IP address' }), (v) => {
  const v4 = ipv4LiteralProblem(v);
  if (v4) return v4;
  if (net.isIP(v) === 0) return /^\[.*\]$/.test(v) ? 'write an IPv6 address without brackets here' : 'must be an IP address (a virtual IP is never a host name)';
  if (isWildcard(v)) return `${v} means every address: write the one address clients will use`;
  if (v.includes('%')) return 'must not carry an IPv6 zone';
  return undefined;
});

/**
 * The endpoint for clients outside the nodes (kubectl, CI, kubeadm join): a virtual IP that
 * keepalived moves between `hosts`, each running haproxy on `port` in front of every master.
 * Bounds: haproxy's idle timeouts 1m..24h (watches, `kubectl logs -f` and exec sit idle for
 * minutes: below an hour they get cut); hardStopAfter 10s..24h.
 */
export const vip = z.strictObject({
  /** The virtual IP clients use: an address of the hosts' network that no host has. */
  address: ipLiteral,
  /** haproxy's frontend on the VIP hosts: not the apiservers' port when the hosts are masters. */
  port: port.default(8443),
  /** Masters or nodes of this inventory, by name: each runs haproxy and keepalived. Two or more for failover. */
  hosts: z.array(name).min(2, 'must name two or more hosts for the VIP to move between'),
  /** The interface keepalived adds the VIP to: found on each host from its route to the VIP when omitted. */
  interface: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,14}$/, 'must be a network interface name such as eth0 (at most 15 characters)')
    .optional(),
  /** VRRP virtual router id, 1..255: unique among keepalived clusters on the same network segment. */
  routerId: z.number({ error: 'must be a number from 1 to 255' }).int('must be a whole number').min(1, 'must be from 1 to 255').max(255, 'must be from 1 to 255').default(51),
  /** haproxy's stats page, Prometheus /metrics and /healthz (its own health, used by keepalived): loopback. */
  statsListen: listen('127.0.0.1:8404').default('127.0.0.1:8404'),
  /** Client, server and tunnel idle timeout: a watch or `kubectl logs -f` idle this long is closed. */
  timeout: duration(MS.m, 24 * MS.h).default('1h'),
  /** After a reload, old haproxy processes close what they still carry after this long. */
  hardStopAfter: duration(10 * MS.s, 24 * MS.h).default('15m'),
});

/**
 * The cluster itself, asked for its control plane (status's drift, deploy --masters-from-cluster):
 * a kubeconfig whose credentials may list the `kubernetes` EndpointSlices in `default` (kube-proxy's
 * or an admin's). Its server is not dialed: the inventory's masters are, in turn.
 */
export const cluster = z.strictObject({
  kubeconfig: path,
});

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
  vip: vip.optional(),
  cluster: cluster.optional(),
  timeouts: timeouts.default({}),
});

export type Inventory = z.infer<typeof inventorySchema>;
export type InventoryNode = z.infer<typeof node>;
export type InventoryMaster = z.infer<typeof master>;
export type Impl = z.infer<typeof impl>;
export type InventoryVip = z.infer<typeof vip>;

/** A host that carries the VIP: a master or node of the inventory, reached over SSH as nodes are. */
export interface VipHost {
  name: string;
  /** Its IP address (rules.ts checks that it has one): its VRRP source and haproxy's own frontend. */
  address: string;
  ssh?: SshSettings;
  role: 'master' | 'node';
}

/** The inventory's VIP hosts, in vip.hosts order; a name found nowhere is left out (rules.ts reports it). */
export function vipHosts(inv: Inventory): VipHost[] {
  const out: VipHost[] = [];
  for (const name of inv.vip?.hosts ?? []) {
    const m = inv.masters.find((x) => x.name === name);
    const n = inv.nodes.find((x) => x.name === name);
    const h = m ?? n;
    if (!h || out.some((x) => x.name === name)) continue;
    out.push({ name, address: h.address ?? name, ssh: h.ssh, role: m ? 'master' : 'node' });
  }
  return out;
}

/** The balancer a node asked for: its own lb.impl, else the inventory's. */
export function wantedImpl(inv: Inventory, node: InventoryNode): Impl {
  return node.lb?.impl ?? inv.lb.impl;
}
export type SshSettings = z.infer<typeof sshSettings>;
