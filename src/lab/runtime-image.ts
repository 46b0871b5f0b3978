/**
 * The runtime node image (`lab up --runtime N`): the node image plus a container runtime and a
 * kubelet STAND-IN, for the balancers k8s-ha runs as a container or as a static pod.
 *
 * What runs inside a lab node (a Docker container booting systemd, cgroup v1 here, no /dev/fuse):
 *   podman 4.3.1 (crun)      works with vfs storage (overlay needs fuse-overlayfs: no /dev/fuse);
 *                            `podman kube play` needs catatonit for its pause container.
 *   docker.io 20.10 (dockerd) works: overlay2 fails ("failed to mount overlay: invalid argument"),
 *                            it falls back to vfs; we say vfs, no bridge and no iptables so it
 *                            leaves the lab's network alone: containers run with --net=host.
 *   containerd 1.6 (ctr)     `ctr run --snapshotter native` works; the default overlayfs
 *                            snapshotter fails ("failed to mount /tmp/containerd-mount...: invalid argument").
 * dockerd and containerd start on first use (docker.socket), so a node that never asks pays nothing at boot.
 *
 * The kubelet stand-in is NOT a kubelet: see KUBELET_STANDIN_SCRIPT and the README's lab section.
 */

/**
 * Debian packages of the runtime image: podman and its pause binary, docker.io (with containerd and
 * runc), and inotifywait, with which the kubelet stand-in sees a manifest move in as kubelet does.
 */
export const RUNTIME_PACKAGES = ['podman', 'catatonit', 'docker.io', 'inotify-tools'];

export const PODMAN_STORAGE_CONF = `# k8s-ha lab: overlay needs fuse-overlayfs and /dev/fuse, which a lab node has not.
[storage]
driver = "vfs"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
`;

/** dockerd: vfs (overlay2 cannot mount here), and no bridge or iptables rules of its own in the lab's network. */
export const DOCKER_DAEMON_JSON = `{
  "storage-driver": "vfs",
  "bridge": "none",
  "iptables": false,
  "ip6tables": false
}
`;

/** awk: block-style YAML without its probe keys (liveness, readiness, startup) and what is indented under them. */
export const STRIP_PROBES_AWK = `
    skip && (/^[[:space:]]*$/ || match($0, /^ */) && RLENGTH > depth) { next }
    { skip = 0 }
    /^ *(- )?(livenessProbe|readinessProbe|startupProbe):/ {
      match($0, /^ */); depth = RLENGTH
      if ($0 ~ /^ *- /) { sub(/(livenessProbe|readinessProbe|startupProbe):.*/, ""); print; depth += 2 }
      skip = 1; next
    }
    { print }
`;

/** Where the stand-in keeps what it played: a copy of each manifest, to take its pods down once the file is gone. */
export const KUBELET_STANDIN_STATE = '/run/kubelet-standin';
export const KUBELET_STANDIN_PATH = '/usr/local/bin/kubelet-standin';
export const STATIC_POD_PATH = '/etc/kubernetes/manifests';
export const KUBELET_KUBECONFIG = '/etc/kubernetes/kubelet.conf';

/**
 * A kubelet STAND-IN in POSIX sh. It runs static pods with podman's own Pod YAML implementation
 * (`podman kube play`), and holds a real client connection (kubectl, client-go) to the apiserver its
 * kubeconfig names, which is all k8s-ha checks of a kubelet. What a real kubelet does and this does not:
 * README, "The kubelet stand-in".
 */
export const KUBELET_STANDIN_SCRIPT = `#!/bin/sh
# kubelet STAND-IN for the k8s-ha lab (not a kubelet): static pods through \`podman kube play\`,
# and a kubectl watch holding a connection to the server its kubeconfig names.
# Usage: kubelet-standin [--kubeconfig FILE] [--pod-manifest-path DIR] [--poll SECONDS]
set -u
kubeconfig=${KUBELET_KUBECONFIG}
manifests=${STATIC_POD_PATH}
poll=1
while [ $# -gt 0 ]; do
  case "$1" in
    --kubeconfig) kubeconfig=$2; shift 2 ;;
    --kubeconfig=*) kubeconfig=\${1#*=}; shift ;;
    --pod-manifest-path) manifests=$2; shift 2 ;;
    --pod-manifest-path=*) manifests=\${1#*=}; shift ;;
    --poll) poll=$2; shift 2 ;;
    *) echo "kubelet stand-in: unknown argument $1" >&2; exit 2 ;;
  esac
done
state=${KUBELET_STANDIN_STATE}
# podman started from a systemd unit (INVOCATION_ID set) leaves conmon in the caller's cgroup, here
# kubelet.service: stopping the stand-in would then stop its pods. Without it conmon gets its own
# scope, and the pods outlive a restart of the stand-in as they outlive a kubelet's.
unset INVOCATION_ID
# Like a kubelet, it does not make the manifest folder: until someone does, there is nothing to run.
mkdir -p "$state"
log() { echo "kubelet stand-in: $*"; }

# The apiserver client, as kubelet is one: restarted whenever it ends (the server went away, the
# kubeconfig changed and the unit was restarted...). Without a kubeconfig, pods only.
client() {
  while :; do
    if [ -s "$kubeconfig" ]; then
      server=$(sed -n 's#^ *server: *##p' "$kubeconfig" | head -n1)
      log "client: watching pods on $server ($kubeconfig)"
      kubectl --kubeconfig "$kubeconfig" get pods --watch >/dev/null 2>"$state/client.err"
      log "client: ended (exit $?): $(tail -n1 "$state/client.err")"
    fi
    sleep 1
  done
}
client &

# Podman turns liveness/readiness/startup probes into healthchecks run INSIDE the container (an
# httpGet becomes \`curl -f URL\`): in an image without a shell or curl they fail, and podman 4.3 then
# stops the pod. A kubelet runs probes itself, from the node: this stand-in runs none, and drops
# them from block-style YAML before podman sees it.
strip_probes() {
  awk '${STRIP_PROBES_AWK}' "$1"
}

play() { # FILE KEY SUM
  copy="$state/$2.manifest"
  case "$1" in
    *.json) cp "$1" "$copy.new" ;;
    *) strip_probes "$1" > "$copy.new" ;;
  esac
  if ! cmp -s "$1" "$copy.new"; then log "$1: probes dropped (a kubelet runs them from the node; this stand-in runs none)"; fi
  if [ -e "$copy" ]; then podman kube down "$copy" >/dev/null 2>&1; fi
  if out=$(podman kube play --replace "$copy.new" 2>&1); then
    mv "$copy.new" "$copy"
    echo "$3" > "$state/$2.sum"
    echo "$out" | sed -n '/^Pod:/{n;p;}' > "$state/$2.pods"
    rm -f "$state/$2.failed"
    log "$1: started pod $(cut -c1-12 "$state/$2.pods" | tr '\\n' ' ')(podman kube play --replace)"
  else
    rm -f "$copy.new" "$state/$2.sum"
    echo "$3 $(date +%s)" > "$state/$2.failed"
    log "$1: podman kube play failed, retrying in 10 s: $(echo "$out" | tail -n1)"
  fi
}

down() { # KEY
  if podman kube down "$state/$1.manifest" >/dev/null 2>&1; then log "$(cat "$state/$1.path"): removed, pod stopped (podman kube down)"
  else log "$(cat "$state/$1.path"): removed; podman kube down failed"; fi
  rm -f "$state/$1".*
}

# A kubelet's node has its pod sandbox image before the first pod (kubeadm pulls it at install):
# podman builds its pause image at the first pod it makes, about 2 s here. Made now, while nothing
# waits for a pod.
if command -v podman >/dev/null && ! podman image exists "localhost/podman-pause:$(podman version --format '{{.Client.Version}}')-0" 2>/dev/null; then
  (podman pod create --name kubelet-standin-sandbox >/dev/null 2>&1; podman pod rm -f kubelet-standin-sandbox >/dev/null 2>&1
   log "pod sandbox image ready") &
fi

# As kubelet does: the folder is read again at once when a file in it changes (inotify), and at least
# every $poll s.
wait_change() {
  if [ -d "$manifests" ] && command -v inotifywait >/dev/null; then
    inotifywait -qq -t "$poll" -e close_write,moved_to,moved_from,create,delete,attrib "$manifests" >/dev/null 2>&1
    return 0
  fi
  sleep "$poll"
}

log "watching $manifests (inotify, and every $poll s); kubeconfig $kubeconfig"
# A restart of this stand-in finds its pods running and leaves them so; a pod that is gone (removed
# by hand, or the node rebooted: /run is empty then anyway) is played again.
for p in "$state"/*.pods; do
  [ -e "$p" ] || continue
  while read -r id; do
    podman pod exists "$id" || { log "$(cat "\${p%.pods}.path"): pod $(echo "$id" | cut -c1-12) is gone, starting it again"; rm -f "\${p%.pods}.sum"; }
  done < "$p"
done
while :; do
  seen=' '
  # As kubelet does: every file in the folder is a pod, whatever its name ends with, except one
  # whose name starts with a dot (which * does not match).
  for f in "$manifests"/*; do
    [ -f "$f" ] || continue
    key=$(echo "$f" | cksum | cut -d' ' -f1)
    seen="$seen$key "
    sum=$(cksum < "$f")
    echo "$f" > "$state/$key.path"
    # Played before (maybe by an earlier run of this stand-in): its pods keep running.
    [ -e "$state/$key.sum" ] && [ "$(cat "$state/$key.sum")" = "$sum" ] && continue
    if [ -e "$state/$key.failed" ]; then
      read -r fsum fa fb fc when < "$state/$key.failed"
      [ "$fsum $fa $fb" = "$sum" ] && [ $(($(date +%s) - when)) -lt 10 ] && continue
    fi
    if [ -e "$state/$key.sum" ]; then log "$f: changed"; else log "$f: new"; fi
    play "$f" "$key" "$sum"
  done
  for s in "$state"/*.manifest; do
    [ -e "$s" ] || continue
    key=$(basename "$s" .manifest)
    case "$seen" in *" $key "*) ;; *) down "$key" ;; esac
  done
  wait_change
done
`;

/**
 * kubelet.service as kubeadm's packages name it. The pods podman starts live in machine.slice
 * (conmon in its own libpod-conmon scope), outside this unit's cgroup: stopping or restarting the
 * stand-in leaves them running, as with a kubelet.
 */
export const KUBELET_STANDIN_UNIT = `[Unit]
Description=kubelet STAND-IN (k8s-ha lab: static pods via podman kube play, an apiserver client via kubectl; not a kubelet)
After=network.target
# As kubeadm's kubelet unit: restarted as often as a deploy asks.
StartLimitIntervalSec=0

[Service]
ExecStart=${KUBELET_STANDIN_PATH} --kubeconfig ${KUBELET_KUBECONFIG} --pod-manifest-path ${STATIC_POD_PATH}
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
`;

export function runtimeDockerfile(node: string): string {
  return `FROM ${node}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${RUNTIME_PACKAGES.join(' ')} \\
 && rm -rf /var/lib/apt/lists/*
COPY storage.conf /etc/containers/storage.conf
COPY daemon.json /etc/docker/daemon.json
COPY kubelet-standin ${KUBELET_STANDIN_PATH}
COPY kubelet.service /lib/systemd/system/kubelet.service
RUN chmod 0755 ${KUBELET_STANDIN_PATH} \\
 && systemctl disable docker.service containerd.service \\
 && systemctl enable docker.socket kubelet.service \\
 && podman --version && docker --version
`;
}

export const runtimeContext = () => ({
  'storage.conf': PODMAN_STORAGE_CONF,
  'daemon.json': DOCKER_DAEMON_JSON,
  'kubelet-standin': KUBELET_STANDIN_SCRIPT,
  'kubelet.service': KUBELET_STANDIN_UNIT,
});
