/**
 * Point kubelet and kube-proxy at the node-local balancer: rewrite `server:` in their kubeconfigs
 * to https://LISTEN (and `tls-server-name:` when the apiservers' certificate needs a name), keep
 * what it replaced for this run only (*.k8s-ha-prev.RUN), restart each service and wait until it is
 * connected through the balancer; put back exactly what it replaced when it does not get there, and
 * keep no copy of the file (nor of its client key) once it does. Pure plan from facts; one script to apply.
 */
import net from 'node:net';
import { LEGACY_SUFFIX, type HostFacts, type KubeconfigFacts } from '../facts/host.js';
import { quote } from '../util/quote.js';
import { formatHostPort, hostPortOf } from '../util/hostport.js';

export interface Kubeconfig {
  path: string;
  service?: string;
}

export interface Repoint {
  path: string;
  /** A server: URL the file names now (the first that differs, else the one it keeps). */
  from: string;
  to: string;
  /** tls-server-name: to set in every cluster; unset leaves existing ones alone. */
  serverName?: string;
  /** Restarted afterwards, when the unit exists on the node. */
  service?: string;
  /** What differs, for the plan's summary. */
  why: string;
  /** Nothing to rewrite: only an earlier version's *.k8s-ha-orig to remove (no restart). */
  forgetOnly?: boolean;
  /** Every tls-server-name: line goes (putting back a file that had none); serverName is then unset. */
  dropServerName?: boolean;
  /**
   * What the file named before this tool first pointed it at the balancer: kept on the node once the
   * repoint is verified (ORIGINS_FILE), for `k8s-ha remove` to point it back. A file already recorded keeps its first record.
   */
  record?: Origin;
}

/** Where a kubeconfig pointed before k8s-ha repointed it: its first server: URL and tls-server-name: ('' for none). */
export interface Origin {
  server: string;
  tlsServerName: string;
}

/**
 * One line per kubeconfig k8s-ha pointed at a balancer: PATH, its original server URL and its original
 * tls-server-name, tab-separated. Server URLs and names only: never a key. Removed with /var/lib/k8s-ha.
 */
export const ORIGINS_FILE = '/var/lib/k8s-ha/kubeconfig-origins';

/** A server URL as a kubeconfig writes one: https://HOST:PORT, nothing a shell or awk would read differently. */
const SERVER_URL = /^https:\/\/(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?\/?$/;
const SERVER_NAME = /^[A-Za-z0-9.-]*$/;

/** Pure: ORIGINS_FILE's lines, by path; lines that are not what k8s-ha writes are left out. */
export function parseOrigins(text: string | undefined): Map<string, Origin> {
  const out = new Map<string, Origin>();
  for (const line of (text ?? '').split('\n')) {
    const [path, server, name, ...rest] = line.split('\t');
    if (!path?.startsWith('/') || server === undefined || !SERVER_URL.test(server) || !SERVER_NAME.test(name ?? '') || rest.length) continue;
    if (!out.has(path)) out.set(path, { server, tlsServerName: name ?? '' });
  }
  return out;
}

/** Whether a URL given on the command line is a server URL a kubeconfig may name (https://HOST:PORT). */
export const isServerUrl = (v: string): boolean => SERVER_URL.test(v);
/** Whether a tls-server-name can be kept as an origin ('' for none). */
export const isOriginName = (v: string): boolean => SERVER_NAME.test(v);

export interface RepointOptions {
  listen: string;
  /** The deploy's run id: names this run's backups, so one run never restores another's. */
  runId: string;
  /** How long each restarted service gets to be active, running and connected to the balancer. */
  timeoutS: number;
  /** Where the originals are recorded (ORIGINS_FILE). */
  originsFile?: string;
}

export interface RepointOutcome {
  ok: boolean;
  /** Repointed kubeconfigs whose original could not be recorded (ORIGINS_FILE). */
  unrecorded?: string[];
  /** `SUBJECT: reason`, the subject a service or a kubeconfig path. */
  failure?: string;
  /** After a failure: whether every original came back and the services restarted on it. */
  restored?: boolean;
  restoreFailure?: string;
}

export { LEGACY_SUFFIX };
/** A run's names beside a kubeconfig (in the shell, FILE may be "$f"), like the deploy's `*.k8s-ha-new.RUN` and `*.k8s-ha-prev.RUN`. */
export const stagedName = (file: string, runId = '$RUN') => `${file}.k8s-ha-new.${runId}`;
export const backupName = (file: string, runId = '$RUN') => `${file}.k8s-ha-prev.${runId}`;
const DEFAULT_TIMEOUT_S = 60;

const SERVER = /^(\s*server:\s*)(\S+)\s*$/gm;
const TLS_SERVER_NAME = /^\s*tls-server-name:\s*(\S+)\s*$/gm;

/** LISTEN written the one way: an IPv6 host bracketed (`[::1]:8443`), whether LISTEN had brackets or not. */
export function hostPort(listen: string): string {
  const { host, port } = hostPortOf(listen);
  return formatHostPort(host, port);
}

export function serverUrl(listen: string): string {
  return `https://${hostPort(listen)}`;
}

const unquote = (v: string) => v.replace(/^["']|["']$/g, '');

/** The server: URLs a kubeconfig names. */
export function serversIn(text: string): string[] {
  return [...text.matchAll(SERVER)].map((m) => unquote(m[2]!));
}

/** The kubeconfig facts for a path: from facts.kubeconfigs, or (callers still asking for texts) from its text. */
function kubeconfigFacts(facts: HostFacts, path: string): KubeconfigFacts | null {
  const k = facts.kubeconfigs?.[path];
  if (k !== undefined) return k;
  const text = facts.texts[path];
  if (text === undefined) return null;
  return { servers: serversIn(text), tlsServerNames: [...text.matchAll(TLS_SERVER_NAME)].map((m) => unquote(m[1]!)), mode: '' };
}

export function planRepoint(kubeconfigs: Kubeconfig[], listen: string, facts: HostFacts, serverName?: string): Repoint[] {
  const to = serverUrl(listen);
  const out: Repoint[] = [];
  for (const k of kubeconfigs) {
    const kc = kubeconfigFacts(facts, k.path);
    // No such file, or no server: line: nothing to point on this node.
    if (!kc || !kc.servers.length) continue;
    const why: string[] = [];
    const other = kc.servers.find((s) => s !== to);
    if (other !== undefined) why.push(`server ${other} -> ${to}`);
    const renames = !!serverName && (kc.tlsServerNames.length < kc.servers.length || kc.tlsServerNames.some((n) => n !== serverName));
    if (renames) {
      const now = kc.tlsServerNames.find((n) => n !== serverName);
      why.push(`tls-server-name ${now ?? '(none)'} -> ${serverName}`);
    }
    if (!why.length) {
      // Pointed already, with copies of the key beside it: an earlier version's, kept for good, or
      // those of a run killed before its cleanup. They go; the file and its service are left alone.
      const copies = [
        ...(kc.legacyBackup ? [`${k.path}${LEGACY_SUFFIX}, the copy an earlier version kept`] : []),
        ...(kc.leftovers?.length ? [`${kc.leftovers.join(', ')}, left by an interrupted run`] : []),
      ];
      if (copies.length) out.push({ path: k.path, from: to, to, why: `remove ${copies.join('; ')}`, forgetOnly: true });
      continue;
    }
    const unit = k.service ? `${k.service}.service` : undefined;
    const exists = unit ? facts.units[unit] && facts.units[unit]!.loadState !== 'not-found' : false;
    out.push({
      path: k.path,
      from: other ?? to,
      to,
      // Names already right are left where they are: the file changes in its server: lines alone.
      ...(renames ? { serverName } : {}),
      service: exists ? k.service : undefined,
      why: why.join('; '),
    });
  }
  return out;
}

export function units(kubeconfigs: Kubeconfig[]): string[] {
  return kubeconfigs.filter((k) => k.service).map((k) => `${k.service}.service`);
}

/*
 * The node side. Plain POSIX sh and awk (mawk, gawk, busybox): minimal Debian and RHEL have no yq
 * or python. Values reach awk through the environment, not -v, which would expand backslashes.
 */

/** Every server: line gets URL; with NAME, each one is followed by tls-server-name: NAME at its indentation, older ones dropped. */
const AWK_REWRITE = `BEGIN { to = ENVIRON["K8S_HA_TO"]; name = ENVIRON["K8S_HA_NAME"]; drop = ENVIRON["K8S_HA_DROP"] }
(name != "" || drop != "") && /^[ \\t]*tls-server-name:/ { next }
/^[ \\t]*server:/ {
  match($0, /^[ \\t]*server:[ \\t]*/); print substr($0, 1, RLENGTH) to
  if (name != "") { match($0, /^[ \\t]*/); print substr($0, 1, RLENGTH) "tls-server-name: " name }
  next
}
{ print }`;

/** Fails unless every server: is URL and, with NAME, each has its tls-server-name: NAME (with DROP, none has one). */
const AWK_CHECK = `BEGIN { to = ENVIRON["K8S_HA_TO"]; name = ENVIRON["K8S_HA_NAME"]; drop = ENVIRON["K8S_HA_DROP"] }
/^[ \\t]*server:/ { n++; v = $0; sub(/^[ \\t]*server:[ \\t]*/, "", v); if (v != to) bad = 1 }
/^[ \\t]*tls-server-name:/ { t++; v = $0; sub(/^[ \\t]*tls-server-name:[ \\t]*/, "", v); if (name != "" && v != name) bad = 1 }
END { exit (n == 0 || bad || (name != "" && t != n) || (drop != "" && t > 0)) }`;

/*
 * rewrite_kubeconfig PATH URL NAME [DROP], in the script's own shell (not a $(...) subshell): it sets $why
 * on failure and $kept to the file whose backup it made. A symlinked kubeconfig is resolved once
 * (readlink -f) and its target rewritten, as kubelet reads it; the link stays. Nothing is written
 * through a name another process could have made: the staged copy is a fresh mktemp name beside the
 * file (cp -p onto it, then `>`, keep its mode and owner), and the backup is a hard link made with
 * ln, which fails on any name already there, symlink or not. The backup is the replaced file itself,
 * so putting it back with mv restores exactly it: content, mode, owner and labels.
 */
const REWRITE_FUNCTION = `rewrite_kubeconfig() {
  kept=''
  [ -f "$1" ] || { why="$1 is missing"; return 1; }
  f=$(readlink -f -- "$1") && [ -f "$f" ] || { why="cannot resolve $1"; return 1; }
  t=$(mktemp "${stagedName('$f')}.XXXXXX" 2>&1) || { why="cannot stage $f: $t"; return 1; }
  if ! err=$(cp -p -- "$f" "$t" 2>&1); then rm -f -- "$t"; why="cannot stage $f: $err"; return 1; fi
  if ! err=$(K8S_HA_TO=$2 K8S_HA_NAME=$3 K8S_HA_DROP=\${4:-} awk ${quote(AWK_REWRITE)} "$f" 2>&1 > "$t"); then rm -f -- "$t"; why="cannot rewrite $1: $err"; return 1; fi
  if ! K8S_HA_TO=$2 K8S_HA_NAME=$3 K8S_HA_DROP=\${4:-} awk ${quote(AWK_CHECK)} "$t"; then rm -f -- "$t"; why="the rewritten $1 does not name server $2 throughout"; return 1; fi
  if ! err=$(ln -- "$f" "${backupName('$f')}" 2>&1); then rm -f -- "$t"; why="cannot keep $f as ${backupName('$f')}: $err"; return 1; fi
  kept=$f
  if ! err=$(mv -f -- "$t" "$f" 2>&1); then rm -f -- "$t"; why="cannot move the rewritten $1 into place: $err"; return 1; fi
}`;

/** restore_file KEPT: the file this run replaced back in place (nothing when it replaced none). */
const RESTORE_FUNCTION = `restore_file() {
  [ -n "$1" ] || return 0
  if [ "${backupName('$1')}" -ef "$1" ]; then rm -f -- "${backupName('$1')}"; else mv -f -- "${backupName('$1')}" "$1"; fi
}`;

/**
 * forget_file KEPT PATH, once verified: this run's backup goes, and every copy of the key left beside
 * the file by earlier versions or by runs killed before their cleanup (this run holds the node's
 * lock, so no other run is using them); no copy of the key stays.
 */
const FORGET_FUNCTION = `forget_file() {
  if [ -n "$1" ]; then rm -f -- "${backupName('$1')}"; fi
  rm -f -- "$2${LEGACY_SUFFIX}"
  real=$(readlink -f -- "$2") || return 0
  for x in "${backupName('$real', '')}"* "${stagedName('$real', '')}"*; do
    if [ -e "$x" ] || [ -h "$x" ]; then rm -f -- "$x"; fi
  done
}`;

/**
 * record_origin PATH SERVER NAME: PATH's original server and tls-server-name, kept in ORIGINS_FILE
 * unless a line for PATH is there already (the first record is the original). Server URLs and names
 * only; the folder is root's alone.
 */
const RECORD_FUNCTION = `record_origin() {
  [ -d "\${ORIGINS%/*}" ] || mkdir -p -m 0700 "\${ORIGINS%/*}" || return 1
  if [ -f "$ORIGINS" ] && cut -f1 "$ORIGINS" | grep -qxF -- "$1"; then return 0; fi
  printf '%s\\t%s\\t%s\\n' "$1" "$2" "$3" >> "$ORIGINS"
}`;

/*
 * connected SERVICE: a process of the unit holds an established TCP connection to $LISTEN.
 * ControlGroup= is stripped rather than read with --value, which systemd 219 (RHEL 7) lacks; the
 * unit's cgroup.procs is under the unified tree (v2, hybrid) or the systemd one (v1). Without a
 * working ss, the unit's socket inodes are matched against /proc/net/tcp{,6} ($PROC_ADDRS).
 */
const CONNECTED_FUNCTION = `connected() {
  cg=$(systemctl show -p ControlGroup "$1" 2>/dev/null); cg=\${cg#ControlGroup=}
  [ -n "$cg" ] || return 1
  pids=''
  for root in /sys/fs/cgroup /sys/fs/cgroup/unified /sys/fs/cgroup/systemd; do
    if [ -r "$root$cg/cgroup.procs" ]; then pids=$(cat "$root$cg/cgroup.procs" 2>/dev/null); break; fi
  done
  [ -n "$pids" ] || return 1
  if out=$(ss -Htnp state established dst "$LISTEN" 2>/dev/null); then
    for p in $pids; do case "$out" in *"pid=$p,"*) return 0 ;; esac; done
    return 1
  fi
  inodes=$(K8S_HA_ADDRS=" $PROC_ADDRS " awk '$4 == "01" && index(ENVIRON["K8S_HA_ADDRS"], " " $3 " ") { print $10 }' /proc/net/tcp /proc/net/tcp6 2>/dev/null)
  [ -n "$inodes" ] || return 1
  socks=" $(for p in $pids; do ls -l "/proc/$p/fd" 2>/dev/null; done | sed -n 's/.*socket:\\[\\([0-9]*\\)\\].*/\\1/p' | tr '\\n' ' ') "
  for i in $inodes; do case "$socks" in *" $i "*) return 0 ;; esac; done
  return 1
}`;

/** wait_ready SERVICE: active, running and connected within $TIMEOUT seconds; else $why says which not. */
const WAIT_FUNCTION = `wait_ready() {
  end=$(( $(date +%s) + TIMEOUT ))
  while :; do
    st=$(systemctl show -p ActiveState -p SubState "$1" 2>/dev/null | sort | tr '\\n' ' ')
    if [ "$st" = 'ActiveState=active SubState=running ' ]; then
      connected "$1" && return 0
      why="no established connection to $LISTEN after \${TIMEOUT}s"
    else
      why="not active and running after \${TIMEOUT}s ($st)"
    fi
    [ "$(date +%s)" -lt "$end" ] || return 1
    sleep 1
  done
}`;

/** Standalone: rewrite one kubeconfig as repointScript does, its backup left for the caller (exit 0, silent, on success). */
export function rewriteCommands(path: string, to: string, serverName: string | undefined, runId: string): string {
  return `RUN=${quote(runId)}\n${REWRITE_FUNCTION}\nrewrite_kubeconfig ${quote(path)} ${quote(to)} ${quote(serverName ?? '')} || { echo "$why"; exit 1; }\n`;
}

/** How a TCP peer appears in /proc/net/tcp{,6}: in both byte orders, IPv4 also as v4-mapped IPv6. */
export function procNetAddresses(listen: string): string[] {
  const { host, port } = hostPortOf(listen);
  // A host name (a server URL being put back): only ss, which resolves it, can tell.
  if (!net.isIP(host)) return [];
  const hex = (bytes: number[]) => bytes.map((b) => b.toString(16).padStart(2, '0')).join('').toUpperCase();
  // The kernel prints each 32-bit word in host order: reversed within each word on little-endian.
  const little = (bytes: number[]) => bytes.map((_, i) => bytes[i - (i % 4) + 3 - (i % 4)]!);
  const forms = net.isIPv4(host) ? [ipv4Bytes(host), [...Array(10).fill(0), 0xff, 0xff, ...ipv4Bytes(host)]] : [ipv6Bytes(host)];
  const p = port.toString(16).padStart(4, '0').toUpperCase();
  return [...new Set(forms.flatMap((b) => [little(b), b]).map((b) => `${hex(b)}:${p}`))];
}

const ipv4Bytes = (h: string) => h.split('.').map(Number);

function ipv6Bytes(h: string): number[] {
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(h);
  if (v4) {
    const [a, b, c, d] = ipv4Bytes(v4[1]!);
    h = h.slice(0, -v4[1]!.length) + `${((a! << 8) | b!).toString(16)}:${((c! << 8) | d!).toString(16)}`;
  }
  const [head, tail] = h.split('::') as [string, string | undefined];
  const words = (s: string | undefined) => (s ? s.split(':').map((w) => parseInt(w, 16)) : []);
  const hw = words(head);
  const tw = words(tail);
  const all = tail === undefined ? hw : [...hw, ...Array(8 - hw.length - tw.length).fill(0), ...tw];
  return all.flatMap((w) => [w >> 8, w & 0xff]);
}

/**
 * Rewrite each kubeconfig, restart each service that exists, wait for each to be active, running
 * and connected to the balancer. Prints @@repointed once the backups are gone; or @@repoint-failed
 * SUBJECT: reason, puts back every file this run replaced (from its *.k8s-ha-prev.RUN), restarts
 * what it restarted, and prints @@restored or @@restore-failed reason. No `set -e`: every failure is
 * handled, so the undo always runs; SIGHUP and SIGPIPE are ignored, so a controller lost on the way
 * cannot stop it between a rewrite and its undo (or leave a backup of the key behind).
 */
export function repointScript(changes: Repoint[], opts: Partial<RepointOptions> & { runId: string }): string {
  const listen = opts.listen ?? changes[0]?.to.replace(/^https:\/\//, '') ?? '127.0.0.1:8443';
  const timeoutS = Math.max(1, Math.floor(opts.timeoutS ?? DEFAULT_TIMEOUT_S));
  const rewrites = changes.filter((c) => !c.forgetOnly);
  const services = [...new Set(rewrites.flatMap((c) => (c.service ? [c.service] : [])))];
  const flag = (i: number) => `restarted_${i}`;
  const kept = (i: number) => `kept_${i}`;
  const lines = [
    'set -u',
    "trap '' HUP PIPE",
    `RUN=${quote(opts.runId)}`,
    `LISTEN=${quote(hostPort(listen))}`,
    `TIMEOUT=${quote(String(timeoutS))}`,
    `PROC_ADDRS=${quote(procNetAddresses(listen).join(' '))}`,
    `ORIGINS=${quote(opts.originsFile ?? ORIGINS_FILE)}`,
    "why=''",
    ...services.map((_, i) => `${flag(i)}=0`),
    ...rewrites.map((_, i) => `${kept(i)}=''`),
    REWRITE_FUNCTION,
    RESTORE_FUNCTION,
    FORGET_FUNCTION,
    RECORD_FUNCTION,
    CONNECTED_FUNCTION,
    WAIT_FUNCTION,
    'restore() {',
    "  bad=''",
    ...rewrites.map((c, i) => `  restore_file "$${kept(i)}" || bad="$bad "${quote(c.path)}`),
    ...services.map((s, i) => `  if [ "$${flag(i)}" = 1 ]; then systemctl restart ${quote(s)} >/dev/null 2>&1 || bad="$bad "${quote(s)}; fi`),
    `  if [ -z "$bad" ]; then echo '@@restored'; else echo "@@restore-failed could not restore:$bad"; fi`,
    '}',
    // One line per marker: the reason may hold the newlines of a command's error output.
    `failed() { echo "@@repoint-failed $(printf '%s' "$1" | tr '\\n' ' ')"; restore; exit 1; }`,
    // Where each file pointed is kept before it changes: a run cut short after the rewrite still leaves it (the first record stays).
    ...rewrites.flatMap((c) => (c.record ? [`record_origin ${quote(c.path)} ${quote(c.record.server)} ${quote(c.record.tlsServerName)} 2>/dev/null || echo ${quote(`@@unrecorded ${c.path}`)}`] : [])),
    ...rewrites.map((c, i) => `rewrite_kubeconfig ${quote(c.path)} ${quote(c.to)} ${quote(c.serverName ?? '')} ${c.dropServerName ? '1' : "''"}; ok=$?; ${kept(i)}=$kept; [ "$ok" = 0 ] || failed ${quote(c.path)}": $why"`),
    // Restart them all first, so they come up side by side; then wait for each.
    ...services.map((s, i) => `${flag(i)}=1; if ! out=$(systemctl restart ${quote(s)} 2>&1); then failed ${quote(s)}": restart failed: $out"; fi`),
    ...services.map((s) => `if ! wait_ready ${quote(s)}; then failed ${quote(s)}": $why"; fi`),
    ...rewrites.map((c, i) => `forget_file "$${kept(i)}" ${quote(c.path)}`),
    ...changes.filter((c) => c.forgetOnly).map((c) => `forget_file '' ${quote(c.path)}`),
    "echo '@@repointed'",
  ];
  return lines.join('\n') + '\n';
}

/** Pure: what the repoint script's markers say. */
export function parseRepointOutput(stdout: string): RepointOutcome {
  const failure = /^@@repoint-failed (.*)$/m.exec(stdout)?.[1];
  const unrecorded = [...stdout.matchAll(/^@@unrecorded (.*)$/gm)].map((m) => m[1]!);
  if (failure === undefined) return { ok: /^@@repointed$/m.test(stdout), ...(unrecorded.length ? { unrecorded } : {}) };
  const restoreFailure = /^@@restore-failed ?(.*)$/m.exec(stdout)?.[1];
  return { ok: false, failure, restored: /^@@restored$/m.test(stdout), ...(restoreFailure !== undefined ? { restoreFailure } : {}) };
}
