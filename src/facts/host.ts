/**
 * Facts: read-only probes of a host's state. All of a host's facts come back
 * from one shell script on one round trip; each section is parsed by a pure
 * function, so planners are tested with plain data.
 */
import { quote } from '../util/quote.js';
import { embed, embedded } from '../util/embed.js';
import { formatHostPort, hostPortOf, isWildcard } from '../util/hostport.js';

export interface OsFacts {
  id: string;
  versionId: string;
  prettyName: string;
  arch: string;
  glibc: string;
}

export interface FileFacts {
  sha256: string;
  mode: string;
  /** `user:group`. */
  owner?: string;
}

export interface UnitFacts {
  loadState: string;
  activeState: string;
  subState: string;
  unitFileState: string;
  activeEnterTimestamp: string;
  mainPid: number;
}

/** A unit as systemctl status says it: `active (running)`, `inactive (dead)`, `failed`, `activating`, `not installed`. */
export function serviceState(u: UnitFacts | undefined): string {
  if (!u || u.loadState === 'not-found') return 'not installed';
  if (u.activeState === 'failed') return 'failed';
  if (u.activeState === 'activating') return 'activating';
  return `${u.activeState} (${u.subState})`;
}

/**
 * Shell: the PIDs (one per line, each once) of the processes listening on a TCP port where `listen`
 * would: on its address, or either side every address. Needs `ss`; prints nothing without it.
 */
export function listenerPids(listen: string): string {
  const { host, port } = hostPortOf(listen);
  // One awk picks the overlapping listeners and prints each PID on their lines once: two processes
  // (ss, awk) on every run's facts, where grep, cut and sort made five.
  const pids = `s = $0; while (match(s, /pid=[0-9]+/)) { id = substr(s, RSTART + 4, RLENGTH - 4); if (!(id in seen)) { seen[id] = 1; print id }; s = substr(s, RSTART + RLENGTH) }`;
  const overlaps = `awk -v a=${quote(formatHostPort(host, port))} -v any=${isWildcard(host) ? '1' : '0'} -v p=${port} 'any || $4 == a || $4 == "0.0.0.0:" p || $4 == "[::]:" p || $4 == "*:" p { ${pids} }'`;
  return `ss -Hltnp ${quote(`sport = :${port}`)} 2>/dev/null | ${overlaps}`;
}

/**
 * Shell: true when the process whose PID `pid` expands to runs in the unit's cgroup (its main
 * process, its workers, and whatever they started): a PID is the unit's whoever its parent is.
 */
export function inUnitCgroup(unit: string, pid: string): string {
  const unitFile = unit.includes('.') ? unit : `${unit}.service`;
  return `grep -q ${quote(`/${unitFile}$`)} /proc/${pid}/cgroup 2>/dev/null`;
}

/** The unit is running, or on its way there (starting, reloading): it holds its port. */
export function isServing(u: UnitFacts | undefined): boolean {
  return u?.activeState === 'active' || u?.activeState === 'activating' || u?.activeState === 'reloading';
}

export interface HostFacts {
  os: OsFacts;
  packageManager: 'apt-get' | 'dnf' | 'yum' | null;
  tools: string[];
  files: Record<string, FileFacts | null>;
  dirs: Record<string, string | null>;
  units: Record<string, UnitFacts>;
  /** Exit code of each guard command, by the command text. */
  guards: Record<string, number>;
  /** Text of files asked for by content (for --diff); absent when the file is missing. */
  texts: Record<string, string>;
  /** What `BINARY -v` printed (e.g. nginx/1.22.1, kube-lb 0.1.0), by binary path, for those that exist and run. */
  versions: Record<string, string>;
  /**
   * The server: and tls-server-name: values of the kubeconfigs asked for, by path; null when the file
   * is missing. Never the file itself: it holds client keys. Optional only so that hand-built facts
   * predating it still type-check; parseFacts always sets it.
   */
  kubeconfigs?: Record<string, KubeconfigFacts | null>;
  /** The interface that carries each of the host's own addresses asked for (`ip addr show to`); null where none does. */
  interfaces?: Record<string, string | null>;
  /** Images of each repository asked for, as `RUNTIME REPOSITORY:TAG REPOSITORY@DIGEST`, from every runtime the host has (podman, docker, containerd's k8s.io namespace). */
  images?: Record<string, string[]>;
  /** Each container asked for, as every runtime the host has sees it: `RUNTIME RUNNING PID IMAGE` (absent where none has it). */
  containers?: Record<string, string[]>;
  /**
   * What kubelet runs pods with (asked for by lb.impl static-pod): the CRI endpoint its command line or
   * config file names ('' when neither does: kubelet's default, containerd), and the snapshotter
   * containerd's CRI plugin unpacks images into (where the node has containerd).
   */
  kubelet?: KubeletFacts;
  /**
   * What each script asked for printed (`scripts` of the request), by its key: checks the engine
   * would otherwise run as commands of their own (who holds the balancer's port, the lock probe),
   * read in the same round trip as the facts.
   */
  scripts?: Record<string, string>;
}

export interface KubeletFacts {
  endpoint: string;
  snapshotter?: string;
}

/** The backup earlier versions kept for good beside each repointed kubeconfig (a copy of its client key). */
export const LEGACY_SUFFIX = '.k8s-ha-orig';

export interface KubeconfigFacts {
  servers: string[];
  tlsServerNames: string[];
  /** Octal permission bits, e.g. 600. */
  mode: string;
  /** A *.k8s-ha-orig beside it: the copy earlier versions kept for good (with its client key). */
  legacyBackup?: boolean;
  /**
   * A run's backup (*.k8s-ha-prev.RUN) or staged copy (*.k8s-ha-new.RUN.*) beside the file, found
   * while this run holds the node's lock: a run that was killed between its rewrite and its cleanup
   * (SIGKILL, a reboot) left it, with a copy of the client key.
   */
  leftovers?: string[];
}

export interface FactRequest {
  files: string[];
  dirs: string[];
  units: string[];
  guards: string[];
  /** Files whose content is wanted too (small text files, for --diff). */
  texts?: string[];
  /** Binaries whose `-v` version is wanted (status). */
  versions?: string[];
  /** Kubeconfigs whose server: and tls-server-name: values are wanted (repointing); only those lines leave the host. */
  kubeconfigs?: string[];
  /** The host's own addresses whose interface is wanted: where keepalived puts a VIP beside them. */
  interfaces?: string[];
  /** Image repositories (e.g. localhost/k8s-ha/kube-nginx) whose tags each container runtime holds. */
  images?: string[];
  /** Container names whose state each runtime is asked for (status: what runs, from which image). */
  containers?: string[];
  /** kubelet's CRI endpoint and containerd's snapshotter (lb.impl static-pod). */
  kubelet?: boolean;
  /** Scripts whose output is wanted too, each under its key (run as root, stderr dropped; their own @@ lines are fine). */
  scripts?: { key: string; script: string }[];
}

export function emptyRequest(): FactRequest {
  return { files: [], dirs: [], units: [], guards: [] };
}

/**
 * The one script that gathers everything a plan needs. Runs as root, on every
 * host of every run, so it spawns as few processes as it can: one sha256sum and
 * one stat for all paths, one systemctl for all units.
 */
/**
 * Shell condition on $rt: the runtime can be asked without starting anything. podman has no daemon;
 * Docker's is asked only while it runs: its socket is often socket-activated, and a question would
 * start dockerd (and containerd) on a node that does not use them. A Docker that is not running
 * holds no running container; an image in it is loaded again (harmless) when the node needs it.
 */
const runtimeUp = `command -v "$rt" >/dev/null 2>&1 && { [ "$rt" = podman ] || systemctl is-active -q docker; }`;

/** Shell: the snapshotter containerd's CRI plugin unpacks images into (its effective config), or nothing. */
export const CRI_SNAPSHOTTER = `timeout 10 containerd config dump 2>/dev/null | awk '/^ *\\[/ { c = ($0 ~ /cri/) } c && /^ *snapshotter *=/ { gsub(/[" ]/, ""); sub(/^snapshotter=/, ""); print; exit }'`;

/**
 * Shell: kubelet's CRI endpoint, from the running kubelet's command line (kubeadm's flags file is on it),
 * else its config file (the one --config names, else kubeadm's), else the flags file of a kubelet
 * that is not running; then the snapshotter of containerd's CRI plugin (its effective config).
 */
export const KUBELET_FACT_SCRIPT = [
  'pid=$(systemctl show -p MainPID --value kubelet 2>/dev/null); args=',
  `[ -n "$pid" ] && [ "$pid" != 0 ] && args=$(tr '\\0' '\\n' < /proc/$pid/cmdline 2>/dev/null)`,
  `flag() { printf '%s\\n' "$args" | sed -n "s/^--$1=//p;/^--$1\\$/{n;p;}" | tail -n 1; }`,
  'ep=$(flag container-runtime-endpoint); cfg=$(flag config)',
  `[ -n "$ep" ] || ep=$(sed -n 's/^containerRuntimeEndpoint: *//p' "\${cfg:-/var/lib/kubelet/config.yaml}" 2>/dev/null | tr -d "\\"'" | tail -n 1)`,
  `[ -n "$ep" ] || ep=$(grep -o -- '--container-runtime-endpoint[= ][^ "]*' /var/lib/kubelet/kubeadm-flags.env 2>/dev/null | cut -c30- | tail -n 1)`,
  'echo "endpoint=$ep"',
  `if command -v containerd >/dev/null 2>&1; then echo "snapshotter=$(${CRI_SNAPSHOTTER})"; fi`,
].join('\n');

export function factScript(req: FactRequest): string {
  const lines = [
    'echo "@@os"; cat /etc/os-release 2>/dev/null; echo "ARCH=$(uname -m)"; g=$(getconf GNU_LIBC_VERSION 2>/dev/null); echo "GLIBC=${g#glibc }"',
    'echo "@@pkg"; for p in apt-get dnf yum; do if command -v "$p" >/dev/null 2>&1; then echo "$p"; break; fi; done',
    'echo "@@tools"; for t in gcc cc make tar musl-gcc strip podman docker ctr; do command -v "$t" >/dev/null 2>&1 && echo "$t"; done; true',
  ];
  if (req.files.length) lines.push(`echo "@@sha256"; sha256sum ${req.files.map(quote).join(' ')} 2>/dev/null; true`);
  const paths = [...req.files, ...req.dirs];
  if (paths.length) lines.push(`echo "@@stat"; stat -c '%F|%a|%U:%G|%n' ${paths.map(quote).join(' ')} 2>/dev/null; true`);
  if (req.units.length) {
    // One `systemctl show` for every unit (blocks keyed by Id): systemctl is the costliest process here.
    lines.push(`echo "@@units"; systemctl show -p Id -p LoadState -p ActiveState -p SubState -p ActiveEnterTimestamp -p MainPID ${req.units.map((u) => quote(unitFile(u))).join(' ')} 2>/dev/null; true`);
    for (const u of req.units) {
      const f = quote(unitFile(u));
      // UnitFileState from is-enabled, which reads the disk: `show` reports systemd's cached value, stale
      // after `enable --no-reload` on a loaded unit. It stops at the first unknown unit, so one call per
      // unit, and only where a unit file exists (tested by the shell, no process).
      lines.push(
        `echo ${quote(`@@enabled ${u}`)}; for d in /etc/systemd/system /run/systemd/system /lib/systemd/system /usr/lib/systemd/system; do ` +
          `if [ -e "$d/"${f} ]; then systemctl is-enabled ${f} 2>/dev/null; break; fi; done; true`,
      );
    }
  }
  req.guards.forEach((g, i) => {
    lines.push(`echo "@@guard ${i}"; ( ${g} ) >/dev/null 2>&1; echo $?`);
  });
  (req.texts ?? []).forEach((t, i) => {
    lines.push(`echo "@@text ${i}"; [ -f ${quote(t)} ] && base64 ${quote(t)} | tr -d '\\n'; echo`);
  });
  (req.versions ?? []).forEach((v, i) => {
    lines.push(`echo "@@version ${i}"; [ -x ${quote(v)} ] && ${quote(v)} -v 2>&1 | head -n 1; true`);
  });
  (req.kubeconfigs ?? []).forEach((k, i) => lines.push(kubeconfigFactLine(k, i)));
  (req.interfaces ?? []).forEach((a, i) => lines.push(`echo "@@interface ${i}"; ip -o addr show to ${quote(a)} 2>/dev/null | head -n 1; true`));
  (req.images ?? []).forEach((r, i) =>
    lines.push(
      `echo "@@images ${i}"; for rt in podman docker; do ${runtimeUp} || continue; ` +
        `timeout 20 "$rt" images --format "$rt {{.Repository}}:{{.Tag}} {{.Repository}}@{{.Digest}}" ${quote(r)} 2>/dev/null; done; ` +
        // kubelet's images in containerd (its k8s.io namespace), while containerd runs: REF TYPE DIGEST ...
        `if command -v ctr >/dev/null 2>&1 && systemctl is-active -q containerd; then timeout 20 ctr -n k8s.io images ls 2>/dev/null | ` +
        `awk -v r=${quote(r)} 'index($1, r ":") == 1 || index($1, r "@") == 1 { print "containerd", $1, r "@" $3 }'; fi; true`,
    ),
  );
  if (req.kubelet) lines.push(`echo "@@kubelet"; ${KUBELET_FACT_SCRIPT.split('\n').join('; ')}; true`);
  (req.scripts ?? []).forEach((x, i) => lines.push(embed(`script ${i}`, x.script)));
  (req.containers ?? []).forEach((c, i) =>
    lines.push(
      `echo "@@containers ${i}"; for rt in podman docker; do ${runtimeUp} || continue; ` +
        `timeout 20 "$rt" inspect --type container --format "$rt {{.State.Running}} {{.State.Pid}} {{.Config.Image}}" ${quote(c)} 2>/dev/null; done; true`,
    ),
  );
  return lines.join('\n') + '\n';
}

function sections(stdout: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let cur: string[] | undefined;
  for (const line of stdout.split('\n')) {
    if (line.startsWith('@@')) {
      cur = [];
      out.set(line.slice(2), cur);
    } else if (cur && line !== '') cur.push(line);
  }
  return out;
}

function keyValues(lines: string[]): Record<string, string> {
  const kv: Record<string, string> = {};
  for (const l of lines) {
    const i = l.indexOf('=');
    if (i > 0) kv[l.slice(0, i)] = l.slice(i + 1).replace(/^"(.*)"$/, '$1');
  }
  return kv;
}

/** A unit's full name: `kube-nginx` is `kube-nginx.service`, as systemctl shows its Id. */
function unitFile(u: string): string {
  return /\.(service|socket|timer|target|mount|path|slice|scope)$/.test(u) ? u : `${u}.service`;
}

/**
 * `systemctl show` for several units: a block of KEY=VALUE lines each, in systemd's own property
 * order (the blank lines between blocks are dropped by `sections`): a key seen twice starts the next block.
 */
export function unitBlocks(lines: string[]): Map<string, Record<string, string>> {
  const out = new Map<string, Record<string, string>>();
  let cur: string[] = [];
  let keys = new Set<string>();
  const flush = () => {
    const kv = keyValues(cur);
    if (kv.Id) out.set(kv.Id, kv);
    cur = [];
    keys = new Set();
  };
  for (const l of lines) {
    const k = l.slice(0, l.indexOf('='));
    if (keys.has(k)) flush();
    keys.add(k);
    cur.push(l);
  }
  flush();
  return out;
}

/** What the script of `req.scripts` under `key` printed in the facts script's output, without parsing the rest. */
export function scriptOutput(req: FactRequest, stdout: string, key: string): string | undefined {
  const i = (req.scripts ?? []).findIndex((x) => x.key === key);
  return i < 0 ? undefined : embedded(stdout, `script ${i}`);
}

export function parseFacts(req: FactRequest, stdout: string): HostFacts {
  const s = sections(stdout);
  const os = keyValues(s.get('os') ?? []);
  const pkg = (s.get('pkg') ?? [])[0];
  const facts: HostFacts = {
    os: {
      id: os.ID ?? 'unknown',
      versionId: os.VERSION_ID ?? '',
      prettyName: os.PRETTY_NAME ?? os.ID ?? 'unknown',
      arch: os.ARCH ?? 'unknown',
      glibc: os.GLIBC ?? '',
    },
    packageManager: pkg === 'apt-get' || pkg === 'dnf' || pkg === 'yum' ? pkg : null,
    tools: s.get('tools') ?? [],
    files: {},
    dirs: {},
    units: {},
    guards: {},
    texts: {},
    versions: {},
    kubeconfigs: {},
    interfaces: {},
  };
  const sums = new Map<string, string>();
  for (const line of s.get('sha256') ?? []) {
    const m = /^([0-9a-f]{64}) [ *](.*)$/.exec(line);
    if (m) sums.set(m[2]!, m[1]!);
  }
  const stats = new Map<string, { type: string; mode: string; owner: string }>();
  for (const line of s.get('stat') ?? []) {
    const [type = '', mode = '', ...rest] = line.split('|');
    // Every path asked about is absolute: a field before it that is not one is the owner.
    const owner = rest.length > 1 && !rest[0]!.startsWith('/') ? rest.shift()! : '';
    stats.set(rest.join('|'), { type, mode, owner });
  }
  for (const f of req.files) {
    const st = stats.get(f);
    const sha256 = sums.get(f);
    facts.files[f] = sha256 && st && /regular/.test(st.type) ? { sha256, mode: st.mode, ...(st.owner ? { owner: st.owner } : {}) } : null;
  }
  for (const d of req.dirs) {
    const st = stats.get(d);
    facts.dirs[d] = st && st.type === 'directory' ? st.mode : null;
  }
  const shown = unitBlocks(s.get('units') ?? []);
  for (const u of req.units) {
    const kv = shown.get(unitFile(u)) ?? {};
    facts.units[u] = {
      loadState: kv.LoadState ?? 'not-found',
      activeState: kv.ActiveState ?? 'inactive',
      subState: kv.SubState ?? 'dead',
      unitFileState: (s.get(`enabled ${u}`) ?? [])[0]?.trim() ?? '',
      activeEnterTimestamp: kv.ActiveEnterTimestamp ?? '',
      mainPid: Number(kv.MainPID ?? 0),
    };
  }
  req.guards.forEach((g, i) => {
    facts.guards[g] = Number((s.get(`guard ${i}`) ?? ['1'])[0]);
  });
  (req.texts ?? []).forEach((t, i) => {
    const b64 = (s.get(`text ${i}`) ?? [])[0];
    if (b64 !== undefined) facts.texts[t] = Buffer.from(b64, 'base64').toString();
  });
  (req.versions ?? []).forEach((v, i) => {
    const line = (s.get(`version ${i}`) ?? [])[0];
    if (line) facts.versions[v] = line.replace(/^nginx version: /, '').replace(/^HAProxy version (\S+).*/, 'haproxy/$1');
  });
  (req.kubeconfigs ?? []).forEach((k, i) => {
    facts.kubeconfigs![k] = parseKubeconfigFacts(s.get(`kubeconfig ${i}`) ?? []);
  });
  for (const x of req.scripts ?? []) {
    const out = scriptOutput(req, stdout, x.key);
    if (out !== undefined) (facts.scripts ??= {})[x.key] = out;
  }
  (req.interfaces ?? []).forEach((a, i) => {
    facts.interfaces![a] = interfaceOf((s.get(`interface ${i}`) ?? [])[0] ?? '');
  });
  facts.containers = {};
  (req.containers ?? []).forEach((c, i) => {
    facts.containers![c] = (s.get(`containers ${i}`) ?? []).map((l) => l.trim()).filter((l) => /^(podman|docker) (true|false) \d+ \S+$/.test(l));
  });
  facts.images = {};
  (req.images ?? []).forEach((r, i) => {
    facts.images![r] = (s.get(`images ${i}`) ?? []).map((l) => l.trim()).filter((l) => /^(podman|docker|containerd) \S+( \S+)?$/.test(l));
  });
  if (req.kubelet) {
    const kv = Object.fromEntries((s.get('kubelet') ?? []).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1).trim()]));
    facts.kubelet = { endpoint: kv.endpoint ?? '', ...(kv.snapshotter ? { snapshotter: kv.snapshotter } : {}) };
  }
  return facts;
}

/**
 * The image container `name` runs, from the containers fact (`RUNTIME RUNNING PID IMAGE` per runtime):
 * the one `runtime` runs when given, else any runtime's running one, else (runtime not given) a stopped one's.
 */
export function containerImage(facts: Pick<HostFacts, 'containers'>, name: string, runtime?: string): string | undefined {
  const seen = (facts.containers?.[name] ?? []).map((l) => l.split(' '));
  const running = seen.find((f) => f[1] === 'true' && (!runtime || f[0] === runtime));
  return (running ?? (runtime ? undefined : seen[0]))?.[3];
}

/** The interface of one line of `ip -o addr show to ADDR`, e.g. `2: eth0    inet 10.0.0.2/16 ...` (eth0@if23 in a container: eth0); null for none. */
export function interfaceOf(line: string): string | null {
  return /^\d+:\s+([^\s@:]+)/.exec(line)?.[1] ?? null;
}

/**
 * Reads a kubeconfig on the host and prints only its mode and the values of its server: and
 * tls-server-name: lines (sed -n prints nothing else): client-key-data and tokens never leave the node.
 */
function kubeconfigFactLine(path: string, i: number): string {
  const p = quote(path);
  return (
    `echo "@@kubeconfig ${i}"; if [ -f ${p} ]; then stat -c 'mode=%a' ${p}; ` +
    `if [ -e ${quote(path + LEGACY_SUFFIX)} ] || [ -h ${quote(path + LEGACY_SUFFIX)} ]; then echo legacy-backup=yes; fi; ` +
    // Runs name their copies after the file a symlinked kubeconfig resolves to (kubeconfig.ts).
    `if kc_real=$(readlink -f -- ${p}); then for kc_x in "$kc_real".k8s-ha-prev.* "$kc_real".k8s-ha-new.*; do if [ -e "$kc_x" ] || [ -h "$kc_x" ]; then printf 'leftover=%s\\n' "$kc_x"; fi; done; fi; ` +
    `sed -n -e 's/^[[:space:]]*server:[[:space:]]*/server=/p' -e 's/^[[:space:]]*tls-server-name:[[:space:]]*/tls-server-name=/p' ${p}; ` +
    `else echo missing; fi`
  );
}

/** A YAML plain or quoted scalar as written on one line: the first word, its quotes off. */
function scalar(v: string): string {
  const t = v.trim();
  const q = /^"([^"]*)"|^'([^']*)'/.exec(t);
  return q ? (q[1] ?? q[2]!) : t.split(/\s/)[0]!;
}

/** Pure: the section the fact line above printed for one kubeconfig; null for a missing file. */
export function parseKubeconfigFacts(lines: string[]): KubeconfigFacts | null {
  if (!lines.length || lines[0] === 'missing') return null;
  const out: KubeconfigFacts = { servers: [], tlsServerNames: [], mode: '' };
  for (const l of lines) {
    const i = l.indexOf('=');
    const key = l.slice(0, i);
    const value = l.slice(i + 1);
    if (key === 'mode') out.mode = value;
    else if (key === 'legacy-backup') out.legacyBackup = true;
    else if (key === 'leftover') out.leftovers = [...(out.leftovers ?? []), value];
    else if (key === 'server') out.servers.push(scalar(value));
    else if (key === 'tls-server-name') out.tlsServerNames.push(scalar(value));
  }
  return out;
}

/** The key a built binary is cached under: what it was built for. */
export function osKey(os: OsFacts): string {
  return `${os.id}-${os.versionId}-${os.arch}-glibc${os.glibc}`;
}
