/**
 * kube-lb as one executable: src/proxy bundled with esbuild when the package is built
 * (scripts/bundle-kube-lb.js), compiled with `bun build --compile`
 * onto the Bun runtime this package pins (package.json's optionalDependencies), never onto the Node.js
 * that runs the controller. Cached by what it is made of (the bundle, the Bun version and the
 * architecture), so the next deploy reuses it; its sha256 is recorded beside it.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import { createRequire } from 'node:module';
import path from 'node:path';
import { BuildError, K8sHaError } from '../errors.js';
import { run } from '../util/exec.js';
import { cacheDir, ensureCacheRoot, isExecutable, packageFile } from '../util/paths.js';
import { forget, makeTempDir, removeTemp, track, writeFileAtomic } from '../util/tempdir.js';
import { readCached, withCacheLock } from './cache.js';
import { storedEntry, throughStore, type Store } from './store.js';
import * as tar from 'tar';
import { KUBE_LB_VERSION } from '../proxy/version.js';
import { fetchPackage, sha256File, type Say } from './download.js';

export interface KubeLbBinary {
  path: string;
  sha256: string;
  size: number;
  cached: boolean;
  /** `kube-lb --version` */
  version: string;
  /** The runtime it carries, e.g. Bun 1.4.5 linux-x64. */
  runtime: string;
  /** The CPU architecture it runs on, as uname -m says it: x86_64, aarch64. */
  arch: string;
  key: string;
  /** What it was meant to be: a hash of the bundle (kube-lb's code and its dependencies), the runtime's version and its target; absent in builds before it was recorded. */
  identity?: string;
  /** Found in the shared store (build.store), not in this machine's cache. */
  fromStore?: boolean;
  /** Where it is in the shared store, when there is one. */
  stored?: string;
}

/**
 * The Bun runtime packages this one pins (package.json's optionalDependencies, one per architecture,
 * same version; npm installs the one for this machine): on x86_64 Bun's baseline build, which needs
 * only x86-64-v2 (2008 and later), not the AVX2 its default build dies without (a node's CPU, or a
 * VM's conservative CPU model, must not decide whether its balancer starts).
 */
export const BUN_PACKAGES: Readonly<Record<string, { pkg: string; target: string; arch: KubeLbArch }>> = {
  x64: { pkg: '@oven/bun-linux-x64-baseline', target: 'bun-linux-x64-baseline', arch: 'x86_64' },
  arm64: { pkg: '@oven/bun-linux-aarch64', target: 'bun-linux-arm64', arch: 'aarch64' },
};

/** The CPU architectures kube-lb is built for, as uname -m names them. */
export type KubeLbArch = 'x86_64' | 'aarch64';
export const KUBE_LB_ARCHES: readonly KubeLbArch[] = Object.values(BUN_PACKAGES).map((p) => p.arch);

/** This machine's architecture, as uname -m names it (undefined: none kube-lb is built on). */
export function controllerArch(): KubeLbArch | undefined {
  return BUN_PACKAGES[process.arch]?.arch;
}

/** The pinned Bun runtime for this machine's architecture: its binary, version, compile target and uname -m. */
export function pinnedBun(): { binary: string; version: string; target: string; arch: string } {
  const p = BUN_PACKAGES[process.arch];
  if (process.platform !== 'linux' || !p) {
    throw new BuildError(`cannot build kube-lb on ${process.platform}-${process.arch}`, { hint: 'run k8s-ha on Linux, x86_64 or aarch64' });
  }
  // The single executable is itself the pinned Bun (it was compiled on it): run as `bun` (BUN_BE_BUN),
  // it compiles kube-lb; the runtime kube-lb is compiled onto is then downloaded, verified, as for another architecture.
  if (isExecutable()) return { binary: process.execPath, version: process.versions.bun ?? '?', target: p.target, arch: p.arch };
  let manifest: string;
  try {
    manifest = createRequire(import.meta.url).resolve(`${p.pkg}/package.json`);
  } catch {
    throw new BuildError(`cannot build kube-lb: the Bun runtime package ${p.pkg} is not installed`, { hint: 'npm ci installs it (an optional dependency of k8s-ha, for this architecture)' });
  }
  const version = (JSON.parse(fs.readFileSync(manifest, 'utf8')) as { version: string }).version;
  return { binary: path.join(path.dirname(manifest), 'bin', 'bun'), version, target: p.target, arch: p.arch };
}

/** What `npm run build` recorded from the lock (scripts/runtime-pins.js): each architecture's Bun package. */
interface RuntimePin {
  pkg: string;
  target: string;
  arch: KubeLbArch;
  version: string;
  /** sha512-BASE64, from package-lock.json. */
  integrity: string;
  tarball: string;
}

function runtimePins(): { version: string; packages: Record<string, RuntimePin> } {
  const file = packageFile('dist', 'build', 'runtime-pins.json');
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as { version: string; packages: Record<string, RuntimePin> };
  } catch (e) {
    throw new BuildError(`cannot build kube-lb for another architecture: ${file} cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, { hint: 'run npm run build (npm ci does it) and try again' });
  }
}

/**
 * The Bun binary to compile kube-lb onto for `arch`, in `work`: this machine's installed package for
 * its own architecture; for another, the pinned package downloaded from the registry (cached, its
 * sha512 checked against the lock's) and unpacked.
 */
export async function runtimeFor(arch: KubeLbArch, work: string, say: Say): Promise<{ binary: string; version: string; target: string }> {
  const own = pinnedBun();
  if (arch === own.arch && !isExecutable()) return own;
  const pins = runtimePins();
  const pin = pins.packages[arch];
  if (!pin) throw new BuildError(`cannot build kube-lb for ${arch}: no Bun package is pinned for it`, { hint: `kube-lb is built for ${KUBE_LB_ARCHES.join(' and ')}` });
  if (pin.version !== own.version) {
    throw new BuildError(`cannot build kube-lb for ${arch}: the lock pins Bun ${pin.version}, but Bun ${own.version} is installed here`, { hint: 'run npm ci, then npm run build' });
  }
  const registry = process.env.npm_config_registry?.replace(/\/?$/, '/');
  const url = registry && registry.startsWith('https://') ? pin.tarball.replace(/^https:\/\/registry\.npmjs\.org\//, registry) : pin.tarball;
  const tgz = await fetchPackage(`${pin.pkg.replace('/', '+')}-${pin.version}.tgz`, url, pin.integrity, say);
  await tar.x({ file: tgz, cwd: work, filter: (p) => p === 'package/bin/bun' });
  const binary = path.join(work, 'package', 'bin', 'bun');
  if (!fs.existsSync(binary)) throw new BuildError(`cannot build kube-lb for ${arch}: ${tgz} has no package/bin/bun`, { hint: 'remove it from the cache and try again' });
  return { binary, version: pin.version, target: pin.target };
}

/** Where `npm run build` puts the bundle (scripts/bundle-kube-lb.js): shipped in the package, so every installed copy compiles the same bytes. */
export const KUBE_LB_BUNDLE = ['dist', 'proxy', 'kube-lb.cjs'];

/** The bundle (one CommonJS file with its dependencies) and the cache key of the executable made from it for `arch`. */
export async function kubeLbBundle(arch: KubeLbArch = controllerArch() ?? 'x86_64', file = packageFile(...KUBE_LB_BUNDLE)): Promise<{ code: Buffer; key: string; identity: string }> {
  const code = await stage(`reading its bundle ${file}`, () => fsp.readFile(file), 'run npm run build (npm ci does it) and try again; an installed k8s-ha has it: reinstall it');
  const bun = pinnedBun();
  const target = Object.values(BUN_PACKAGES).find((p) => p.arch === arch)?.target ?? arch;
  // What it is made of: the bundle, the runtime and its target (and the layout of build.json, 2).
  const identity = createHash('sha256').update(code).update(`\0bun ${bun.version}\0${target}\0build.json 2`).digest('hex');
  return { code, key: identity.slice(0, 16), identity: `sha256:${identity}` };
}

/**
 * One stage of making kube-lb: whatever fails in it (the bundler, a temp folder, the cache) is a build
 * failure that names the stage (exit 4, before any node is touched), not an internal error.
 */
async function stage<T>(doing: string, fn: () => Promise<T>, hint?: string): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof K8sHaError) throw e;
    throw new BuildError(`cannot build kube-lb: ${doing} failed: ${(e as Error).message}`, { hint, cause: e });
  }
}

function paths(key: string) {
  const dir = cacheDir('kube-lb', key);
  return { dir, binary: path.join(dir, 'kube-lb'), meta: path.join(dir, 'build.json') };
}

/** A kube-lb executable already in the cache (or the store) for this bundle, without building (for `status`). */
export async function cachedKubeLb(arch: KubeLbArch = controllerArch() ?? 'x86_64', store?: Store): Promise<KubeLbBinary | undefined> {
  const { key, identity } = await kubeLbBundle(arch);
  const p = paths(key);
  const meta = await fsp.readFile(p.meta, 'utf8').catch(() => undefined);
  if (meta) return { ...(JSON.parse(meta) as KubeLbBinary), path: p.binary, cached: true, identity };
  const stored = await storedEntry<KubeLbBinary>(store, 'kube-lb', key, 'kube-lb', (b) => b.key === key && b.arch === arch);
  return stored && { ...stored, cached: true, fromStore: true, identity };
}

export async function ensureKubeLb(say: Say, arch: KubeLbArch = controllerArch() ?? 'x86_64', store?: Store): Promise<KubeLbBinary> {
  say(`making kube-lb${arch === controllerArch() ? '' : ` for ${arch}`}`);
  const { code, key, identity } = await kubeLbBundle(arch);
  // Nothing is read from a cache another user could have written to.
  await ensureCacheRoot();
  const p = paths(key);
  const got = await throughStore<KubeLbBinary>({
    store,
    kind: 'kube-lb',
    key,
    name: 'kube-lb',
    local: { dir: p.dir, binary: p.binary, meta: p.meta },
    what: `kube-lb for ${arch}`,
    say,
    fromLocal: () => fromCache(p),
    accepts: (b) => b.key === key && b.arch === arch,
    // One builder per key: a second deploy needing the same executable waits for it, then finds it here.
    make: () => withCacheLock(p.dir, 'kube-lb', say, async () => (await fromCache(p)) ?? build(code, key, p, say, arch)),
  });
  // The key is the identity's first 16 digits: an entry found by it has this identity (build.json before it was recorded says none).
  return { ...got, identity };
}

const fromCache = (p: ReturnType<typeof paths>) => readCached<KubeLbBinary>(p.binary, p.meta);

async function build(code: Buffer, key: string, p: ReturnType<typeof paths>, say: Say, arch: KubeLbArch): Promise<KubeLbBinary> {
  // mkdtemp's folder is 0700 and stays so: the executable made in it is run as root on every node.
  const work = await stage(`making its work folder in ${os.tmpdir()}`, () => makeTempDir('k8s-ha-kube-lb-'), 'TMPDIR must name a folder that exists and that this user may write to');
  try {
    const made = await stage(`making it in ${work}`, () => makeExecutable(code, work, say, arch));
    return await stage(`storing it in the cache ${p.dir}`, () => store(made, key, p));
  } finally {
    await removeTemp(work);
  }
}

/** ELF e_machine of each architecture: what a binary made for another one is checked by. */
const ELF_MACHINE: Record<KubeLbArch, number> = { x86_64: 62, aarch64: 183 };

/** The single executable, made in `work`, and what its `--version` says. */
async function makeExecutable(code: Buffer, work: string, say: Say, arch: KubeLbArch): Promise<{ exe: string; version: string; runtime: string; arch: string }> {
  const bundle = path.join(work, 'kube-lb.cjs');
  const exe = path.join(work, 'kube-lb');
  await fsp.writeFile(bundle, code);
  const compiler = pinnedBun();
  const bun = await runtimeFor(arch, work, say);
  say(`compiling it onto Bun ${bun.version} (${bun.target})`);
  // No .env or bunfig.toml is read from the folder it runs in: it runs as a service, configured by its flags alone.
  const args = ['build', '--compile', `--target=${bun.target}`, `--compile-executable-path=${bun.binary}`, '--no-compile-autoload-dotenv', '--no-compile-autoload-bunfig', bundle, '--outfile', exe];
  const made = await run(compiler.binary, args, { cwd: work, env: { ...process.env, BUN_INSTALL_CACHE_DIR: path.join(work, 'cache'), DO_NOT_TRACK: '1', ...(isExecutable() ? { BUN_BE_BUN: '1' } : {}) } });
  if (made.code !== 0) throw new BuildError(`cannot build kube-lb: bun build --compile failed:\n${(made.stderr || made.stdout).trim().split('\n').slice(-10).join('\n')}`);
  const runtime = `Bun ${bun.version} ${bun.target.replace(/^bun-/, '')}`;
  if (arch !== compiler.arch) {
    // It cannot run here: its ELF header must say the architecture it is for.
    const head = (await fsp.readFile(exe)).subarray(0, 20);
    if (head.subarray(0, 4).toString('latin1') !== '\x7fELF' || head.readUInt16LE(18) !== ELF_MACHINE[arch]) {
      throw new BuildError(`cannot build kube-lb for ${arch}: what bun build made is not an ${arch} executable`);
    }
    return { exe, version: `kube-lb ${KUBE_LB_VERSION} (Bun ${bun.version})`, runtime, arch };
  }
  const v = await run(exe, ['--version']).catch((e: Error) => ({ code: null, stdout: '', stderr: e.message }));
  if (v.code !== 0 || !/^kube-lb \S+/.test(v.stdout)) {
    throw new BuildError(`cannot build kube-lb: the executable made in ${work} does not run here: ${v.code === null ? '' : `exit ${v.code}\n`}${(v.stderr || v.stdout).trim()}`, {
      hint: v.code === null ? 'a temp folder mounted noexec cannot run it: set TMPDIR to one that can' : undefined,
    });
  }
  return { exe, version: v.stdout.trim(), runtime, arch };
}

/** Into the cache under its key, with its sha256 beside it. */
async function store(made: { exe: string; version: string; runtime: string; arch: string }, key: string, p: ReturnType<typeof paths>): Promise<KubeLbBinary> {
  await fsp.mkdir(p.dir, { recursive: true, mode: 0o700 });
  const tmp = track(`${p.binary}.${process.pid}.part`);
  await fsp.copyFile(made.exe, tmp);
  await fsp.chmod(tmp, 0o755);
  await fsp.rename(tmp, p.binary);
  forget(tmp);
  const meta: KubeLbBinary = {
    path: p.binary,
    sha256: await sha256File(p.binary),
    size: (await fsp.stat(p.binary)).size,
    cached: false,
    version: made.version,
    runtime: made.runtime,
    arch: made.arch,
    key,
  };
  await writeFileAtomic(p.meta, JSON.stringify(meta, null, 2) + '\n');
  return meta;
}
