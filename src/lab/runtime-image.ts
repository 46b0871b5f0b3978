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
 * The kubelet stand-in is NOT a kubelet: see KUBELET_STANDIN_SCRIPT and docs/lab.md.
 */
import { CRI_SNAPSHOTTER } from '../facts/host.js';

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

/** The stand-in's containerd side, in POSIX sh and awk like the stand-in (a lab node has no Node.js). */
export const KUBELET_STANDIN_CTR_PATH = '/usr/local/bin/kubelet-standin-ctr';

/**
 * The kubelet stand-in's containerd runner (its unit given a containerd CRI endpoint): `play MANIFEST`
 * runs the pod's first container with `ctr run` in containerd's k8s.io namespace, where kubelet's
 * images are, on the host's network, with the manifest's hostPath volumes bound at their mountPaths
 * (read-only where it says so), and prints the container's ID (the pod's name); `down ID` stops it
 * (SIGTERM, SIGKILL after 15 s) and removes it; `running ID` says whether its task runs; `spec
 * MANIFEST` prints what it reads. It reads the block YAML k8s-ha writes, with `command`/`args` as flow
 * lists of JSON strings: NOT a Pod YAML implementation, and no pause container, no probes, no restart
 * policy (the stand-in plays a pod again whose task ended).
 */
export const KUBELET_STANDIN_CTR_SCRIPT = `#!/bin/sh
# kubelet STAND-IN's containerd runner (k8s-ha lab; not a kubelet, not a CRI client): ctr run / kill / rm.
# Usage: kubelet-standin-ctr play MANIFEST | down ID | running ID
set -u
ctr() { command ctr -n k8s.io "$@"; }
running() { ctr task ls 2>/dev/null | awk -v id="$1" '$1 == id && $3 == "RUNNING" { f = 1 } END { exit !f }'; }
down() {
  if running "$1"; then
    ctr task kill -s SIGTERM "$1" >/dev/null 2>&1
    i=0; while [ $i -lt 150 ] && running "$1"; do sleep 0.1; i=$((i + 1)); done
    if running "$1"; then ctr task kill -s SIGKILL "$1" >/dev/null 2>&1; fi
  fi
  ctr task rm -f "$1" >/dev/null 2>&1; ctr container rm "$1" >/dev/null 2>&1; true
}
# The snapshotter of containerd's CRI plugin, where kubelet's images are unpacked.
snapshotter() {
  s=$(${CRI_SNAPSHOTTER})
  echo "\${s:-overlayfs}"
}
# The manifest as lines: "name NAME", "image IMAGE", "arg WORD" (command, then args; flow lists of
# JSON strings), "mount SRC DST ro|rw" (a hostPath volume at a container's mountPath).
spec() {
  awk '
    function flow(s,   i, c, cur, inq) {
      inq = 0; cur = ""
      for (i = 1; i <= length(s); i++) {
        c = substr(s, i, 1)
        if (inq) {
          if (c == "\\\\") { i++; cur = cur substr(s, i, 1) }
          else if (c == "\\"") { print "arg " cur; cur = ""; inq = 0 }
          else cur = cur c
        } else if (c == "\\"") inq = 1
      }
    }
    function value(s) { sub(/^[A-Za-z]+:[ \\t]*/, "", s); gsub(/"/, "", s); return s }
    /^[ \\t]*(#|$)/ { next }
    {
      match($0, /^ */); indent = RLENGTH
      item = ($0 ~ /^[ \\t]*-[ \\t]+/)
      body = $0; sub(/^[ \\t]*(-[ \\t]+)?/, "", body)
      if (mode != "" && indent <= depth && !item) mode = ""
      if ($0 ~ /^metadata:/) { meta = 1; next }
      if (indent == 0) meta = 0
      if (meta && indent == 2 && body ~ /^name:/ && !named) { print "name " value(body); named = 1 }
      if (body ~ /^image:/ && !img) { print "image " value(body); img = 1 }
      if (body ~ /^command:[ \\t]*\\[/ && cmd == "") { cmd = body; sub(/^command:[ \\t]*/, "", cmd) }
      if (body ~ /^args:[ \\t]*\\[/ && args == "") { args = body; sub(/^args:[ \\t]*/, "", args) }
      if (body ~ /^volumeMounts:[ \\t]*$/) { mode = "m"; depth = indent; next }
      if (body ~ /^volumes:[ \\t]*$/) { mode = "v"; depth = indent; next }
      if (mode == "m") {
        if (item) nm++
        if (body ~ /^name:/) mname[nm] = value(body)
        if (body ~ /^mountPath:/) mpath[nm] = value(body)
        if (body ~ /^readOnly:[ \\t]*true/) mro[nm] = 1
      }
      if (mode == "v") {
        if (item) nv++
        if (body ~ /^name:/) vname[nv] = value(body)
        if (body ~ /^path:/) vpath[nv] = value(body)
      }
    }
    END {
      flow(cmd); flow(args)
      for (i = 1; i <= nm; i++) for (j = 1; j <= nv; j++)
        if (mname[i] == vname[j] && vpath[j] != "" && mpath[i] != "") print "mount " vpath[j] " " mpath[i] " " (mro[i] ? "ro" : "rw")
    }
  ' "$1"
}
case "\${1:-}" in
  running) running "$2"; exit ;;
  down) down "$2"; exit 0 ;;
  spec) spec "$2"; exit ;;
  play) ;;
  *) echo "usage: kubelet-standin-ctr play MANIFEST | down ID | running ID" >&2; exit 2 ;;
esac
s=$(spec "$2")
name=$(echo "$s" | sed -n 's/^name //p')
image=$(echo "$s" | sed -n 's/^image //p')
if [ -z "$name" ] || [ -z "$image" ]; then echo "$2: no metadata.name or image found" >&2; exit 1; fi
# ctr run's arguments: its flags, each mount, the image, the ID, then the command and its args.
# The container's stdout and stderr (nginx's error log) go to a file, as a kubelet's go to /var/log/pods.
mkdir -p /var/log/kubelet-standin
set -- -d --net-host --snapshotter "$(snapshotter)" --log-uri "file:///var/log/kubelet-standin/$name.log"
while IFS= read -r l; do
  case "$l" in "mount "*) set -- "$@" --mount "$(echo "$l" | awk '{ print "type=bind,src=" $2 ",dst=" $3 ",options=rbind:" $4 }')" ;; esac
done <<END
$s
END
set -- "$@" "$image" "$name"
while IFS= read -r l; do
  case "$l" in "arg "*) set -- "$@" "\${l#arg }" ;; esac
done <<END
$s
END
down "$name"
if ! out=$(ctr run "$@" 2>&1); then echo "ctr run: $(echo "$out" | tail -n 1)" >&2; exit 1; fi
i=0; while [ $i -lt 50 ] && ! running "$name"; do sleep 0.1; i=$((i + 1)); done
running "$name" || { echo "ctr run: the task of $name is not running" >&2; exit 1; }
echo "$name"
`;

/**
 * A kubelet STAND-IN in POSIX sh. It runs static pods with podman's own Pod YAML implementation
 * (`podman kube play`), and holds a real client connection (kubectl, client-go) to the apiserver its
 * kubeconfig names, which is all k8s-ha checks of a kubelet. What a real kubelet does and this does not:
 * docs/lab.md, "The kubelet stand-in".
 */
export const KUBELET_STANDIN_SCRIPT = `#!/bin/sh
# kubelet STAND-IN for the k8s-ha lab (not a kubelet): static pods through \`podman kube play\`
# (or \`ctr run\` with a containerd endpoint), and a kubectl watch holding a connection to the server
# its kubeconfig names.
# Usage: kubelet-standin [--kubeconfig FILE] [--pod-manifest-path DIR] [--container-runtime-endpoint URL] [--poll SECONDS]
set -u
kubeconfig=${KUBELET_KUBECONFIG}
manifests=${STATIC_POD_PATH}
endpoint=
poll=1
while [ $# -gt 0 ]; do
  case "$1" in
    --container-runtime-endpoint) endpoint=$2; shift 2 ;;
    --container-runtime-endpoint=*) endpoint=\${1#*=}; shift ;;
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
# Its runtime, as a kubelet's CRI endpoint names it: containerd, or podman (whose image storage CRI-O shares).
# (A pod played on containerd before the endpoint changed is still stopped through ctr.)
ctrrun=${KUBELET_STANDIN_CTR_PATH}
case "$endpoint" in
  *containerd*) rt=containerd
    systemctl is-active -q containerd || systemctl start containerd ;;
  *) rt=podman ;;
esac
# Whether the containerd task of a pod (its .pods line ctr:ID) runs.
ctr_running() { "$ctrrun" running "$1"; }
# Stops what a played manifest started (KEY): podman's pod by its manifest, containerd's task by ID.
stop_pods() {
  if grep -q '^ctr:' "$state/$1.pods" 2>/dev/null; then
    for id in $(sed -n 's/^ctr://p' "$state/$1.pods"); do "$ctrrun" down "$id"; done
  elif [ -e "$state/$1.manifest" ]; then
    podman kube down "$state/$1.manifest" >/dev/null 2>&1
  else true; fi
}

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
  stop_pods "$2"
  if [ "$rt" = containerd ]; then
    if out=$("$ctrrun" play "$copy.new" 2>&1); then
      mv "$copy.new" "$copy"
      echo "$3" > "$state/$2.sum"
      echo "ctr:$out" > "$state/$2.pods"
      rm -f "$state/$2.failed"
      log "$1: started container $out (ctr run, containerd)"
    else
      rm -f "$copy.new" "$state/$2.sum"
      echo "$3 $(date +%s)" > "$state/$2.failed"
      log "$1: ctr run failed, retrying in 10 s: $(echo "$out" | tail -n1)"
    fi
    return
  fi
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
  if stop_pods "$1"; then log "$(cat "$state/$1.path"): removed, pod stopped ($rt)"
  else log "$(cat "$state/$1.path"): removed; stopping its pod failed"; fi
  rm -f "$state/$1".*
}

# A kubelet's node has its pod sandbox image before the first pod (kubeadm pulls it at install):
# podman builds its pause image at the first pod it makes, about 2 s here. Made now, while nothing
# waits for a pod.
if [ "$rt" = podman ] && command -v podman >/dev/null && ! podman image exists "localhost/podman-pause:$(podman version --format '{{.Client.Version}}')-0" 2>/dev/null; then
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

log "watching $manifests (inotify, and every $poll s); runtime $rt; kubeconfig $kubeconfig"
# A restart of this stand-in finds its pods running and leaves them so; a pod that is gone (removed
# by hand, or the node rebooted: /run is empty then anyway) is played again.
for p in "$state"/*.pods; do
  [ -e "$p" ] || continue
  while read -r id; do
    case "$id" in ctr:*) ctr_running "\${id#ctr:}" && continue ;; *) podman pod exists "$id" && continue ;; esac
    { log "$(cat "\${p%.pods}.path"): pod $(echo "$id" | cut -c1-12) is gone, starting it again"; rm -f "\${p%.pods}.sum"; }
  done < "$p"
done
while :; do
  # podman restarts a container that exits (restartPolicy Always); ctr does not: a pod whose task
  # ended is played again.
  for p in "$state"/*.pods; do
    [ -e "$p" ] || continue
    for id in $(sed -n 's/^ctr://p' "$p"); do
      ctr_running "$id" || { log "$(cat "\${p%.pods}.path"): container $id is not running, starting it again"; rm -f "\${p%.pods}.sum"; }
    done
  done
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
/** CRI-O's socket, as kubelet names it. */
export const CRIO_ENDPOINT = 'unix:///var/run/crio/crio.sock';
/** containerd's socket, as kubelet names it. */
export const CONTAINERD_ENDPOINT = 'unix:///run/containerd/containerd.sock';

/** containerd's CRI plugin: the native snapshotter (overlayfs cannot mount in a lab node). */
export const CONTAINERD_CONFIG = `# k8s-ha lab: overlayfs cannot mount in a lab node (no privileges); kubelet's images go to native.
version = 2
[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "native"
`;

export const KUBELET_STANDIN_UNIT = `[Unit]
Description=kubelet STAND-IN (k8s-ha lab: static pods via podman kube play, an apiserver client via kubectl; not a kubelet)
After=network.target
# As kubeadm's kubelet unit: restarted as often as a deploy asks.
StartLimitIntervalSec=0

[Service]
# CRI-O's endpoint: the stand-in runs pods with podman, whose image storage CRI-O shares. A drop-in
# naming containerd's makes it run them with ctr.
ExecStart=${KUBELET_STANDIN_PATH} --kubeconfig ${KUBELET_KUBECONFIG} --pod-manifest-path ${STATIC_POD_PATH} --container-runtime-endpoint ${CRIO_ENDPOINT}
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
COPY containerd.toml /etc/containerd/config.toml
COPY kubelet-standin ${KUBELET_STANDIN_PATH}
COPY kubelet-standin-ctr ${KUBELET_STANDIN_CTR_PATH}
COPY kubelet.service /lib/systemd/system/kubelet.service
RUN chmod 0755 ${KUBELET_STANDIN_PATH} ${KUBELET_STANDIN_CTR_PATH} \\
 && systemctl disable docker.service containerd.service \\
 && systemctl enable docker.socket kubelet.service \\
 && podman --version && docker --version
`;
}

export const runtimeContext = () => ({
  'storage.conf': PODMAN_STORAGE_CONF,
  'daemon.json': DOCKER_DAEMON_JSON,
  'containerd.toml': CONTAINERD_CONFIG,
  'kubelet-standin': KUBELET_STANDIN_SCRIPT,
  'kubelet-standin-ctr': KUBELET_STANDIN_CTR_SCRIPT,
  'kubelet.service': KUBELET_STANDIN_UNIT,
});
