/**
 * Build nginx with the stream module, once per (version, tarball, configure
 * arguments, build host OS), on this machine or on a node, as the seed does.
 * The binary is cached; the next deploy does not rebuild.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { BuildError, CommandError, NoToolchainError } from '../errors.js';
import { LocalConnection, type Connection } from '../connect/connection.js';
import { emptyRequest, factScript, osKey, parseFacts, type OsFacts } from '../facts/host.js';
import { run } from '../util/exec.js';
import { cacheDir } from '../util/paths.js';
import { forget, track } from '../util/tempdir.js';
import { quote } from '../util/quote.js';
import { fetchVerified, sha256File, type Say } from './download.js';

export interface NginxSource {
  version: string;
  sources: string[];
  sha256: string;
}

export interface BuildHost {
  /** `controller`, or the node's name. */
  name: string;
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
  osKey: string;
  /** `nginx -V` output. */
  configure: string;
  /** What the build was made from, so `status` can find it without building. */
  version?: string;
  sourceSha256?: string;
  configureArgs?: string[];
}

/**
 * Why a binary built on `built` cannot run on a host, or undefined when it can. nginx built with
 * --without-http links against nothing but the C library: the CPU architecture and the glibc
 * version (at least the build host's) decide.
 */
export function cannotRun(built: { arch: string; glibc: string } | undefined, host: OsFacts): string | undefined {
  if (!built) return undefined;
  if (built.arch !== host.arch) return `the nginx binary is for ${built.arch}, this node is ${host.arch}`;
  const v = (x: string) => x.split('.').map(Number);
  const [a, b] = [v(built.glibc), v(host.glibc)];
  if (!a[0] || Number.isNaN(a[0])) return undefined; // the build's glibc is unknown: the binary's own -v check decides
  if (!host.glibc || Number.isNaN(b[0])) return `the nginx binary needs glibc ${built.glibc}; this node has no glibc`;
  const older = b[0]! < a[0]! || (b[0] === a[0] && (b[1] ?? 0) < (a[1] ?? 0));
  return older ? `the nginx binary needs glibc ${built.glibc} or later (built on glibc ${built.glibc}), this node has ${host.glibc}` : undefined;
}

/** The architecture and glibc of the host a cached build was made on, from its OS key. */
export function builtFor(b: Pick<BuiltBinary, 'osKey'>): { arch: string; glibc: string } | undefined {
  const m = /-([^-]+)-glibc([\d.]*)$/.exec(b.osKey);
  return m ? { arch: m[1]!, glibc: m[2]! } : undefined;
}

export function buildKey(src: NginxSource, configure: string[], os: OsFacts): string {
  return createHash('sha256')
    .update(JSON.stringify([src.version, src.sha256, configure, osKey(os)]))
    .digest('hex')
    .slice(0, 16);
}

/** Commands that install a C toolchain with the host's package manager. */
export function toolchainInstallCommand(pm: BuildHost['packageManager']): string | undefined {
  if (pm === 'apt-get') {
    return 'export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq --no-install-recommends gcc make libc6-dev';
  }
  if (pm === 'dnf') return 'dnf install -y -q gcc make glibc-devel';
  if (pm === 'yum') return 'yum install -y -q gcc make glibc-devel';
  return undefined;
}

export function hasToolchain(tools: string[]): boolean {
  return (tools.includes('gcc') || tools.includes('cc')) && tools.includes('make');
}

/** This machine, read by the same facts script as every node: the same OS key, tools and package manager. */
async function controllerFacts() {
  const req = emptyRequest();
  return parseFacts(req, (await run('sh', ['-c', factScript(req)])).stdout);
}

export async function controllerOs(): Promise<OsFacts> {
  return (await controllerFacts()).os;
}

export async function controllerBuildHost(installToolchain: boolean): Promise<BuildHost> {
  const f = await controllerFacts();
  return { name: 'controller', os: f.os, tools: f.tools, packageManager: f.packageManager, installToolchain, connection: new LocalConnection() };
}

function noToolchain(host: BuildHost, why: string): BuildError {
  return new NoToolchainError(`cannot build nginx on ${host.name}: ${why}`, {
    hint:
      host.name === 'controller'
        ? 'install gcc and make here, set build.installToolchain: true, or build on a node of the same OS (build.host: node-1); hosts that can get no compiler can run kube-lb instead'
        : `install gcc and make on ${host.name}, allow build.installToolchain, or build elsewhere; hosts that can get no compiler can run kube-lb instead`,
  });
}

export async function ensureNginxBinary(src: NginxSource, configure: string[], host: BuildHost, say: Say): Promise<BuiltBinary> {
  const key = buildKey(src, configure, host.os);
  const dir = cacheDir('builds', key);
  const binary = path.join(dir, 'kube-nginx');
  const metaFile = path.join(dir, 'build.json');
  if (fs.existsSync(binary) && fs.existsSync(metaFile)) {
    const meta = JSON.parse(await fsp.readFile(metaFile, 'utf8')) as BuiltBinary;
    if ((await sha256File(binary)) === meta.sha256) return { ...meta, path: binary, cached: true };
  }

  const tarball = await fetchVerified(`nginx-${src.version}.tar.gz`, src.sources, src.sha256, say);

  if (!hasToolchain(host.tools)) {
    const install = toolchainInstallCommand(host.packageManager);
    if (!host.installToolchain) throw noToolchain(host, 'no gcc/make, and build.installToolchain is off');
    if (!install) throw noToolchain(host, 'no gcc/make, and no apt-get, dnf or yum to install them');
    say(`installing gcc and make on ${host.name} (${host.packageManager})`);
    const r = await host.connection.execAsRoot(install);
    if (r.code !== 0) {
      const tail = (r.stderr || r.stdout).trim().split('\n').slice(-8);
      // The first line says it all (it is what a recap shows); the rest of the package manager's words follow.
      throw noToolchain(host, `installing gcc and make with ${host.packageManager} failed (exit ${r.code}): ${tail[tail.length - 1] ?? ''}\n${tail.join('\n')}`);
    }
  }

  await fsp.mkdir(dir, { recursive: true });
  const tmpBinary = track(`${binary}.${process.pid}.part`);
  const versionOut = await buildOn(host.connection, src.version, tarball, configure, tmpBinary, say);
  if (!/--with-stream/.test(versionOut)) {
    throw new BuildError(`the built nginx does not list --with-stream in nginx -V:\n${versionOut}`);
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
    osKey: osKey(host.os),
    configure: versionOut.trim(),
    version: src.version,
    sourceSha256: src.sha256,
    configureArgs: configure,
  };
  await fsp.writeFile(metaFile, JSON.stringify(meta, null, 2) + '\n');
  return meta;
}

/**
 * A build already in the cache for this source and these arguments, without building:
 * the one for `os` when given, else any. For `status`, which must not build.
 */
export async function cachedNginxBinary(src: NginxSource, configure: string[], os?: OsFacts): Promise<BuiltBinary | undefined> {
  if (os) {
    const dir = cacheDir('builds', buildKey(src, configure, os));
    const meta = await fsp.readFile(path.join(dir, 'build.json'), 'utf8').catch(() => undefined);
    return meta ? { ...(JSON.parse(meta) as BuiltBinary), path: path.join(dir, 'kube-nginx'), cached: true } : undefined;
  }
  const root = cacheDir('builds');
  for (const key of await fsp.readdir(root).catch(() => [] as string[])) {
    const meta = await fsp.readFile(path.join(root, key, 'build.json'), 'utf8').catch(() => undefined);
    if (!meta) continue;
    const b = JSON.parse(meta) as BuiltBinary;
    if (b.version === src.version && b.sourceSha256 === src.sha256 && JSON.stringify(b.configureArgs) === JSON.stringify(configure)) {
      return { ...b, path: path.join(root, key, 'kube-nginx'), cached: true };
    }
  }
  return undefined;
}


/**
 * Build on a host, this machine or a node, the same way: the tarball streamed to a script that
 * unpacks it in a temporary folder, configures and makes (logs kept there, their tail shown on
 * failure), prints `nginx -V`; the binary is then fetched and the folder removed.
 */
async function buildOn(conn: Connection, version: string, tarball: string, configure: string[], out: string, say: Say): Promise<string> {
  const script = `set -e
d=$(mktemp -d "\${TMPDIR:-/tmp}/k8s-ha-build-XXXXXX")
chmod 755 "$d"
echo "@@dir $d"
cat > "$d/src.tar.gz"
tar -xzf "$d/src.tar.gz" -C "$d"
cd "$d/nginx-${version}"
./configure ${configure.map(quote).join(' ')} > "$d/configure.log" 2>&1 || { tail -n 30 "$d/configure.log" >&2; exit 1; }
make -j"$(nproc)" > "$d/make.log" 2>&1 || { tail -n 30 "$d/make.log" >&2; exit 1; }
chmod 755 objs objs/nginx
objs/nginx -V 2>&1
`;
  say(`building on ${conn.name}: configure and make`);
  const r = await conn.execAsRoot(script, { input: fs.createReadStream(tarball) });
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
    await conn.download(`${dir}/nginx-${version}/objs/nginx`, out);
    return r.stdout.replace(/^@@dir .*\n/m, '');
  } finally {
    if (dir) {
      await conn.execAsRoot(`rm -rf ${quote(dir)}`).catch(() => undefined);
      forget(dir);
    }
  }
}
