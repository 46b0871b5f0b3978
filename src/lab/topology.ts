/**
 * The lab's topology as plain data: one dual-stack network, N node containers that boot
 * real systemd, M masters (hosts like the nodes whose kube-apiserver service
 * is a stand-in), one nginx source mirror and, with `--bastion`, one bastion
 * (a node-like systemd+sshd host to jump through).
 * `lab up` runs exactly these containers, and docker-compose.test.yml is
 * rendered from the same plan (a unit test keeps the committed file equal to it).
 */
import path from 'node:path';

export const MAX_LAB_HOSTS = 200;
/** The Debian release the runtime node image (`lab up --runtime`) is built on. */
export const RUNTIME_SUITE = 'bookworm';
export const APISERVER_PORT = 6443;
export const STANDIN_CONTROL_PORT = 8080;
export const MIRROR_PORT = 80;
/** The node-local balancer's address in the lab's inventory, and where the lab's kubeconfig points. */
export const LOCAL_LB = '127.0.0.1:8443';
/** The lab's kubeconfig, in its directory and on every SSH host. */
export const KUBECONFIG_FILE = 'kubeconfig';
export const HOST_KUBECONFIG = '/etc/k8s-ha-lab/kubeconfig';
/** kube-proxy's kubeconfig, in each node's host folder (seen at /etc/k8s-ha-lab/host/): installed as /var/lib/kube-proxy/kubeconfig. */
export const LAB_KUBE_PROXY_KUBECONFIG = 'kube-proxy.kubeconfig';

/** What `lab master NAME ACTION` can do to a master (see control.ts); here so the CLI can check it without loading the lab. */
export const MASTER_ACTIONS = ['ready', 'unready', 'readyz-flood', 'anonymous-off', 'anonymous-on', 'lag', 'crash', 'recover', 'stop', 'start', 'freeze', 'thaw', 'partition', 'heal', 'down', 'up', 'power-off', 'power-on'] as const;
export type MasterAction = (typeof MASTER_ACTIONS)[number];
/** The longest watch-cache lag `lab master NAME lag MS` sets (10 minutes: the whole window a watch can resume from). */
export const MAX_CACHE_LAG_MS = 600_000;

/**
 * `lab master NAME lag MS`: MS a whole number of milliseconds, 0 to MAX_CACHE_LAG_MS; every other action takes none.
 * Returns the lag, or undefined for another action; throws a message naming the fix.
 */
export function masterActionValue(action: MasterAction, value: string | undefined): number | undefined {
  if (action !== 'lag') {
    if (value !== undefined) throw new Error(`${action} takes no value, got "${value}"`);
    return undefined;
  }
  if (value === undefined || !/^\d{1,6}$/.test(value) || Number(value) > MAX_CACHE_LAG_MS) {
    throw new Error(`lag needs the watch cache's lag in whole milliseconds, 0 (in step) to ${MAX_CACHE_LAG_MS}, e.g. \`lag 2000\`; got ${value === undefined ? 'none' : `"${value}"`}`);
  }
  return Number(value);
}

/** Faults lab.json records, because Docker cannot tell them (a partition) or `lab up` would undo them (a power-off). */
export type MasterFault = 'partitioned' | 'powered-off';

export type LabRole = 'node' | 'master' | 'mirror' | 'bastion';

/** The bastion's service name and host name. */
export const BASTION_SERVICE = 'bastion';
/**
 * sshd settings only the bastion has (its host certificate), kept in its host
 * directory and mounted into sshd_config.d: the node image stays the same for
 * every systemd host, so adding a bastion rebuilds nothing.
 */
export const BASTION_SSHD_CONF = 'sshd-bastion.conf';
/** Where a master's serving certificate, its key and the lab CA are seen inside it (the stand-in reads them there). */
export const MASTER_PKI_DIR = '/etc/k8s-ha-lab/pki';
/** Where the bastion's host certificate is seen inside it (its host directory is mounted there). */
export const BASTION_HOST_CERT_PATH = '/etc/k8s-ha-lab/host/ssh_host_ed25519_key-cert.pub';

export interface LabImages {
  /** systemd + sshd: nodes and the bastion. */
  node: string;
  /** The node image plus Node.js, the stand-in and its kube-apiserver unit: masters. */
  master: string;
  /** Node.js and the stand-in as PID 1, no systemd: the mirror. */
  apiserver: string;
  /** Node images by Debian release, for a lab whose nodes run more than one (`lab up --os`). */
  nodeByOs?: Record<string, string>;
  /** The node image plus podman, docker and the kubelet stand-in (runtime-image.ts): the first `runtime` nodes. */
  runtime?: string;
}

export interface LabPlanInput {
  /** Prefix of every container and of the network, e.g. `k8s-ha-lab-1a2b3c`. */
  id: string;
  nodes: number;
  masters: number;
  /** An IPv4 /16, e.g. `10.210.0.0/16`. */
  subnet: string;
  /** The lab directory as the container engine should see it (absolute for `lab up`, relative in the compose file). */
  dir: string;
  images: LabImages;
  /** Add a bastion host (default: none). */
  bastion?: boolean;
  /** The nodes' Debian releases, in turn: node-1 the first, node-2 the second... (default: the node image's). */
  os?: string[];
  /** How many nodes (node-1 up) run the runtime image: podman, docker and a kubelet stand-in (default none). */
  runtime?: number;
}

export interface LabVolume {
  host: string;
  container: string;
  readOnly: boolean;
}

export interface LabContainer {
  /** Service name, also the container's hostname: node-1, master-1, mirror. */
  service: string;
  role: LabRole;
  /** Container name for `lab up`. */
  name: string;
  address: string;
  /** Its IPv6 address on the same network (labAddress6). */
  address6: string;
  image: string;
  capAdd: string[];
  securityOpt: string[];
  tmpfs: string[];
  /** Join the host's cgroup namespace (systemd containers on cgroup v1 and v2 alike). */
  cgroupnsHost: boolean;
  volumes: LabVolume[];
  env: Record<string, string>;
  command: string[];
}

export interface LabPlan {
  id: string;
  /** IPv4 and IPv6 (a ULA /64 derived from the IPv4 /16, see labSubnet6): every host has both. */
  network: { name: string; subnet: string; gateway: string; subnet6: string; gateway6: string };
  containers: LabContainer[];
}

/** First two octets of a /16, or an error message. */
export function parseSubnet16(subnet: string): { a: number; b: number } | string {
  const m = /^(\d{1,3})\.(\d{1,3})\.0\.0\/16$/.exec(subnet);
  if (!m) return `--subnet must be an IPv4 /16 written as A.B.0.0/16, got "${subnet}"`;
  const a = Number(m[1]);
  const b = Number(m[2]);
  if (a > 255 || b > 255) return `--subnet has an octet above 255: "${subnet}"`;
  return { a, b };
}

/** Fixed addresses: mirror .0.10, bastion .0.20, masters .1.(10+i), nodes .2.(10+i). */
export function labAddress(subnet: string, role: LabRole, index: number): string {
  const s = parseSubnet16(subnet);
  if (typeof s === 'string') throw new Error(s);
  const [third, host] =
    role === 'mirror' ? [0, 10] : role === 'bastion' ? [0, 20] : role === 'master' ? [1, 10 + index] : [2, 10 + index];
  return `${s.a}.${s.b}.${third}.${host}`;
}

/**
 * The lab network's IPv6 /64, a unique local prefix derived from its IPv4 /16 (10.210.0.0/16 gives
 * fd00:6b38:a:d2::/64), so two labs never share one and lab.json needs nothing more to name it.
 */
export function labSubnet6(subnet: string): string {
  const s = parseSubnet16(subnet);
  if (typeof s === 'string') throw new Error(s);
  return `fd00:6b38:${s.a.toString(16)}:${s.b.toString(16)}::/64`;
}

/**
 * A host's IPv6 address: its IPv4 address's last two octets, written as they read (10.210.1.11 is
 * fd00:6b38:a:d2::1:11, the mirror 10.210.0.10 is fd00:6b38:a:d2::10), in canonical form, the form
 * the inventory compares and a user would type.
 */
export function labAddress6(subnet: string, role: LabRole, index: number): string {
  const [, , third, host] = labAddress(subnet, role, index).split('.');
  return canonical6(labSubnet6(subnet).replace(/::\/64$/, `::${third}:${host}`));
}

/** RFC 5952's form (WHATWG URL parsing gives it): fd00:6b38:ac:0::1 is fd00:6b38:ac::1. */
function canonical6(address: string): string {
  return new URL(`http://[${address}]/`).hostname.slice(1, -1);
}

// What a container needs to boot real systemd without --privileged (see docs/lab.md).
const SYSTEMD_CONTAINER = {
  capAdd: ['SYS_ADMIN', 'NET_ADMIN'],
  securityOpt: ['seccomp=unconfined', 'apparmor=unconfined'],
  tmpfs: ['/run', '/run/lock'],
  cgroupnsHost: true,
};

/** Node i's Debian release (1-based), when the lab names them. */
export function nodeOs(os: string[] | undefined, i: number): string | undefined {
  return os?.length ? os[(i - 1) % os.length] : undefined;
}

function nodeImageOf(input: LabPlanInput, i: number): string {
  const os = nodeOs(input.os, i);
  if (i <= (input.runtime ?? 0)) {
    if (os && os !== RUNTIME_SUITE) throw new Error(`node-${i} runs ${os}: the runtime image is built on ${RUNTIME_SUITE} only`);
    if (!input.images.runtime) throw new Error('no runtime node image');
    return input.images.runtime;
  }
  if (!os) return input.images.node;
  const image = input.images.nodeByOs?.[os];
  if (!image) throw new Error(`no node image for ${os}`);
  return image;
}

export function planLab(input: LabPlanInput): LabPlan {
  const s = parseSubnet16(input.subnet);
  if (typeof s === 'string') throw new Error(s);
  const dir = (...parts: string[]) => joinDir(input.dir, ...parts);
  const containers: LabContainer[] = [];

  // Every SSH host boots the same way (real systemd, real sshd, its own host key): a jump through the
  // bastion meets what a user's bastion runs, and a master is a host a deploy could log in to. Only the
  // bastion's sshd also presents a host certificate; only a master runs a kube-apiserver (the stand-in,
  // a unit of its image) and mounts its serving certificate.
  const sshHost = (service: string, role: 'node' | 'bastion' | 'master', index: number, image = role === 'master' ? input.images.master : input.images.node): LabContainer => ({
    service,
    role,
    name: `${input.id}-${service}`,
    address: labAddress(input.subnet, role, index),
    address6: labAddress6(input.subnet, role, index),
    image,
    ...structuredClone(SYSTEMD_CONTAINER),
    volumes: [
      { host: '/sys/fs/cgroup', container: '/sys/fs/cgroup', readOnly: false },
      { host: dir('hosts', service), container: '/etc/k8s-ha-lab/host', readOnly: true },
      { host: dir('ssh', 'authorized_keys'), container: '/etc/k8s-ha-lab/authorized_keys', readOnly: true },
      { host: dir(KUBECONFIG_FILE), container: HOST_KUBECONFIG, readOnly: true },
      ...(role === 'bastion'
        ? [{ host: dir('hosts', service, BASTION_SSHD_CONF), container: '/etc/ssh/sshd_config.d/k8s-ha-lab-bastion.conf', readOnly: true }]
        : []),
      ...(role === 'master' ? [{ host: dir('pki', service), container: MASTER_PKI_DIR, readOnly: true }] : []),
    ],
    env: { container: 'docker' },
    command: ['/lib/systemd/systemd'],
  });
  for (let i = 1; i <= input.masters; i++) containers.push(sshHost(`master-${i}`, 'master', i));
  containers.push({
    service: 'mirror',
    role: 'mirror',
    name: `${input.id}-mirror`,
    address: labAddress(input.subnet, 'mirror', 0),
    address6: labAddress6(input.subnet, 'mirror', 0),
    image: input.images.apiserver,
    capAdd: [],
    securityOpt: [],
    tmpfs: [],
    cgroupnsHost: false,
    volumes: [{ host: dir('mirror'), container: '/srv/mirror', readOnly: true }],
    env: { STANDIN_NAME: 'mirror' },
    command: ['/usr/local/bin/node', '/opt/k8s-ha-lab/standin.js', 'mirror', '/srv/mirror'],
  });
  if (input.bastion) containers.push(sshHost(BASTION_SERVICE, 'bastion', 0));
  for (let i = 1; i <= input.nodes; i++) containers.push(sshHost(`node-${i}`, 'node', i, nodeImageOf(input, i)));
  return {
    id: input.id,
    network: {
      name: input.id,
      subnet: input.subnet,
      gateway: `${s.a}.${s.b}.0.1`,
      subnet6: labSubnet6(input.subnet),
      gateway6: canonical6(labSubnet6(input.subnet).replace(/\/64$/, '1')),
    },
    containers,
  };
}

function joinDir(dir: string, ...parts: string[]): string {
  if (path.isAbsolute(dir)) return path.join(dir, ...parts);
  // Keep compose-style relative paths ("./.lab/...") readable and stable.
  return './' + path.posix.join(dir.replace(/^\.\//, ''), ...parts);
}

/** `docker run` arguments for one container of the plan (after `docker run -d`). */
export function dockerRunArgs(plan: LabPlan, c: LabContainer, labels: Record<string, string>): string[] {
  const args = ['--name', c.name, '--hostname', c.service, '--network', plan.network.name, '--ip', c.address, '--ip6', c.address6];
  for (const [k, v] of Object.entries(labels)) args.push('--label', `${k}=${v}`);
  for (const cap of c.capAdd) args.push('--cap-add', cap);
  for (const opt of c.securityOpt) args.push('--security-opt', opt);
  if (c.cgroupnsHost) args.push('--cgroupns=host');
  for (const t of c.tmpfs) args.push('--tmpfs', t);
  for (const v of c.volumes) args.push('-v', `${v.host}:${v.container}${v.readOnly ? ':ro' : ':rw'}`);
  for (const [k, v] of Object.entries(c.env)) args.push('-e', `${k}=${v}`);
  args.push(c.image, ...c.command);
  return args;
}
