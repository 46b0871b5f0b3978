/**
 * A real Kubernetes client for the lab: Debian's kubectl (kubernetes-client, built on client-go).
 * It is installed on every lab host (the node image) and reads the lab's kubeconfig there, which
 * points at the node-local balancer, 127.0.0.1:8443, as kubelet's does: what kubectl sees on a
 * node is what a node's own clients see. The same binary is copied out of the node image into the
 * lab's bin/ for this machine, where the kubeconfig is used with --server (a master, or a VIP).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import YAML from 'yaml';
import { docker } from './docker.js';
import type { LabPaths } from './files.js';
import { writeFileAtomic } from './state.js';
import { KUBECTL_PATH } from './images.js';
import type { KubectlRunner } from './reflector.js';
import { APISERVER_PORT, LOCAL_LB } from './topology.js';

/** The name the stand-ins' certificates carry and the lab's clients verify, as the inventory's tls.serverName. */
export const LAB_SERVER_NAME = 'kubernetes';

export interface KubeconfigInput {
  /** Where the kubeconfig and this machine's kubectl are, and whose lab it is, for its header. */
  paths: Pick<LabPaths, 'kubeconfig' | 'kubectl'>;
  labId: string;
  caPem: string;
  client: { cert: string; key: string };
  /** The kubeconfig's user (lab-admin), and its first line when it is not the lab's own kubeconfig. */
  user?: string;
  header?: string;
}

const b64 = (pem: string) => Buffer.from(pem).toString('base64');

export function renderKubeconfig(k: KubeconfigInput): string {
  const doc = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [
      {
        name: 'k8s-ha-lab',
        cluster: { server: `https://${LOCAL_LB}`, 'certificate-authority-data': b64(k.caPem), 'tls-server-name': LAB_SERVER_NAME },
      },
    ],
    users: [{ name: k.user ?? 'lab-admin', user: { 'client-certificate-data': b64(k.client.cert), 'client-key-data': b64(k.client.key) } }],
    contexts: [{ name: 'k8s-ha-lab', context: { cluster: 'k8s-ha-lab', user: k.user ?? 'lab-admin', namespace: 'default' } }],
    'current-context': 'k8s-ha-lab',
  };
  if (k.header) return `${k.header}\n${YAML.stringify(doc, { lineWidth: 0 })}`;
  return (
    `# kubeconfig of the k8s-ha lab ${k.labId}, written by \`k8s-ha lab up\`.\n` +
    `# On every lab host it is ~/.kube/config: kubectl there goes through ${LOCAL_LB}, the node-local balancer, as kubelet does.\n` +
    `# From this machine: ${k.paths.kubectl} --kubeconfig ${k.paths.kubeconfig} --server https://MASTER:${APISERVER_PORT} get pods\n` +
    YAML.stringify(doc, { lineWidth: 0 })
  );
}

/** Copy kubectl out of the node image to `kubectl` (the lab's bin/kubectl), once per image. */
export async function ensureKubectl(kubectl: string, nodeImage: string): Promise<void> {
  const stamp = path.join(path.dirname(kubectl), '.kubectl-image');
  if (fs.existsSync(kubectl) && (await fsp.readFile(stamp, 'utf8').catch(() => '')).trim() === nodeImage) return;
  await fsp.mkdir(path.dirname(kubectl), { recursive: true });
  // An image from `docker import` has no command: name one, it never runs.
  const id = (await docker(['create', nodeImage, KUBECTL_PATH], { step: 'copying kubectl out of the node image' })).trim();
  const staged = `${kubectl}.k8s-ha-new`;
  try {
    await docker(['cp', `${id}:${KUBECTL_PATH}`, staged], { step: 'copying kubectl out of the node image' });
  } finally {
    await docker(['rm', id]);
  }
  await fsp.chmod(staged, 0o755);
  await fsp.rename(staged, kubectl);
  await writeFileAtomic(stamp, nodeImage + '\n');
}

/** Run "$@"; when stdin closes, kill it (stdin reaches the reader as fd 3: an async list's own stdin is /dev/null). */
const KILL_ON_EOF = 'exec 3<&0; "$@" </dev/null & k=$!; { read _ <&3; kill $k; } >/dev/null 2>&1 & wait $k';

/**
 * kubectl on a lab host, started with docker exec: it talks to that host's own 127.0.0.1:8443.
 * Killing `docker exec` does not stop what it started, so kubectl is stopped when the exec's stdin closes.
 */
export function kubectlInContainer(container: string): KubectlRunner {
  return (args) => spawn('docker', ['exec', '-i', container, 'sh', '-c', KILL_ON_EOF, 'sh', 'kubectl', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
}

/**
 * This machine's kubectl (the lab's bin/kubectl) with the lab's kubeconfig, toward `server` (a
 * master, a VIP). kubectl drops the kubeconfig's tls-server-name when --server is given: name it again.
 */
export function kubectlToward(kubectl: string, kubeconfig: string, server: string): KubectlRunner {
  const flags = ['--kubeconfig', kubeconfig, '--server', server, '--tls-server-name', LAB_SERVER_NAME];
  return (args) => spawn(kubectl, [...flags, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
}
