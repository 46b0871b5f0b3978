/**
 * lb.impl container: the static nginx k8s-ha builds, run from its own image (build/image.ts) by a
 * systemd unit with podman or Docker, on the host's network. systemd is the only restarter (the
 * runtime's restart policy stays off), the image is never pulled (it is loaded on the node by the
 * image step), and the config is read-only in the container, from a folder on the host: a folder,
 * not the file, so the rename that replaces the file is seen inside and a reload (HUP) reads it.
 */
import type { Inventory } from '../inventory/schema.js';
import { IMAGE_BINARY } from '../build/image.js';
import { unitWord as u } from './config-words.js';
import { renderNginxConf } from './nginx.js';

export const CONTAINER_SERVICE = 'kube-nginx-container';
/** The container's name in the runtime (`podman ps`, `docker ps`). */
export const CONTAINER_NAME = 'kube-nginx';
/** The config's folder on the host, mounted read-only at the same path in the container. */
export const CONTAINER_CONF_DIR = '/etc/kube-nginx';
export const CONTAINER_CONF = `${CONTAINER_CONF_DIR}/kube-nginx.conf`;

export type Runtime = 'podman' | 'docker' | 'containerd';

/** The runtime kubelet's CRI endpoint names: CRI-O shares podman's image storage, cri-dockerd is Docker's. */
export function endpointRuntime(endpoint: string): Runtime | undefined {
  if (/containerd/.test(endpoint)) return 'containerd';
  if (/crio/.test(endpoint)) return 'podman';
  if (/docker/.test(endpoint)) return 'docker';
  return undefined;
}

/**
 * The runtime a node uses: the one asked for; for auto, with lb.impl container podman where the node
 * has it, else docker; with lb.impl static-pod (`kubelet` given: its CRI endpoint, '' when it names
 * none) the runtime kubelet runs pods with, and for a kubelet that names none its default, containerd,
 * where the node has ctr. Undefined when the node has none of them, or kubelet's is one k8s-ha cannot
 * load an image into.
 */
export function resolveRuntime(want: Inventory['lb']['runtime'], tools: readonly string[], kubelet?: { endpoint: string }): Runtime | undefined {
  if (want !== 'auto') return want;
  if (kubelet?.endpoint) return endpointRuntime(kubelet.endpoint);
  if (kubelet && tools.includes('ctr')) return 'containerd';
  if (tools.includes('podman')) return 'podman';
  if (tools.includes('docker')) return 'docker';
  return undefined;
}

/** nginx's config in the container: the node's own, its PID file in the image's /tmp and its log on stderr. */
export function renderContainerConf(inv: Inventory): string {
  return renderNginxConf(inv, { errorLog: 'stderr', pid: '/tmp/kube-nginx.pid' });
}

/** What runs nginx in the image, and how the config is mounted: the unit's and `nginx -t`'s alike. */
const mount = `-v ${CONTAINER_CONF_DIR}:${CONTAINER_CONF_DIR}:ro`;

/** Shell: the runtime's `nginx -t` of the config at `conf` (a path under CONTAINER_CONF_DIR) inside `image`, before anything is live. */
export function containerCheckCommand(runtime: Exclude<Runtime, 'containerd'>, image: string, conf: string): string {
  return `/usr/bin/${runtime} run --rm --pull=never --net=host ${mount} --entrypoint ${IMAGE_BINARY} ${image} -t -q -e stderr -c ${conf}`;
}

export function renderContainerUnit(inv: Inventory, runtime: Exclude<Runtime, 'containerd'>, image: string): string {
  const head = `# Managed by k8s-ha.
[Unit]
Description=kube-nginx in a container (${runtime}): node-local load balancer for kube-apiserver (${u(inv.lb.listen)})
After=network-online.target${runtime === 'docker' ? ' docker.service\nRequires=docker.service' : ''}
Wants=network-online.target
`;
  // The container inherits the runtime's open-file limit (nginx raises its workers' to 65535):
  // podman's from this unit; Docker's from dockerd.
  const tail = `LimitNOFILE=65536
Restart=always
RestartSec=2
StartLimitInterval=0
TimeoutStartSec=60
TimeoutStopSec=30

[Install]
WantedBy=multi-user.target
`;
  const name = CONTAINER_NAME;
  if (runtime === 'podman') {
    return `${head}
[Service]
# As \`podman generate systemd --new\` writes it: conmon (the container's monitor) is the unit's main
# process and tells systemd when the container runs; the container has its own cgroup (libpod-*.scope).
# systemd is the only restarter: podman's --restart stays off. --pull=never: the image is loaded by k8s-ha.
Type=notify
NotifyAccess=all
Environment=PODMAN_SYSTEMD_UNIT=%n
# A node moved from Docker (lb.runtime): its container of the same name would still hold the port.
ExecStartPre=-/bin/sh -c 'if systemctl is-active -q docker; then /usr/bin/docker rm -f ${name}; fi'
ExecStart=/usr/bin/podman run --name ${name} --replace --rm -d --pull=never --net=host --cgroups=no-conmon --sdnotify=conmon --stop-timeout 10 ${mount} ${u(image)}
# A config change: nginx re-reads the file (the folder is mounted, so the renamed file is seen) and
# starts new workers; the old ones finish their connections (worker_shutdown_timeout).
ExecReload=/usr/bin/podman kill --signal HUP ${name}
ExecStop=/usr/bin/podman stop --ignore -t 10 ${name}
ExecStopPost=/usr/bin/podman rm -f --ignore ${name}
${tail}`;
  }
  return `${head}
[Service]
# The docker client stays attached (the unit's main process) while the container runs; Docker's own
# restart policy stays off (--restart=no), so systemd is the only restarter. --pull=never: the image
# is loaded by k8s-ha.
ExecStartPre=-/usr/bin/docker rm -f ${name}
# A node moved from podman (lb.runtime): its container of the same name would still hold the port.
ExecStartPre=-/bin/sh -c 'if command -v podman >/dev/null; then /usr/bin/podman rm -f --ignore ${name}; fi'
ExecStart=/usr/bin/docker run --name ${name} --rm --restart=no --pull=never --net=host --stop-timeout 10 ${mount} ${u(image)}
# A config change: nginx re-reads the file (the folder is mounted, so the renamed file is seen) and
# starts new workers; the old ones finish their connections (worker_shutdown_timeout).
ExecReload=/usr/bin/docker kill --signal HUP ${name}
ExecStop=/usr/bin/docker stop -t 10 ${name}
${tail}`;
}

/**
 * Shell: the container's state as its runtime sees it, printed as `@@container RUNNING PID IMAGE`
 * (`@@container missing` when the runtime has no such container).
 */
export function containerStateScript(runtime: Runtime, name: string): string {
  // .Config.Image: the reference the container was run with, in podman and Docker alike (the facts read it too).
  return `s=$(timeout 20 /usr/bin/${runtime} inspect --type container --format '{{.State.Running}} {{.State.Pid}} {{.Config.Image}}' ${name} 2>/dev/null) && echo "@@container $s" || echo "@@container missing"`;
}

export interface ContainerState {
  running: boolean;
  pid: number;
  image: string;
}

/** Pure: what containerStateScript printed; undefined for a container the runtime does not have. */
export function parseContainerState(stdout: string): ContainerState | undefined {
  const m = /^@@container (true|false) (\d+) (\S+)$/m.exec(stdout);
  return m ? { running: m[1] === 'true', pid: Number(m[2]), image: m[3]! } : undefined;
}
