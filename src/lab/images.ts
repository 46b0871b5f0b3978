/**
 * The lab's images, each cached under a tag derived from a hash of everything
 * that goes into it, so a second `lab up` builds nothing:
 *   base       Debian bookworm with systemd and openssh-server, no compiler:
 *              `docker build` from debian:bookworm where a registry answers,
 *              else debootstrap + `docker import` (no registry needed).
 *   node       base + kubectl (Debian's kubernetes-client) + a boot unit installing the lab's
 *              host key, authorized key and kubeconfig;
 *              with `lab up --os`, one per Debian release asked for (bullseye beside bookworm).
 *   master     node + Node.js + the stand-in script, run by systemd as the
 *              kube-apiserver service: a master is a host like a node. Built
 *              on the node image, so the node image stays as small as it was
 *              and the two share every layer below.
 *   apiserver  base + Node.js + the stand-in script, run as PID 1 (the mirror).
 *   runtime    node + podman, docker.io and the kubelet stand-in (runtime-image.ts), only for a lab
 *              that asks (`lab up --runtime N`): a lab without it builds and boots as before.
 */
import { createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { EnvironmentError, CommandError } from '../errors.js';
import { onPath, run } from '../util/exec.js';
import { cacheDir, packageRoot } from '../util/paths.js';
import { docker, imageExists } from './docker.js';
import { aptInstall, isDebianLike, isRoot, type Say } from './engine.js';
import { COMPOSE_IMAGES } from './compose.js';
import { MASTER_PKI_DIR, type LabImages } from './topology.js';
import { KUBELET_STANDIN_PATH, KUBELET_STANDIN_SCRIPT, KUBELET_STANDIN_UNIT, runtimeContext, runtimeDockerfile } from './runtime-image.js';

/** The Debian release of every lab host unless `lab up --os` says otherwise. */
export const SUITE = 'bookworm';
/**
 * Releases a lab node may run (`lab up --os`): what the Debian mirror serves for debootstrap, with
 * their glibc: a static nginx must run on both, a native one built on bookworm only on bookworm.
 */
export const LAB_SUITES = { bookworm: 'Debian 12, glibc 2.36', bullseye: 'Debian 11, glibc 2.31', trixie: 'Debian 13, glibc 2.41' } as const;
export type LabSuite = keyof typeof LAB_SUITES;
export const BASE_PACKAGES = [
  'systemd',
  'systemd-sysv',
  'openssh-server',
  'iproute2',
  'dbus',
  'procps',
  'ca-certificates',
  'sudo',
];

const NODE_INIT_SCRIPT = `#!/bin/sh
# Installs the SSH host key and authorized key that \`k8s-ha lab\` mounts read-only
# under /etc/k8s-ha-lab, with the ownership and modes sshd demands.
set -eu
src=/etc/k8s-ha-lab
install -d -m 0700 /root/.ssh
install -m 0600 "$src/authorized_keys" /root/.ssh/authorized_keys
# A non-root login with passwordless sudo, as many clusters use.
install -d -m 0700 -o k8s-admin -g k8s-admin /home/k8s-admin/.ssh
install -m 0600 -o k8s-admin -g k8s-admin "$src/authorized_keys" /home/k8s-admin/.ssh/authorized_keys
# kubectl (Debian's kubernetes-client, a client-go client) goes through this host's local
# balancer, 127.0.0.1:8443, as kubelet does: the lab's kubeconfig says so.
if [ -e "$src/kubeconfig" ]; then
  install -d -m 0700 /root/.kube
  install -m 0600 "$src/kubeconfig" /root/.kube/config
  install -d -m 0700 -o k8s-admin -g k8s-admin /home/k8s-admin/.kube
  install -m 0600 -o k8s-admin -g k8s-admin "$src/kubeconfig" /home/k8s-admin/.kube/config
fi
# kube-proxy's kubeconfig (nodes only), as the hard way puts it: root's alone.
if [ -e "$src/host/kube-proxy.kubeconfig" ]; then
  install -d -m 0755 /var/lib/kube-proxy
  install -m 0600 "$src/host/kube-proxy.kubeconfig" /var/lib/kube-proxy/kubeconfig
fi
for key in "$src"/host/ssh_host_*_key; do
  [ -e "$key" ] || continue
  name=$(basename "$key")
  install -m 0600 "$key" "/etc/ssh/$name"
  install -m 0644 "$key.pub" "/etc/ssh/$name.pub"
done
`;

const NODE_INIT_UNIT = `[Unit]
Description=k8s-ha lab: install this host's SSH host key and the lab's authorized key
Before=ssh.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/k8s-ha-lab-init
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
`;

const NODE_SSHD_CONFIG = `# k8s-ha lab: one host key per node, made by the lab.
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
`;

/** A real Kubernetes client on every lab host: Debian's kubectl, built on client-go. */
export const KUBECTL_PACKAGE = 'kubernetes-client';
export const KUBECTL_PATH = '/usr/bin/kubectl';

function nodeDockerfile(base: string): string {
  return `FROM ${base}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${KUBECTL_PACKAGE} \\
 && rm -rf /var/lib/apt/lists/* \\
 && ${KUBECTL_PATH} version --client >/dev/null
COPY k8s-ha-lab-init /usr/local/sbin/k8s-ha-lab-init
COPY k8s-ha-lab-init.service /etc/systemd/system/k8s-ha-lab-init.service
COPY sshd-k8s-ha-lab.conf /etc/ssh/sshd_config.d/k8s-ha-lab.conf
RUN chmod 0755 /usr/local/sbin/k8s-ha-lab-init \\
 && useradd -m -s /bin/bash k8s-admin \\
 && echo 'k8s-admin ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/k8s-admin && chmod 0440 /etc/sudoers.d/k8s-admin \\
 && rm -f /etc/ssh/ssh_host_* \\
 && : > /etc/machine-id \\
 && systemctl enable k8s-ha-lab-init.service ssh.service
`;
}

/**
 * The apiserver stand-in as a systemd service named like the real one, so
 * `systemctl stop kube-apiserver` stops it the way kube-apiserver stops: a
 * SIGTERM, on which the stand-in turns /readyz red, serves everything for
 * the shutdown delay, then sends GOAWAY, ends its watches and drains its
 * requests (up to the drain bound) before it exits. TimeoutStopSec is well
 * above delay + drain, so systemd never kills it mid-sequence. %l is the host
 * name, which the lab sets to the master's name (master-1...).
 */
export const STANDIN_SHUTDOWN_DELAY_MS = 5000;
export const STANDIN_DRAIN_MS = 10_000;
const STANDIN_STOP_TIMEOUT_S = (STANDIN_SHUTDOWN_DELAY_MS + STANDIN_DRAIN_MS) / 1000 + 15;
export const MASTER_APISERVER_UNIT = `[Unit]
Description=k8s-ha lab: apiserver stand-in (HTTPS :6443, like kube-apiserver)
After=network.target

[Service]
Environment=STANDIN_NAME=%l
EnvironmentFile=-${MASTER_PKI_DIR}/standin.env
ExecStart=/usr/local/bin/node /opt/k8s-ha-lab/standin.js apiserver --shutdown-delay ${STANDIN_SHUTDOWN_DELAY_MS} --drain ${STANDIN_DRAIN_MS}
TimeoutStopSec=${STANDIN_STOP_TIMEOUT_S}
Restart=on-failure
RestartSec=1

[Install]
WantedBy=multi-user.target
`;

/**
 * What a deploy installs on the VIP hosts (the masters, in the lab), from Debian's packages. The
 * master image keeps apt's package lists and these packages' files in apt's cache, downloaded and
 * NOT installed: a deploy still installs them with apt-get as on any host, without fetching them
 * from the mirror each time a lab starts.
 */
export const VIP_PACKAGES = ['haproxy', 'keepalived'];

/**
 * A master: the node image, Node.js and the apiserver stand-in, and the kubelet STAND-IN as on runtime
 * nodes (a control-plane host runs a kubelet too). Without podman it runs no pod; with a kubeconfig
 * (/etc/kubernetes/kubelet.conf, as kubeadm writes it) it holds a client connection to the server
 * that names, which is what repointing a control-plane host's kubelet is checked by.
 */
function masterDockerfile(node: string): string {
  return `FROM ${node}
COPY node /usr/local/bin/node
COPY standin.js /opt/k8s-ha-lab/standin.js
COPY kube-apiserver.service /etc/systemd/system/kube-apiserver.service
COPY kubelet-standin ${KUBELET_STANDIN_PATH}
COPY kubelet.service /lib/systemd/system/kubelet.service
RUN /usr/local/bin/node --version \
 && chmod 0755 ${KUBELET_STANDIN_PATH} \
 && systemctl enable kube-apiserver.service kubelet.service \
 && apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --download-only --no-install-recommends ${VIP_PACKAGES.join(' ')} \
 && ls /var/cache/apt/archives/*.deb >/dev/null
`;
}

function apiserverDockerfile(base: string): string {
  return `FROM ${base}
COPY node /usr/local/bin/node
COPY standin.js /opt/k8s-ha-lab/standin.js
RUN /usr/local/bin/node --version
`;
}

function hash(...parts: (string | Buffer)[]): string {
  const h = createHash('sha256');
  for (const p of parts) h.update(p).update('\0');
  return h.digest('hex').slice(0, 12);
}

const nodeImage = (base: string, say: Say) =>
  ensureBuiltImage(
    'k8s-ha-lab-node',
    nodeDockerfile(base),
    {
      'k8s-ha-lab-init': NODE_INIT_SCRIPT,
      'k8s-ha-lab-init.service': NODE_INIT_UNIT,
      'sshd-k8s-ha-lab.conf': NODE_SSHD_CONFIG,
    },
    say,
  );

/**
 * The lab's images; `suites`: node images for these Debian releases too (`lab up --os`); `runtime`: the
 * runtime node image too (`lab up --runtime N`: podman, docker and the kubelet stand-in), built on the
 * node image only when a lab asks for it, so a lab without it builds and boots as before.
 */
export async function ensureImages(say: Say, suites: readonly LabSuite[] = [], runtime = false, mastersOs: LabSuite = SUITE): Promise<LabImages & { base: string }> {
  const base = await ensureBaseImage(say, SUITE);
  const node = await nodeImage(base, say);
  // The masters run the release asked for (lab up --masters-os): the node image of that release, with the stand-ins.
  const masterBase = mastersOs === SUITE ? node : await nodeImage(await ensureBaseImage(say, mastersOs), say);
  const standin = path.join(packageRoot(), 'dist', 'lab', 'standin.js');
  if (!fs.existsSync(standin)) {
    throw new EnvironmentError(`${standin} is missing`, { hint: 'run `npm run build` (npm ci does it) first' });
  }
  const nodeBinary = await fsp.realpath(process.execPath);
  const standinFiles = {
    node: { copyFrom: nodeBinary, hashWith: `${process.version} ${(await fsp.stat(nodeBinary)).size}` },
    'standin.js': await fsp.readFile(standin, 'utf8'),
  };
  // Everything past the node image depends on it (or on the base) alone, not on each other: built
  // side by side, the runtime image's package downloads overlap the other builds' copies and layers.
  const nodeByOs: Record<string, string> = {};
  const [master, apiserver, runtimeImage] = (await allBuilt([
    ensureBuiltImage(
      'k8s-ha-lab-master',
      masterDockerfile(masterBase),
      { ...standinFiles, 'kube-apiserver.service': MASTER_APISERVER_UNIT, 'kubelet-standin': KUBELET_STANDIN_SCRIPT, 'kubelet.service': KUBELET_STANDIN_UNIT },
      say,
    ),
    ensureBuiltImage('k8s-ha-lab-apiserver', apiserverDockerfile(base), standinFiles, say),
    runtime ? ensureBuiltImage('k8s-ha-lab-runtime', runtimeDockerfile(node), runtimeContext(), say) : Promise.resolve(undefined),
    Promise.all(
      [...new Set(suites)].map(async (suite) => {
        nodeByOs[suite] = suite === SUITE ? node : await nodeImage(await ensureBaseImage(say, suite), say);
      }),
    ),
  ])) as [string, string, string | undefined, unknown];
  // Stable names for docker-compose.test.yml.
  await docker(['tag', node, COMPOSE_IMAGES.node]);
  await docker(['tag', master, COMPOSE_IMAGES.master]);
  await docker(['tag', apiserver, COMPOSE_IMAGES.apiserver]);
  return { base, node, master, apiserver, ...(suites.length ? { nodeByOs } : {}), ...(runtimeImage ? { runtime: runtimeImage } : {}) };
}

/**
 * Promise.all for builds side by side, except that a failed one is reported only once the others
 * have finished: no `docker build` is left running, nor its context left behind, after lab up says why it failed.
 */
async function allBuilt(builds: Promise<unknown>[]): Promise<unknown[]> {
  const settled = await Promise.allSettled(builds);
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed) throw failed.reason;
  return settled.map((s) => (s as PromiseFulfilledResult<unknown>).value);
}

type ContextFile = string | { copyFrom: string; hashWith: string };

async function ensureBuiltImage(repo: string, dockerfile: string, files: Record<string, ContextFile>, say: Say): Promise<string> {
  const parts: string[] = [dockerfile];
  for (const [name, f] of Object.entries(files)) parts.push(name, typeof f === 'string' ? f : f.hashWith);
  const tag = `${repo}:${hash(...parts)}`;
  if (await imageExists(tag)) return tag;
  say(`building image ${tag}`);
  const ctx = await fsp.mkdtemp(path.join(os.tmpdir(), 'k8s-ha-image-'));
  try {
    await fsp.writeFile(path.join(ctx, 'Dockerfile'), dockerfile);
    for (const [name, f] of Object.entries(files)) {
      if (typeof f === 'string') await fsp.writeFile(path.join(ctx, name), f);
      else await fsp.copyFile(f.copyFrom, path.join(ctx, name));
    }
    await docker(['build', '-q', '-t', tag, ctx], { step: `building ${repo}` });
  } finally {
    await fsp.rm(ctx, { recursive: true, force: true });
  }
  return tag;
}

async function ensureBaseImage(say: Say, suite: LabSuite): Promise<string> {
  const tag = `k8s-ha-lab-base:${hash(suite, 'minbase', ...BASE_PACKAGES)}`;
  if (await imageExists(tag)) return tag;
  if (await registryAnswers(suite)) {
    say(`building ${tag} from debian:${suite}`);
    await ensureBuiltImage(
      'k8s-ha-lab-base-registry',
      `FROM debian:${suite}\nRUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${BASE_PACKAGES.join(' ')} && rm -rf /var/lib/apt/lists/*\n`,
      {},
      say,
    ).then((built) => docker(['tag', built, tag]));
    return tag;
  }
  say(`no container registry answers: building ${tag} (Debian ${suite}) with debootstrap (about a minute, once)`);
  await debootstrapImage(tag, suite, say);
  return tag;
}

async function registryAnswers(suite: LabSuite): Promise<boolean> {
  if (await imageExists(`debian:${suite}`)) return true;
  const r = await run('docker', ['pull', '-q', `debian:${suite}`], { timeoutMs: 60_000 });
  return r.code === 0;
}

/** The Debian mirror apt on this machine already uses (never a host name of our own choosing). */
export function configuredDebianMirror(): string | undefined {
  if (process.env.K8S_HA_DEBIAN_MIRROR) return process.env.K8S_HA_DEBIAN_MIRROR;
  const candidates: string[] = [];
  const dir = '/etc/apt/sources.list.d';
  const files = fs.existsSync(dir) ? fs.readdirSync(dir).map((f) => path.join(dir, f)) : [];
  for (const file of ['/etc/apt/sources.list', ...files]) {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    if (file.endsWith('.sources')) {
      for (const stanza of text.split(/\n\s*\n/)) {
        const field = (k: string) => new RegExp(`^${k}:\\s*(.+)$`, 'mi').exec(stanza)?.[1]?.trim();
        if (!/\bdeb\b/.test(field('Types') ?? '') || /security/.test(field('Suites') ?? '')) continue;
        const uri = field('URIs')?.split(/\s+/)[0];
        if (uri && /\/debian\/?$/.test(uri)) candidates.push(uri);
      }
    } else if (file.endsWith('.list')) {
      for (const m of text.matchAll(/^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)/gm)) {
        if (m[1] && !/security/.test(m[2] ?? '') && /\/debian\/?$/.test(m[1])) candidates.push(m[1]);
      }
    }
  }
  return candidates[0];
}

async function debootstrapImage(tag: string, suite: LabSuite, say: Say): Promise<void> {
  if (!isRoot()) {
    throw new EnvironmentError('building the lab image without a registry needs debootstrap, which needs root', {
      hint: 'run `k8s-ha lab up` once as root, or make debian:bookworm pullable',
    });
  }
  if (!(await onPath('debootstrap'))) {
    if (!isDebianLike()) {
      throw new EnvironmentError('no container registry answers and debootstrap is not installed', {
        hint: 'install debootstrap, or make debian:bookworm pullable (docker pull debian:bookworm)',
      });
    }
    say('installing debootstrap');
    await aptInstall(['debootstrap'], say);
  }
  const mirror = configuredDebianMirror();
  if (!mirror) {
    throw new EnvironmentError('no Debian mirror found in /etc/apt sources for debootstrap', {
      hint: 'set K8S_HA_DEBIAN_MIRROR to a Debian mirror URL',
    });
  }
  const rootfs = cacheDir(`rootfs-${tag.split(':')[1]}`);
  await fsp.rm(rootfs, { recursive: true, force: true });
  await fsp.mkdir(rootfs, { recursive: true });
  try {
    let lastStage = '';
    const r = await run(
      'debootstrap',
      ['--variant=minbase', `--include=${BASE_PACKAGES.join(',')}`, suite, rootfs, mirror],
      {
        onOutput: (chunk) => {
          for (const line of chunk.split('\n')) {
            const stage = /^I: (Retrieving|Validating|Unpacking|Configuring|Installing|Extracting)/.exec(line)?.[1];
            if (stage && stage !== lastStage) {
              lastStage = stage;
              say(`debootstrap: ${stage.toLowerCase()} packages`);
            }
          }
        },
      },
    );
    if (r.code !== 0) {
      throw new CommandError('this machine', `debootstrap ${suite}`, r.code, r.signal, r.stdout + r.stderr, {
        step: 'building the lab base image',
      });
    }
    say(`importing ${tag}`);
    await tarImport(rootfs, tag);
  } finally {
    await fsp.rm(rootfs, { recursive: true, force: true });
  }
}

function tarImport(rootfs: string, tag: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const tar = spawn('tar', ['-C', rootfs, '--numeric-owner', '-c', '.'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const imp = spawn('docker', ['import', '-', tag], { stdio: ['pipe', 'pipe', 'pipe'] });
    let err = '';
    tar.stderr.on('data', (b) => (err += b));
    imp.stderr.on('data', (b) => (err += b));
    tar.stdout.pipe(imp.stdin);
    tar.on('error', reject);
    imp.on('error', reject);
    imp.on('close', (code) => {
      if (code === 0) resolve();
      else reject(new CommandError('this machine', `tar -C ${rootfs} -c . | docker import - ${tag}`, code, null, err));
    });
  });
}
