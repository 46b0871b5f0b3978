/**
 * Build nginx with the stream module, once per (version, tarball, configure
 * arguments, linking), on this machine or on a node, as the seed does.
 * The binary is cached; the next deploy does not rebuild.
 *
 * By default it is linked statically against musl (musl-gcc, from musl-tools): nginx built
 * --without-http needs nothing but the C library, so one stripped binary of about 0.4 MB runs on
 * every Linux of the build host's CPU architecture, glibc 2.17 or 2.39, musl or none. musl rather
 * than static glibc: glibc's static link warns that getpwnam (nginx's `user` directive) needs the
 * running system's NSS libraries of the same glibc version, the very dependency a static binary is
 * meant to shed; musl resolves users from /etc/passwd itself. `build.link: native` links against the
 * build host's glibc instead (it then runs only where that glibc or a later one is).
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { BuildError, CommandError, NoToolchainError } from '../errors.js';
import { LocalConnection, type Connection } from '../connect/connection.js';
import type { Deadlines } from '../connect/deadlines.js';
import { emptyRequest, factScript, osKey, parseFacts, type OsFacts } from '../facts/host.js';
import { run } from '../util/exec.js';
import { cacheDir, ensureCacheRoot } from '../util/paths.js';
import { forget, track, writeFileAtomic } from '../util/tempdir.js';
import { quote } from '../util/quote.js';
import { readCached, withCacheLock } from './cache.js';
import { storedEntries, storedEntry, throughStore, type Store } from './store.js';
import { fetchVerified, sha256File, type Say } from './download.js';

export interface NginxSource {
  version: string;
  sources: string[];
  sha256: string;
}

export type Link = 'static' | 'native';

export interface BuildHost {
  /** `controller`, or the node's name. */
  name: string;
  link: Link;
  os: OsFacts;
  tools: string[];
  packageManager: 'apt-get' | 'dnf' | 'yum' | null;
  /** This machine (LocalConnection) or the node's SSH connection: the build runs the same way on either. */
  connection: Connection;
  installToolchain: boolean;
}

export interface BuiltBinary {
  path: string;
  sha256: string;
  size: number;
  cached: boolean;
  builtOn: string;
  /** The build host's OS key (native), or `static-musl-ARCH`: what the binary needs to run. */
  osKey: string;
  /** `nginx -V` output. */
  configure: string;
  /** What the build was made from, so `status` can find it without building. */
  version?: string;
  sourceSha256?: string;
  configureArgs?: string[];
  /** static (musl) or native (the build host's glibc); absent in builds made before static existed (native). */
  link?: Link;
  /** The compiler, C library, linker and make that made it, as they name themselves (`gcc --version`...). */
  toolchain?: string[];
  /** Found in the shared store (build.store), not in this machine's cache. */
  fromStore?: boolean;
  /** Where it is in the shared store, when there is one. */
  stored?: string;
  /** What the binary was meant to be: a hash of its inputs and toolchain (artifactIdentity); absent before reproducible builds. */
  identity?: string;
}

/**
 * Why a binary cannot run on a host, or undefined when it can. nginx built with --without-http
 * links against nothing but the C library: the CPU architecture decides, and for a native build the
 * glibc version too (at least the build host's). A static build needs no libc at all.
 */
export function cannotRun(built: { arch: string; glibc: string; static?: boolean } | undefined, host: OsFacts): string | undefined {
  if (!built) return undefined;
  if (built.arch !== host.arch) return `the nginx binary is for ${built.arch}, this node is ${host.arch}`;
  if (built.static) return undefined;
  const v = (x: string) => x.split('.').map(Number);
  const [a, b] = [v(built.glibc), v(host.glibc)];
  if (!a[0] || Number.isNaN(a[0])) return undefined; // the build's glibc is unknown: the binary's own -v check decides
  if (!host.glibc || Number.isNaN(b[0])) return `the nginx binary needs glibc ${built.glibc}; this node has no glibc`;
  const older = b[0]! < a[0]! || (b[0] === a[0] && (b[1] ?? 0) < (a[1] ?? 0));
  return older ? `the nginx binary needs glibc ${built.glibc} or later (built on glibc ${built.glibc}), this node has ${host.glibc}` : undefined;
}

const STATIC_KEY = /^static-musl-(.+)$/;

/** What a cached build needs to run, from its OS key: the architecture, and the glibc unless static. */
export function builtFor(b: Pick<BuiltBinary, 'osKey'>): { arch: string; glibc: string; static: boolean } | undefined {
  const st = STATIC_KEY.exec(b.osKey);
  if (st) return { arch: st[1]!, glibc: '', static: true };
  const m = /-([^-]+)-glibc([\d.]*)$/.exec(b.osKey);
  return m ? { arch: m[1]!, glibc: m[2]!, static: false } : undefined;
}

/** The OS key of a build: the build host's OS for a native one; for a static one only the CPU architecture matters. */
export function buildOsKey(os: OsFacts, link: Link): string {
  return link === 'static' ? `static-musl-${os.arch}` : osKey(os);
}

/** ./configure arguments for the link mode: musl-gcc, static, small (the stripping comes after make). */
export function linkArgs(link: Link): string[] {
  return link === 'static' ? ['--with-cc=musl-gcc', '--with-cc-opt=-static -Os -Imusl-compat', '--with-ld-opt=-static'] : [];
}

/**
 * nginx's HTTP modules a status-only build leaves out (nginx 1.22's `./configure --help`): every one
 * that is on by default, but the core, the static and index handlers and the log, which cannot be
 * left out. rewrite needs PCRE and gzip zlib, which the static musl build has neither of; the rest
 * (proxies, caches' users, access rules, SSI...) serve nothing on a port that only answers
 * /healthz and /stub_status, and each would be code in every node's balancer for nothing.
 */
export const STATUS_BUILD_WITHOUT = [
  'charset', 'gzip', 'ssi', 'userid', 'access', 'auth_basic', 'mirror', 'autoindex', 'geo', 'map', 'split_clients',
  'referer', 'rewrite', 'proxy', 'fastcgi', 'uwsgi', 'scgi', 'grpc', 'memcached', 'limit_conn', 'limit_req',
  'empty_gif', 'browser', 'upstream_hash', 'upstream_ip_hash', 'upstream_least_conn', 'upstream_random',
  'upstream_keepalive', 'upstream_zone',
].map((m) => `--without-http_${m}_module`);

/**
 * A playbook's nginxBuild arguments turned into those of a build that also serves nginx's own status
 * (nginx.statusListen): `--without-http` goes, the HTTP core comes with stub_status and without every
 * other HTTP module (STATUS_BUILD_WITHOUT) or the cache. Everything else is kept as written, in its
 * order; what is there already is not repeated, so it gives the same arguments (and build key) again.
 */
export function withStatusModule(configure: readonly string[]): string[] {
  const out = configure.filter((a) => a !== '--without-http');
  for (const a of ['--without-http-cache', '--with-http_stub_status_module', ...STATUS_BUILD_WITHOUT]) if (!out.includes(a)) out.push(a);
  return out;
}

/**
 * Shell, in the nginx source folder before ./configure: nginx's Linux headers include <crypt.h>,
 * which some musl packagings (Debian's musl-dev) leave out although musl declares crypt() in
 * <unistd.h>. Where musl-gcc cannot find it, a crypt.h that includes <unistd.h> stands in
 * (in musl-compat/, on the include path of a static build).
 */
const MUSL_COMPAT = `if ! printf '#include <crypt.h>\\n' | musl-gcc -E - >/dev/null 2>&1; then mkdir -p musl-compat && printf '#include <unistd.h>\\n' > musl-compat/crypt.h; fi
`;

/**
 * How nginx is built, as a number: part of every build key and identity, raised when the build
 * itself changes (2: reproducible, the build folder kept out of the binary), so no build made the
 * old way is taken for one made the new way.
 */
export const NGINX_RECIPE = 2;

/**
 * The fixed time every build claims to be made at (SOURCE_DATE_EPOCH, the reproducible-builds
 * convention compilers and tools honour): 2020-01-01T00:00:00Z. Not the time of the build, so two
 * builds of the same inputs agree.
 */
export const SOURCE_DATE_EPOCH = 1577836800;

export function buildKey(src: NginxSource, configure: string[], os: OsFacts, link: Link): string {
  return createHash('sha256')
    .update(JSON.stringify([src.version, src.sha256, configure, buildOsKey(os, link), NGINX_RECIPE]))
    .digest('hex')
    .slice(0, 16);
}

/**
 * What a build was meant to be, independent of where and by whom it was made: a hash of its inputs
 * (the source's sha256, every ./configure argument, the link mode and what the binary needs to
 * run, the recipe) and of the toolchain that compiled it (as it names itself). Two builds with the
 * same identity are byte for byte the same file (the build is reproducible: the integration test
 * `artifacts` shows it); two with different ones were meant to differ, or were made by different
 * compilers.
 */
export function artifactIdentity(src: Pick<NginxSource, 'version' | 'sha256'>, configure: readonly string[], link: Link, osKey: string, toolchain: readonly string[]): string {
  return `sha256:${createHash('sha256')
    .update(JSON.stringify({ recipe: NGINX_RECIPE, nginx: src.version, source: src.sha256, configure, link, runsOn: osKey, toolchain }))
    .digest('hex')}`;
}

/** Commands that install a C toolchain with the host's package manager (musl-gcc too for a static build: musl-tools, or musl-gcc from EPEL). */
export function toolchainInstallCommand(pm: BuildHost['packageManager'], link: Link = 'native'): string | undefined {
  if (pm === 'apt-get') {
    return `export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq --no-install-recommends gcc make libc6-dev${link === 'static' ? ' musl-tools binutils' : ''}`;
  }
  if (pm === 'dnf') return `dnf install -y -q gcc make glibc-devel${link === 'static' ? ' musl-gcc binutils' : ''}`;
  if (pm === 'yum') return `yum install -y -q gcc make glibc-devel${link === 'static' ? ' musl-gcc binutils' : ''}`;
  return undefined;
}

export function hasToolchain(tools: string[], link: Link = 'native'): boolean {
  const cc = (tools.includes('gcc') || tools.includes('cc')) && tools.includes('make');
  return link === 'static' ? cc && tools.includes('musl-gcc') && tools.includes('strip') : cc;
}

/**
 * Why a package install failed, read from what the package manager printed: `busy` (another
 * process holds its lock), `unreachable` (no mirror answered), `missing` (the mirror answered and has
 * no such package: the toolchain truly cannot be had here), or undefined (something else). Only
 * `missing` makes a host one without a compiler.
 */
export function packageFailure(output: string): 'busy' | 'unreachable' | 'missing' | undefined {
  if (/Could not get lock|Unable to acquire the dpkg frontend lock|Unable to lock the administration directory|is another process using it\?|Waiting for process with pid|holding the yum lock|Another app is currently holding/i.test(output)) return 'busy';
  if (/Temporary failure resolving|Could not resolve|Failed to fetch|Could not connect to|Connection failed|Connection timed out|Network is unreachable|No route to host|Cannot download repomd|Failed to download metadata|Curl error|Cannot find a valid baseurl/i.test(output)) return 'unreachable';
  if (/Unable to locate package|has no installation candidate|No match for argument|No package \S+ available|Package .* is not available/i.test(output)) return 'missing';
  return undefined;
}

/**
 * Whether an ELF executable is statically linked: it has no program interpreter (PT_INTERP) and
 * no dynamic section (PT_DYNAMIC). Read from the file itself, as `file` does; undefined when the
 * bytes are not a 64- or 32-bit little-endian ELF file.
 */
export function staticElf(head: Buffer): boolean | undefined {
  if (head.length < 64 || head.readUInt32BE(0) !== 0x7f454c46 || head[5] !== 1) return undefined;
  const is64 = head[4] === 2;
  const phoff = is64 ? Number(head.readBigUInt64LE(32)) : head.readUInt32LE(28);
  const phentsize = head.readUInt16LE(is64 ? 54 : 42);
  const phnum = head.readUInt16LE(is64 ? 56 : 44);
  if (phoff + phentsize * phnum > head.length) return undefined;
  for (let i = 0; i < phnum; i++) {
    const type = head.readUInt32LE(phoff + i * phentsize);
    if (type === 2 || type === 3) return false;
  }
  return true;
}

/** This machine, read by the same facts script as every node: the same OS key, tools and package manager. */
async function controllerFacts() {
  const req = emptyRequest();
  return parseFacts(req, (await run('sh', ['-c', factScript(req)])).stdout);
}

export async function controllerOs(): Promise<OsFacts> {
  return (await controllerFacts()).os;
}

export async function controllerBuildHost(installToolchain: boolean, link: Link, deadlines?: Deadlines): Promise<BuildHost> {
  const f = await controllerFacts();
  return { name: 'controller', link, os: f.os, tools: f.tools, packageManager: f.packageManager, installToolchain, connection: new LocalConnection(deadlines) };
}

function noToolchain(host: BuildHost, why: string): BuildError {
  const what = host.link === 'static' ? 'gcc, make and musl-gcc (musl-tools)' : 'gcc and make';
  return new NoToolchainError(`cannot build nginx on ${host.name}: ${why}`, {
    hint:
      host.name === 'controller'
        ? `install ${what} here, set build.installToolchain: true, or build on a node (build.host: node-1); hosts that can get no compiler can run kube-lb instead`
        : `install ${what} on ${host.name}, allow build.installToolchain, or build elsewhere; hosts that can get no compiler can run kube-lb instead`,
  });
}

/** The build in the cache for this key, when whole (its binary's sha256 as recorded). */
const fromCache = (dir: string) => readCached<BuiltBinary>(path.join(dir, 'kube-nginx'), path.join(dir, 'build.json'));

export async function ensureNginxBinary(src: NginxSource, configure: string[], host: BuildHost, say: Say, store?: Store): Promise<BuiltBinary> {
  // Nothing is read from a cache another user could have written to.
  await ensureCacheRoot();
  const key = buildKey(src, configure, host.os, host.link);
  const dir = cacheDir('builds', key);
  const local = { dir, binary: path.join(dir, 'kube-nginx'), meta: path.join(dir, 'build.json') };
  const what = `nginx ${src.version} (${host.link})`;
  return throughStore<BuiltBinary>({
    store,
    kind: 'builds',
    key,
    name: 'kube-nginx',
    local,
    what,
    say,
    fromLocal: () => fromCache(dir),
    accepts: (b) => madeFrom(b, src, configure, host.link) && b.osKey === buildOsKey(host.os, host.link),
    make: async () => {
      // The verified tarball first: a wrong one stops everything before the cache is touched.
      const tarball = await fetchVerified(`nginx-${src.version}.tar.gz`, src.sources, src.sha256, say);
      // One builder per key: a second deploy needing the same build waits for it, then finds it here.
      return withCacheLock(dir, what, say, async () => (await fromCache(dir)) ?? build(src, configure, host, dir, tarball, say));
    },
  });
}

async function build(src: NginxSource, configure: string[], host: BuildHost, dir: string, tarball: string, say: Say): Promise<BuiltBinary> {
  const binary = path.join(dir, 'kube-nginx');
  const metaFile = path.join(dir, 'build.json');

  if (!hasToolchain(host.tools, host.link)) {
    const install = toolchainInstallCommand(host.packageManager, host.link);
    const missing = host.link === 'static' ? 'gcc, make or musl-gcc' : 'gcc/make';
    const tools = host.link === 'static' ? 'gcc, make and musl-gcc' : 'gcc and make';
    if (!host.installToolchain) throw noToolchain(host, `no ${missing}, and build.installToolchain is off`);
    if (!install) throw noToolchain(host, `no ${missing}, and no apt-get, dnf or yum to install them`);
    say(`installing ${tools} on ${host.name} (${host.packageManager})`);
    const r = await host.connection.execAsRoot(install, { kind: 'build' });
    if (r.code !== 0) {
      const output = `${r.stdout}\n${r.stderr}`;
      const tail = (r.stderr || r.stdout).trim().split('\n').slice(-8);
      const failure = packageFailure(output);
      const doing = `installing ${tools} with ${host.packageManager} on ${host.name}`;
      // The first line says it all (it is what a recap shows); the rest of the package manager's words follow.
      const detail = `${tail[tail.length - 1] ?? ''}\n${tail.join('\n')}`;
      if (failure === 'missing') throw noToolchain(host, `installing ${tools} with ${host.packageManager} failed (exit ${r.code}): ${detail}`);
      // Anything else passes: it is no reason to give the nodes another balancer (lb.impl auto) until the next run.
      if (failure === 'busy') {
        throw new BuildError(`${doing}: the package manager is busy (another process holds its lock): ${detail}`, { hint: `wait for the other apt-get, dpkg or unattended-upgrades on ${host.name} to finish, then run again` });
      }
      if (failure === 'unreachable') {
        throw new BuildError(`${doing}: the package mirror cannot be reached: ${detail}`, { hint: `check ${host.name}'s package sources and network (a proxy, DNS), or install the toolchain by hand, then run again` });
      }
      throw new BuildError(`${doing} failed (exit ${r.code}): ${detail}`, { hint: `run the same install on ${host.name} by hand to see why: ${install}` });
    }
  }

  await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
  const tmpBinary = track(`${binary}.${process.pid}.part`);
  const args = [...configure, ...linkArgs(host.link)];
  const { versionOut, toolchain } = await buildOn(host.connection, src.version, tarball, args, host.link === 'static', tmpBinary, say);
  if (!/--with-stream/.test(versionOut)) {
    throw new BuildError(`the built nginx does not list --with-stream in nginx -V:\n${versionOut}`);
  }
  if (host.link === 'static') {
    const fd = await fsp.open(tmpBinary, 'r');
    const head = Buffer.alloc(4096);
    await fd.read(head, 0, head.length, 0).finally(() => fd.close());
    if (staticElf(head) !== true) throw new BuildError(`musl-gcc on ${host.name} made a binary that is not statically linked`, { hint: 'check the musl-tools installation, or set build.link: native' });
  }
  await fsp.chmod(tmpBinary, 0o755);
  await fsp.rename(tmpBinary, binary);
  forget(tmpBinary);
  const meta: BuiltBinary = {
    path: binary,
    sha256: await sha256File(binary),
    size: (await fsp.stat(binary)).size,
    cached: false,
    builtOn: `${host.name} (${host.os.prettyName})`,
    osKey: buildOsKey(host.os, host.link),
    configure: versionOut.trim(),
    version: src.version,
    sourceSha256: src.sha256,
    configureArgs: configure,
    link: host.link,
    toolchain,
    identity: artifactIdentity(src, args, host.link, buildOsKey(host.os, host.link), toolchain),
  };
  await writeFileAtomic(metaFile, JSON.stringify(meta, null, 2) + '\n');
  return meta;
}

/**
 * A build already in the cache for this source and these arguments, without building:
 * the one for `os` when given, else any. For `status`, which must not build.
 */
export async function cachedNginxBinary(src: NginxSource, configure: string[], link: Link, os?: OsFacts, store?: Store): Promise<BuiltBinary | undefined> {
  if (os) {
    const key = buildKey(src, configure, os, link);
    const dir = cacheDir('builds', key);
    const meta = await fsp.readFile(path.join(dir, 'build.json'), 'utf8').catch(() => undefined);
    if (meta) return { ...(JSON.parse(meta) as BuiltBinary), path: path.join(dir, 'kube-nginx'), cached: true };
    const stored = await storedEntry<BuiltBinary>(store, 'builds', key, 'kube-nginx', (b) => madeFrom(b, src, configure, link) && b.osKey === buildOsKey(os, link));
    return stored && { ...stored, cached: true, fromStore: true };
  }
  // The build host is a node, whose OS is not known without asking it: the one CPU architecture
  // builds of these inputs are for. Builds for several are not a guess to make: unknown.
  const byArch = await cachedNginxBuilds(src, configure, link, store);
  return byArch.size === 1 ? [...byArch.values()][0] : undefined;
}

/**
 * Every build of these inputs here and in the store, by CPU architecture, for `status` and
 * --check when nginx is built on nodes (build.host), whose OS is not known without asking them.
 * An architecture with builds that differ (another glibc, say) is undefined: which one is meant
 * is not known.
 */
export async function cachedNginxBuilds(src: NginxSource, configure: string[], link: Link, store?: Store): Promise<Map<string, BuiltBinary | undefined>> {
  const found = new Map<string, BuiltBinary | undefined>();
  const root = cacheDir('builds');
  const here: BuiltBinary[] = [];
  for (const key of await fsp.readdir(root).catch(() => [] as string[])) {
    const b = await readCached<BuiltBinary>(path.join(root, key, 'kube-nginx'), path.join(root, key, 'build.json')).catch(() => undefined);
    if (b) here.push(b);
  }
  const stored = store ? (await storedEntries<BuiltBinary>(store, 'builds', 'kube-nginx', () => true)).map((b) => ({ ...b, cached: true, fromStore: true })) : [];
  for (const b of [...here, ...stored]) {
    const arch = builtFor(b)?.arch;
    if (!arch || !madeFrom(b, src, configure, link)) continue;
    const seen = found.get(arch);
    found.set(arch, !found.has(arch) ? b : seen?.sha256 === b.sha256 ? seen : undefined);
  }
  return found;
}

/** Whether a build's metadata says it was made from these inputs by this recipe (one with an identity is of NGINX_RECIPE 2 or later). */
function madeFrom(b: BuiltBinary, src: NginxSource, configure: string[], link: Link): boolean {
  return !!b.identity && b.version === src.version && b.sourceSha256 === src.sha256 && JSON.stringify(b.configureArgs) === JSON.stringify(configure) && (b.link ?? 'native') === link;
}

/**
 * Shell, after ./configure: the compiler is told to write the build folder (mktemp's, another name
 * each time; its physical path, as gcc records it) as /usr/src/nginx in the debug information
 * nginx's default -g puts in the binary (-fdebug-prefix-map, gcc 4.3 on), so the same inputs give
 * the same bytes wherever they are built.
 * Added to objs/Makefile rather than to --with-cc-opt, which nginx -V would print with the folder in
 * it. A folder whose name make or sed would misread is left as it is (the build is then not
 * reproducible, and says nothing worse).
 */
const PREFIX_MAP = `here=$(pwd -P); case "$here" in *[!A-Za-z0-9._/-]*) ;; *) [ ! -f objs/Makefile ] || sed -i "s|^CFLAGS =|CFLAGS = -fdebug-prefix-map=$here=/usr/src/nginx|" objs/Makefile ;; esac`;

/**
 * Shell: the toolchain as it names itself, a line each after `@@toolchain`: the compiler, musl for a
 * static build (its loader prints its version), the linker and make. What the artifact identity is
 * made of besides the inputs; a tool that is not there gives no line.
 */
function toolchainScript(cc: string, isStatic: boolean): string {
  const lines = [
    `${cc} --version 2>/dev/null | head -n 1`,
    ...(isStatic ? ['for l in /lib/ld-musl-*.so.1; do [ -x "$l" ] && "$l" 2>&1 | sed -n "s/^Version /musl /p"; done'] : []),
    'ld --version 2>/dev/null | head -n 1',
    'make --version 2>/dev/null | head -n 1',
  ];
  return lines.map((l) => `{ ${l}; } | sed 's/^/@@toolchain /' || true`).join('\n');
}

/**
 * Build on a host, this machine or a node, the same way: the tarball streamed to a script that
 * unpacks it in a temporary folder, configures and makes (logs kept there, their tail shown on
 * failure), prints `nginx -V`; the binary is then read back as root and the folder removed.
 *
 * The folder is mktemp's, 0700 and root's, and stays so; the tarball is unpacked with
 * --no-same-owner (nginx's tarball says uid 1001: as root, tar would otherwise give the tree to
 * whichever account has that uid on the build host, free to edit configure or the Makefile while
 * root runs them) and --no-same-permissions (no mode from the tarball, only root's umask 077). The
 * binary never becomes readable by the login user: it comes back over the root shell's own channel.
 */
async function buildOn(conn: Connection, version: string, tarball: string, configure: string[], isStatic: boolean, out: string, say: Say): Promise<{ versionOut: string; toolchain: string[] }> {
  const cc = isStatic ? 'musl-gcc' : 'cc';
  const script = `set -e
umask 077
export LC_ALL=C TZ=UTC SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH}
d=$(mktemp -d "\${TMPDIR:-/tmp}/k8s-ha-build-XXXXXX")
echo "@@dir $d"
cat > "$d/src.tar.gz"
tar --no-same-owner --no-same-permissions -xzf "$d/src.tar.gz" -C "$d"
cd "$d/nginx-${version}"
${isStatic ? MUSL_COMPAT : ''}./configure ${configure.map(quote).join(' ')} > "$d/configure.log" 2>&1 || { tail -n 30 "$d/configure.log" >&2; exit 1; }
${PREFIX_MAP}
make -j"$(nproc)" > "$d/make.log" 2>&1 || { tail -n 30 "$d/make.log" >&2; exit 1; }
${isStatic ? 'strip objs/nginx\n' : ''}${toolchainScript(cc, isStatic)}
objs/nginx -V 2>&1
`;
  say(`building on ${conn.name}: configure and make`);
  // On this machine the folder is tracked as soon as it exists: a second Ctrl-C removes it too.
  let seen = '';
  const onOutput = (chunk: string) => {
    if (conn.name !== 'controller' || seen.includes('\n')) return;
    seen += chunk;
    const d = /^@@dir (\S+)$/m.exec(seen)?.[1];
    if (d) track(d);
  };
  const r = await conn.execAsRoot(script, { input: fs.createReadStream(tarball), kind: 'build', onOutput });
  const dir = /^@@dir (\S+)$/m.exec(r.stdout)?.[1];
  // A second Ctrl-C leaves at once: the folder goes then too (on this machine; a node's /tmp is cleaned by the next build).
  if (dir && conn.name === 'controller') track(dir);
  try {
    if (r.code !== 0) {
      throw new BuildError(
        new CommandError(conn.where, './configure && make', r.code, r.signal, r.stderr || r.stdout, { step: 'building nginx' }).message,
        { hint: 'the output above is from the nginx build; check the toolchain and configure arguments' },
      );
    }
    await fsp.writeFile(out, await readAsRoot(conn, `${dir}/nginx-${version}/objs/nginx`), { mode: 0o600 });
    const toolchain = [...r.stdout.matchAll(/^@@toolchain (.*)$/gm)].map((m) => m[1]!.trim()).filter(Boolean);
    return { versionOut: r.stdout.replace(/^@@(dir|toolchain) .*\n/gm, ''), toolchain };
  } finally {
    if (dir) {
      await conn.execAsRoot(`rm -rf ${quote(dir)}`).catch(() => undefined);
      forget(dir);
    }
  }
}

/**
 * A file read by the root shell and sent back base64 over its channel, with its size to check the
 * whole of it arrived. Not SFTP: that reads as the login user, and with sudo the file (in root's
 * 0700 build folder) is not theirs to read; opening it up for them would let them change it too.
 */
export async function readAsRoot(conn: Connection, file: string): Promise<Buffer> {
  const r = await conn.execAsRoot(`f=${quote(file)}; wc -c < "$f" && base64 < "$f"`, { kind: 'build' });
  if (r.code !== 0) throw new BuildError(new CommandError(conn.where, `base64 < ${file}`, r.code, r.signal, r.stderr || r.stdout, { step: 'reading the built nginx' }).message);
  const [size, ...rest] = r.stdout.split('\n');
  const bytes = Buffer.from(rest.join(''), 'base64');
  if (bytes.length !== Number(size?.trim())) throw new BuildError(`reading the built nginx from ${conn.where}: got ${bytes.length} bytes of ${size?.trim()}`);
  return bytes;
}
