/**
 * kube-lb as one executable: src/proxy bundled with esbuild, injected into a
 * copy of this machine's Node binary (a Node single executable application).
 * Cached by what it is made of (the bundle, the Node version and platform), so
 * the next deploy reuses it; its sha256 is recorded beside it.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import { createRequire } from 'node:module';
import path from 'node:path';
import * as esbuild from 'esbuild';
import { BuildError, K8sHaError } from '../errors.js';
import { run } from '../util/exec.js';
import { cacheDir, ensureCacheRoot, packageRoot } from '../util/paths.js';
import { forget, makeTempDir, removeTemp, track } from '../util/tempdir.js';
import { readCached, withCacheLock, writeFileAtomic } from './cache.js';
import { sha256File, type Say } from './download.js';

/** Node's fuse that marks an executable as carrying a single-executable blob. */
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';

export interface KubeLbBinary {
  path: string;
  sha256: string;
  size: number;
  cached: boolean;
  /** `kube-lb --version` */
  version: string;
  /** The Node.js it carries, e.g. v20.20.2 linux-x64. */
  node: string;
  key: string;
}

/** The proxy's entry point, compiled: the package ships dist/, not src/. */
function entryPoint(): string {
  const entry = path.join(packageRoot(), 'dist', 'proxy', 'cli.js');
  if (!fs.existsSync(entry)) {
    throw new BuildError(`cannot build kube-lb: ${entry} is missing`, { hint: 'run npm run build (npm ci does it) and try again' });
  }
  return entry;
}

/** The bundle (one CommonJS file with its dependencies) and the cache key of the executable made from it. */
export async function kubeLbBundle(): Promise<{ code: Buffer; key: string }> {
  const entry = entryPoint();
  const bundle = () =>
    esbuild.build({
      entryPoints: [entry],
      bundle: true,
      platform: 'node',
      target: `node${process.versions.node.split('.')[0]}`,
      format: 'cjs',
      write: false,
      logLevel: 'silent',
      legalComments: 'none',
    });
  const out = await stage('bundling src/proxy with esbuild', bundle, "esbuild's package for this platform must be installed and run here (npm ci installs it)");
  const code = Buffer.from(out.outputFiles[0]!.contents);
  const key = createHash('sha256').update(code).update(`\0${process.version}\0${process.platform}\0${process.arch}`).digest('hex').slice(0, 16);
  return { code, key };
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

/** A kube-lb executable already in the cache for this bundle, without building (for `status`). */
export async function cachedKubeLb(): Promise<KubeLbBinary | undefined> {
  const { key } = await kubeLbBundle();
  const p = paths(key);
  const meta = await fsp.readFile(p.meta, 'utf8').catch(() => undefined);
  return meta ? { ...(JSON.parse(meta) as KubeLbBinary), path: p.binary, cached: true } : undefined;
}

export async function ensureKubeLb(say: Say): Promise<KubeLbBinary> {
  say('bundling src/proxy');
  const { code, key } = await kubeLbBundle();
  // Nothing is read from a cache another user could have written to.
  await ensureCacheRoot();
  const p = paths(key);
  const cached = await fromCache(p);
  if (cached) return cached;
  // One builder per key: a second deploy needing the same executable waits for it, then finds it here.
  return withCacheLock(p.dir, 'kube-lb', say, async () => (await fromCache(p)) ?? build(code, key, p, say));
}

const fromCache = (p: ReturnType<typeof paths>) => readCached<KubeLbBinary>(p.binary, p.meta);

async function build(code: Buffer, key: string, p: ReturnType<typeof paths>, say: Say): Promise<KubeLbBinary> {
  // mkdtemp's folder is 0700 and stays so: the executable made in it is run as root on every node.
  const work = await stage(`making its work folder in ${os.tmpdir()}`, () => makeTempDir('k8s-ha-kube-lb-'), 'TMPDIR must name a folder that exists and that this user may write to');
  try {
    const made = await stage(`making it in ${work}`, () => makeExecutable(code, work, say));
    return await stage(`storing it in the cache ${p.dir}`, () => store(made, key, p));
  } finally {
    await removeTemp(work);
  }
}

/** The single executable, made in `work`, and what its `--version` says. */
async function makeExecutable(code: Buffer, work: string, say: Say): Promise<{ exe: string; version: string }> {
  const bundle = path.join(work, 'kube-lb.cjs');
  const blob = path.join(work, 'kube-lb.blob');
  const exe = path.join(work, 'kube-lb');
  await fsp.writeFile(bundle, code);
  await fsp.writeFile(path.join(work, 'sea-config.json'), JSON.stringify({ main: bundle, output: blob, disableExperimentalSEAWarning: true }));
  say('making the single-executable blob');
  const sea = await run(process.execPath, ['--experimental-sea-config', path.join(work, 'sea-config.json')]);
  if (sea.code !== 0) throw new BuildError(`cannot build kube-lb: node --experimental-sea-config failed:\n${sea.stderr.trim()}`, { hint: 'kube-lb needs Node.js 20 or later on this machine' });
  say(`injecting it into a copy of ${process.execPath} (${process.version})`);
  await fsp.copyFile(fs.realpathSync(process.execPath), exe);
  await fsp.chmod(exe, 0o755);
  // In a child process: postject's ELF writer prints harmless warnings straight to stderr.
  const cli = createRequire(import.meta.url).resolve('postject/dist/cli.js');
  const inj = await run(process.execPath, [cli, exe, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', SEA_FUSE]);
  if (inj.code !== 0) throw new BuildError(`cannot build kube-lb: postject failed:\n${inj.stderr.trim().split('\n').slice(-10).join('\n')}`);
  const v = await run(exe, ['--version']).catch((e: Error) => ({ code: null, stdout: '', stderr: e.message }));
  if (v.code !== 0 || !/^kube-lb \S+/.test(v.stdout)) {
    throw new BuildError(`cannot build kube-lb: the executable made in ${work} does not run here: ${v.code === null ? '' : `exit ${v.code}\n`}${(v.stderr || v.stdout).trim()}`, {
      hint: v.code === null ? 'a temp folder mounted noexec cannot run it: set TMPDIR to one that can' : undefined,
    });
  }
  return { exe, version: v.stdout.trim() };
}

/** Into the cache under its key, with its sha256 beside it. */
async function store(made: { exe: string; version: string }, key: string, p: ReturnType<typeof paths>): Promise<KubeLbBinary> {
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
    node: `${process.version} ${process.platform}-${process.arch}`,
    key,
  };
  await writeFileAtomic(p.meta, JSON.stringify(meta, null, 2) + '\n');
  return meta;
}
