/**
 * lb.impl static-pod: the same static nginx image as lb.impl container, run by the node's kubelet
 * from a static pod manifest (/etc/kubernetes/manifests), as kubeadm runs the control plane. k8s-ha
 * writes the manifest and the config; kubelet starts, restarts and stops the pod. The config is read
 * from a host folder mounted read-only, so a config change is a reload (HUP to the pod's nginx
 * master, which the node finds by its listening socket) and never touches the manifest; a new image
 * is a new manifest, which kubelet answers by replacing the pod.
 *
 * What k8s-ha checks of the pod: the processes listening on the port are all in one PID namespace
 * that is not the host's, whose first process is kube-nginx, with the pod's identity and (for the
 * image k8s-ha builds) the very binary of the image; then the runtime's own view, a running container
 * whose first process that is (podRuntimeScript).
 */
import type { Inventory } from '../inventory/schema.js';
import { IMAGE_BINARY } from '../build/image.js';
import { createHash } from 'node:crypto';
import { hostPortOf } from '../util/hostport.js';
import { listenerPids } from '../facts/host.js';
import { quote } from '../util/quote.js';
import { CONTAINER_CONF, CONTAINER_CONF_DIR } from './container.js';

/** The folder kubelet reads static pods from (kubeadm's staticPodPath). */
export const MANIFESTS_DIR = '/etc/kubernetes/manifests';
export const STATIC_POD_MANIFEST = `${MANIFESTS_DIR}/kube-nginx.yaml`;
/**
 * Where a node switching from the static pod to another balancer keeps the manifest until that one
 * is verified: in the same folder (a rename, never a copy kubelet could read half-written), under a
 * name starting with a dot, which kubelet does not read (it reads every other file there), so the
 * pod stops; a rollback renames it back.
 */
export const STATIC_POD_ASIDE = `${MANIFESTS_DIR}/.kube-nginx.yaml.k8s-ha-aside`;
/** Not `kube-nginx`: podman keeps one namespace for pod and container names, and lb.impl container's container is kube-nginx. */
export const STATIC_POD_NAME = 'kube-nginx-lb';
/** The unit that runs static pods: what verify waits for, and whose journal tells about the pod. */
export const KUBELET_UNIT = 'kubelet';
/** The process name of nginx in the image (its executable's file name). */
const COMM = IMAGE_BINARY.slice(IMAGE_BINARY.lastIndexOf('/') + 1);

/**
 * The Pod, as kubelet reads it. hostNetwork (it listens on the node's loopback), system-node-critical
 * (the last a node evicts), the config folder read-only from the host, probes on nginx's own status
 * port (nginx.statusListen). nginx's master runs as root in the container to bind and to raise its
 * workers' file limit; the workers drop to the image's kube-nginx user (uid 65532).
 */
export function renderStaticPod(inv: Inventory, image: string): string {
  const body = renderPodBody(inv, image);
  // The pod's identity, on its nginx's command line: verify tells the pod kubelet runs now from one an
  // earlier manifest made (a binary checksum cannot: lb.image has none, and a probe change keeps it).
  // nginx writes its process title over its environment, but the title repeats the command line.
  const id = createHash('sha256').update(body).digest('hex').slice(0, 16);
  return body.replace(POD_ID_PLACEHOLDER, id);
}

const POD_ID_PLACEHOLDER = '@@POD_ID@@';
/** The name the pod's identity goes by, on nginx's command line (`-g "env K8S_HA_POD=ID;"`). */
export const POD_ID_ENV = 'K8S_HA_POD';

function renderPodBody(inv: Inventory, image: string): string {
  const status = inv.nginx?.statusListen;
  if (!status) throw new Error('lb.impl static-pod needs nginx.statusListen: the pod\'s probes ask nginx\'s /healthz there');
  const { host, port } = hostPortOf(status);
  const probe = (period: number, failures: number) => `      httpGet:
        host: ${JSON.stringify(host)}
        port: ${port}
        path: /healthz
      periodSeconds: ${period}
      timeoutSeconds: 2
      failureThreshold: ${failures}`;
  return `# Managed by k8s-ha: node-local load balancer for kube-apiserver (${inv.lb.listen}).
# The config is ${CONTAINER_CONF} on the host: k8s-ha changes it and reloads nginx in this pod
# (a HUP to its master); a change here (a new image) makes kubelet replace the pod.
apiVersion: v1
kind: Pod
metadata:
  name: ${STATIC_POD_NAME}
  namespace: kube-system
  labels:
    app.kubernetes.io/name: kube-nginx
    app.kubernetes.io/managed-by: k8s-ha
spec:
  hostNetwork: true
  # The node's own resolver: cluster DNS needs the apiserver, which may need this balancer.
  dnsPolicy: Default
  priorityClassName: system-node-critical
  restartPolicy: Always
  terminationGracePeriodSeconds: 15
  containers:
  - name: nginx
    image: ${JSON.stringify(image)}
    imagePullPolicy: ${inv.lb.image ? 'IfNotPresent' : 'Never'}
    # The env directive carries the pod's identity into nginx's command line (its master's title keeps it).
    command: [${JSON.stringify(IMAGE_BINARY)}, "-e", "stderr", "-g", "daemon off; env ${POD_ID_ENV}=${POD_ID_PLACEHOLDER};", "-c", ${JSON.stringify(CONTAINER_CONF)}]
    resources:
      requests:
        cpu: 25m
        memory: 32Mi
    livenessProbe:
${probe(10, 3)}
      initialDelaySeconds: 5
    readinessProbe:
${probe(5, 2)}
    volumeMounts:
    - name: config
      mountPath: ${CONTAINER_CONF_DIR}
      readOnly: true
  volumes:
  - name: config
    hostPath:
      path: ${CONTAINER_CONF_DIR}
      type: Directory
`;
}

/**
 * Shell: the static pod's nginx master, found by the port it listens on: every listener on the port
 * must be in one PID namespace other than the host's, whose PID 1 is kube-nginx. Prints
 * `@@pod ours PID SHA256` (the master's host PID and its executable's sha256, `-` where it cannot be
 * read), `@@pod other PID COMMAND` (a listener outside any such container: another balancer), or
 * `@@pod none` (nothing listens). Reads /proc and `ss`, nothing of any runtime.
 */
export function podMasterScript(listen: string, manifest = STATIC_POD_MANIFEST): string {
  return [
    `command -v ss >/dev/null 2>&1 || { echo "@@pod unknown"; exit 0; }`,
    // The host's PID namespace: this shell's (it runs on the node, not in a container).
    'host=$(readlink /proc/$$/ns/pid 2>/dev/null); ns=; master=',
    // Listeners that overlap this one (on its address, or either side every address), as verify's other checks.
    `for p in $(${listenerPids(listen)}); do`,
    '  n=$(readlink /proc/$p/ns/pid 2>/dev/null)',
    '  if [ -z "$n" ] || [ -z "$host" ] || [ "$n" = "$host" ] || { [ -n "$ns" ] && [ "$n" != "$ns" ]; }; then echo "@@pod other $p $(cat /proc/$p/comm 2>/dev/null)"; exit 0; fi',
    '  ns=$n',
    // NSpid: the PID in each namespace, the container's own last: 1 is the container's first process.
    `  if [ "$(awk '/^NSpid:/{print $NF}' /proc/$p/status 2>/dev/null)" = 1 ] && [ "$(cat /proc/$p/comm 2>/dev/null)" = ${quote(COMM)} ]; then master=$p; fi`,
    'done',
    '[ -n "$ns" ] || { echo "@@pod none"; exit 0; }',
    '[ -n "$master" ] || { echo "@@pod other - no kube-nginx master among the listeners"; exit 0; }',
    'sum=$(sha256sum /proc/$master/exe 2>/dev/null | cut -d " " -f 1)',
    // The pod's identity as its nginx's command line has it, and as the manifest in place says.
    `id=$(tr '\\0' ' ' < /proc/$master/cmdline 2>/dev/null | grep -o '${POD_ID_ENV}=[0-9a-f]*' | head -n 1 | cut -d= -f2)`,
    `want=$(grep -o '${POD_ID_ENV}=[0-9a-f]*' ${quote(manifest)} 2>/dev/null | head -n 1 | cut -d= -f2)`,
    'echo "@@pod ours $master ${sum:--} ${id:--} ${want:--}"',
  ].join('\n');
}

/**
 * Shell put after podMasterScript (which sets `$master` when it reaches its end): the runtime's own
 * view of the pod's nginx, the running container whose first process it is. Prints
 * `@@pod-rt NAME STATE (CLI)`, or `@@pod-rt none (CLI)` when the runtime lists no container with it.
 */
export function podRuntimeScript(runtime: 'containerd' | 'podman' | 'docker'): string {
  const by = {
    containerd: [`ctr -n k8s.io task ls 2>/dev/null | awk -v p="$master" '$2 == p { print $1, $3 }'`, 'ctr -n k8s.io task ls'],
    // podman's own State column reads "Up 5 seconds": ask for running ones only.
    podman: [`podman ps --filter status=running --format '{{.Pid}} {{.Names}}' 2>/dev/null | awk -v p="$master" '$1 == p { print $2, "running" }'`, 'podman ps'],
    docker: [
      `docker ps -q 2>/dev/null | xargs -r docker inspect --format '{{.State.Pid}} {{.Name}} {{.State.Status}}' 2>/dev/null | awk -v p="$master" '$1 == p { sub(/^\//, "", $2); print $2, $3 }'`,
      'docker ps',
    ],
  }[runtime];
  // podman lists no container of CRI-O's (they share only the image storage): on a CRI-O node its
  // silence is no answer.
  const crio = runtime === 'podman' ? ` [ -z "$v" ] && [ -S ${CRIO_SOCKET} ] && v='unseen cri-o';` : '';
  return `v=$(${by[0]} | head -n 1);${crio} echo "@@pod-rt \${v:-none} (${by[1]})"`;
}

/** CRI-O's socket: where it exists, kubelet's containers are CRI-O's, which podman does not list. */
const CRIO_SOCKET = '/var/run/crio/crio.sock';

/**
 * Pure: what podRuntimeScript printed, as a reason verify fails (undefined when the runtime runs it,
 * or is podman on a CRI-O node, which cannot tell).
 */
export function podRuntimeProblem(stdout: string, runtime: string, pid: number): string | undefined {
  const rt = parsePodRuntime(stdout);
  if (!rt) return `${runtime} could not be asked which container runs the pod's nginx (pid ${pid})`;
  if (rt.name === 'unseen') return undefined;
  if (rt.name === 'none') return `${runtime} runs no container whose first process is the pod's nginx (pid ${pid}; ${rt.cli})`;
  if (!/^running$/i.test(rt.state ?? '')) return `${runtime} shows the pod's container ${rt.name} ${rt.state ?? 'in no state'}, not running (${rt.cli})`;
  return undefined;
}

/** Pure: what the runtime said of the pod, in words for verify's summary (undefined when it said nothing of it). */
export function podRuntimeSeen(stdout: string, runtime: string): string | undefined {
  const rt = parsePodRuntime(stdout);
  if (!rt || rt.name === 'none' || !rt.state) return undefined;
  return rt.name === 'unseen' ? `podman lists no container of CRI-O's, which runs it` : `${runtime} runs it as ${rt.name} (${rt.state})`;
}

/** podRuntimeScript's line: the container's name (or none, or unseen), its state, the command asked. */
function parsePodRuntime(stdout: string): { name: string; state?: string; cli: string } | undefined {
  const m = /^@@pod-rt (\S+)(?: (\S+))? \((.*)\)$/m.exec(stdout);
  return m ? { name: m[1]!, ...(m[2] ? { state: m[2] } : {}), cli: m[3]! } : undefined;
}

export type PodMaster =
  | { state: 'ours'; pid: number; sha256?: string; /** The pod's identity on its nginx's command line. */ id?: string; /** The one the manifest in place names. */ want?: string }
  | { state: 'other'; who: string }
  | { state: 'none' }
  | { state: 'unknown' };

/** Pure: what podMasterScript printed. */
export function parsePodMaster(stdout: string): PodMaster {
  const m = /^@@pod (ours|other|none|unknown)(?: (.*))?$/m.exec(stdout);
  if (!m) return { state: 'unknown' };
  if (m[1] === 'ours') {
    const [pid, sum, id, want] = (m[2] ?? '').split(' ');
    const v = (x: string | undefined) => (x && x !== '-' ? x : undefined);
    return { state: 'ours', pid: Number(pid), sha256: v(sum), id: v(id), want: v(want) };
  }
  if (m[1] === 'other') return { state: 'other', who: m[2] ?? '' };
  return { state: m[1] as 'none' | 'unknown' };
}

/** Why the pod is not what verify waits for, or undefined. `sha256`: the image's nginx binary, when k8s-ha built it. */
export function podProblem(p: PodMaster, listen: string, sha256?: string): string | undefined {
  if (p.state === 'unknown') return `who listens on ${listen} cannot be told on this node (no ss): the static pod cannot be verified`;
  if (p.state === 'none') return `nothing listens on ${listen} yet: kubelet has not started the static pod (${STATIC_POD_MANIFEST})`;
  if (p.state === 'other') {
    const [pid, ...what] = p.who.split(' ');
    return pid === '-' ? `${listen}: ${what.join(' ')}` : `${listen} is held by another process (pid ${pid}${what.length ? `, ${what.join(' ')}` : ''}), not by the static pod: it cannot take the port while that runs`;
  }
  if (!p.want) return `${STATIC_POD_MANIFEST} names no ${POD_ID_ENV}: it is not the manifest k8s-ha wrote`;
  if (p.id !== p.want) return `the pod on ${listen} is ${p.id ? `the one of an earlier manifest (${POD_ID_ENV} ${p.id})` : 'not one k8s-ha wrote'}, not the one ${STATIC_POD_MANIFEST} describes (${p.want}): kubelet has not replaced it yet`;
  if (sha256 && p.sha256 && p.sha256 !== sha256) return `the pod on ${listen} runs another nginx binary (sha256 ${p.sha256.slice(0, 12)}), not the image's (${sha256.slice(0, 12)}): kubelet has not replaced the pod yet`;
  return undefined;
}

/** How long a restore waits for kubelet to bring back the pod of the manifest it put back. */
export const POD_BACK_SECONDS = 45;

/**
 * Shell, for a restore that put a static pod's previous manifest back: wait (up to `seconds`) until
 * the pod serving `listen` is the one that manifest describes (kubelet replaces the pod on its own).
 * Prints `@@pod-back yes`, or `@@pod-back no LISTEN` and podMasterScript's last answer.
 */
export function podBackScript(listen: string, manifest = STATIC_POD_MANIFEST, seconds = POD_BACK_SECONDS): string {
  return (
    `i=0; while :; do out=$( ${podMasterScript(listen, manifest)}
); ` +
    `case "$out" in "@@pod ours "*) set -- $out; [ "$5" != - ] && [ "$5" = "$6" ] && { echo "@@pod-back yes"; break; } ;; esac; ` +
    `i=$((i + 1)); if [ $i -ge ${seconds * 2} ]; then echo ${quote(`@@pod-back no ${listen}`)}; echo "$out"; break; fi; sleep 0.5; done`
  );
}

/** Pure: what podBackScript printed, as a rollback's shortcoming (undefined when the pod is back or none was waited for). */
export function podBackProblem(stdout: string): string | undefined {
  const back = podBack(stdout);
  if (back?.back !== false) return undefined;
  return `kubelet has not brought back the pod of the previous manifest within ${POD_BACK_SECONDS} s: ${podProblem(parsePodMaster(stdout), back.listen) ?? 'it does not serve'}`;
}

/** Pure: whether a restore waited for the previous pod (podBackScript's line), and saw it back; undefined when it waited for none. */
export function podBack(stdout: string): { back: true } | { back: false; listen: string } | undefined {
  const m = /^@@pod-back (yes|no)(?: (\S+))?$/m.exec(stdout);
  if (!m) return undefined;
  return m[1] === 'yes' ? { back: true } : { back: false, listen: m[2] ?? '' };
}

/**
 * Shell: reload the static pod's nginx (HUP to its master, found by its socket as above): it re-reads
 * the config from the mounted folder and starts new workers; the old ones finish their connections.
 */
export function podReloadScript(listen: string): string {
  return `out=$( ${podMasterScript(listen)}
); case "$out" in "@@pod ours "*) set -- $out; kill -HUP "$3" ;; *) echo ${quote(`no static pod nginx master listens on ${listen} to reload`)}": $out" >&2; false ;; esac`;
}
