import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { EnvironmentError } from '../errors.js';

/** The k8s-ha package root (the folder holding package.json), from src/ or dist/ alike. */
export function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!fs.existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error('k8s-ha package root not found');
    dir = up;
  }
  return dir;
}

/**
 * The package's own files inside a single executable (scripts/build-executable.js): its entry point
 * embeds package.json, the playbooks, kube-lb's bundle and the runtime pins, and registers each
 * one's path in the executable here before anything reads them. Empty when k8s-ha runs from a
 * folder (a clone, an npm install).
 */
const embedded = new Map<string, string>();

/** Called once by a single executable's entry point: relative path in the package -> its path inside the executable. */
export function registerEmbedded(files: Record<string, string>): void {
  for (const [rel, at] of Object.entries(files)) embedded.set(rel, at);
}

/** Whether this process is the single executable, which carries its files inside itself. */
export const isExecutable = (): boolean => embedded.size > 0;

/** A file the package carries (`playbooks/kube-lb.yaml`), wherever this copy of k8s-ha keeps it. */
export function packageFile(...rel: string[]): string {
  return embedded.get(rel.join('/')) ?? path.join(packageRoot(), ...rel);
}

/** A page or file of the package as a message names it: its path on disk, or, inside the executable, the page and the version. */
export function packageDoc(...rel: string[]): string {
  return isExecutable() ? `${rel.join('/')} of k8s-ha's documentation` : path.join(packageRoot(), ...rel);
}

/** Where downloads, built binaries and lab images' inputs are kept between runs. */
export function cacheDir(...parts: string[]): string {
  const base =
    process.env.K8S_HA_CACHE_DIR ??
    path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'k8s-ha');
  return path.join(base, ...parts);
}

/**
 * The cache folder, made 0700 and checked: what is in it (source tarballs, built binaries) is copied
 * to every node and run there as root, so no other account may be able to change it. One that
 * belongs to another user, or that its group or others can write to, is refused, not repaired: a
 * chmod would bless whatever another user may already have put there. One that others can only read
 * (0755, as earlier versions made it) is tightened to 0700: nobody else can have changed it.
 */
export async function ensureCacheRoot(): Promise<string> {
  const root = cacheDir();
  await fsp.mkdir(root, { recursive: true, mode: 0o700 });
  const st = await fsp.stat(root);
  const uid = process.getuid?.();
  if (!st.isDirectory()) throw new EnvironmentError(`the k8s-ha cache ${root} is not a folder`, { hint: 'remove it, or point K8S_HA_CACHE_DIR at a folder of your own' });
  if (uid !== undefined && st.uid !== uid) {
    throw new EnvironmentError(`the k8s-ha cache ${root} belongs to uid ${st.uid}, not to uid ${uid} who runs k8s-ha: that user could change the binaries built there before they reach the nodes`, {
      hint: 'point K8S_HA_CACHE_DIR at a folder of your own (k8s-ha makes it, mode 0700), or remove that one',
    });
  }
  if (st.mode & 0o022) {
    const mode = (st.mode & 0o7777).toString(8).padStart(4, '0');
    throw new EnvironmentError(`the k8s-ha cache ${root} is writable by ${st.mode & 0o020 ? 'its group' : 'others'} (mode ${mode}): its sources and binaries may have been changed by another user`, {
      hint: `remove it (rm -rf ${root}): k8s-ha makes it again, mode 0700, and downloads and builds afresh`,
    });
  }
  if (st.mode & 0o077) await fsp.chmod(root, 0o700);
  return root;
}

/** A folder in the checked cache, made 0700 like the cache itself. */
export async function privateCacheDir(...parts: string[]): Promise<string> {
  await ensureCacheRoot();
  const dir = cacheDir(...parts);
  await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
  return dir;
}

/** A path as a person wants to read it: relative when under the current folder, absolute otherwise. */
export function displayPath(p: string): string {
  const r = path.relative(process.cwd(), p);
  return r && !r.startsWith('..') && !path.isAbsolute(r) ? r : p;
}
