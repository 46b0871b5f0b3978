/**
 * The shared artifact store (build.store): a folder every operator's runs read from and write to,
 * on a mount they share (NFS or any other). Laid out like the cache (`builds/KEY/kube-nginx`,
 * `kube-lb/KEY/kube-lb`, each with its build.json), under the same key: what a build is made from.
 *
 * The local cache stays the working copy. A run looks there first, then in the store (an entry is
 * taken only whole: its binary's sha256 as its build.json records, copied into the cache and checked
 * again), and builds only when neither has it: holding the store entry's lock, so two operators who
 * need the same build at once make it once, on whichever machine came first. What a run builds, or
 * finds only in its own cache, is put into the store: the binary first, under a temporary name then
 * renamed, build.json last, so a reader sees a whole entry or none.
 *
 * Whoever can write to the store can put a binary on every node, run there as root: give it to the
 * operators' group alone. A store others may write to is refused at load (local-files.ts).
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { forget, track } from '../util/tempdir.js';
import { readCached, withCacheLock, writeFileAtomic } from './cache.js';
import { sha256File, type Say } from './download.js';

/** One entry: its folder, its binary and its build.json. */
export interface Entry {
  dir: string;
  binary: string;
  meta: string;
}

export type StoreKind = 'builds' | 'kube-lb';

export function entryIn(root: string, kind: StoreKind, key: string, name: string): Entry {
  const dir = path.join(root, kind, key);
  return { dir, binary: path.join(dir, name), meta: path.join(dir, 'build.json') };
}

/**
 * Why a folder cannot be the store, or undefined: it must exist (it is a shared mount, not something
 * to make), be a folder this user may write to, and not be writable by others.
 */
export async function storeProblem(root: string): Promise<string | undefined> {
  let st;
  try {
    st = await fsp.stat(root);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? `${root} does not exist: mount the shared folder there (or make it), or point build.store at it` : `${root} cannot be read (${code})`;
  }
  if (!st.isDirectory()) return `${root} is not a folder: point build.store at the shared folder`;
  if (st.mode & 0o002) {
    return `${root} is writable by every user of this machine (mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')}): any of them could put a binary on every node; chmod o-w ${root} (the operators' group may write to it)`;
  }
  try {
    await fsp.access(root, fs.constants.W_OK | fs.constants.X_OK);
  } catch {
    return `${root} is not writable by uid ${process.getuid?.() ?? '?'}, who runs k8s-ha: give the operators' group write access to it (chmod g+w, and make this user a member)`;
  }
  return undefined;
}

/** Folders made in the store: writable by the group when the store's own folder is, so every operator may add entries. */
async function storeDirMode(root: string): Promise<number> {
  const st = await fsp.stat(root);
  // The setgid bit too, so what is made in them keeps the store's group.
  return 0o755 | (st.mode & 0o2020);
}

async function mkdirs(root: string, dir: string, mode: number): Promise<void> {
  for (let d = root, parts = path.relative(root, dir).split(path.sep); parts.length; ) {
    d = path.join(d, parts.shift()!);
    await fsp.mkdir(d).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'EEXIST') throw e;
    });
    // mkdir's mode is cut by the umask; the group bit must be what the store's own folder has.
    if ((await fsp.stat(d)).uid === process.getuid?.()) await fsp.chmod(d, mode);
  }
}

/** `from` copied to `to` whole (a temporary name, then rename) with `mode`; its sha256 checked against `sha256` once copied. */
async function copyWhole(from: string, to: string, mode: number, sha256: string): Promise<boolean> {
  const tmp = track(`${to}.${process.pid}.${Date.now()}.part`);
  try {
    await fsp.copyFile(from, tmp);
    await fsp.chmod(tmp, mode);
    // What was copied is what the entry records (the source may have changed between the check and the copy).
    if ((await sha256File(tmp)) !== sha256) return false;
    await fsp.rename(tmp, to);
    return true;
  } finally {
    await fsp.rm(tmp, { force: true });
    forget(tmp);
  }
}

/**
 * The store's entry, taken into the local cache entry when the store has it whole: the binary
 * copied and checked against the sha256 its build.json records, then that build.json written beside
 * it. Undefined when the store has no whole entry.
 */
export async function takeFromStore<T extends { sha256: string; path: string }>(store: Entry, local: Entry): Promise<(T & { cached: true; fromStore: true }) | undefined> {
  const found = await readCached<T>(store.binary, store.meta).catch(() => undefined);
  if (!found) return undefined;
  await fsp.mkdir(local.dir, { recursive: true, mode: 0o700 });
  if (!(await copyWhole(store.binary, local.binary, 0o755, found.sha256))) return undefined;
  const meta = { ...found, path: local.binary, cached: false };
  delete (meta as { fromStore?: boolean }).fromStore;
  await writeFileAtomic(local.meta, JSON.stringify(meta, null, 2) + '\n');
  return { ...meta, path: local.binary, cached: true, fromStore: true };
}

/** A local entry put into the store as it is, binary first, build.json last; the caller holds the store entry's lock. */
async function put<T extends { sha256: string }>(root: string, local: Entry, store: Entry, made: T): Promise<void> {
  const mode = await storeDirMode(root);
  await mkdirs(root, store.dir, mode);
  if (!(await copyWhole(local.binary, store.binary, 0o755, made.sha256))) throw new Error(`${local.binary} changed while it was copied to the store`);
  const meta = JSON.parse(await fsp.readFile(local.meta, 'utf8')) as Record<string, unknown>;
  await writeFileAtomic(store.meta, JSON.stringify({ ...meta, path: store.binary, cached: false }, null, 2) + '\n');
  await fsp.chmod(store.meta, 0o644);
}

/** A local entry put into the store unless the store has it whole already; under the store entry's lock. */
export async function putInStore<T extends { sha256: string }>(root: string, local: Entry, store: Entry, made: T, what: string, say: Say): Promise<void> {
  if (await readCached(store.binary, store.meta).catch(() => undefined)) return;
  await mkdirs(root, path.dirname(store.dir), await storeDirMode(root));
  await withCacheLock(store.dir, what, say, async () => {
    if (!(await readCached(store.binary, store.meta).catch(() => undefined))) await put(root, local, store, made);
  }, undefined, await storeDirMode(root));
}

/**
 * An artifact through the store: the local cache's (put into the store too when the store lacks
 * it), else the store's (taken into the cache), else made by `make` (which builds into the local
 * cache under its own lock) while holding the store entry's lock, then put into the store. Without
 * a store, the cache's or `make`'s.
 */
export async function throughStore<T extends { sha256: string; path: string; cached: boolean }>(o: {
  store: string | undefined;
  kind: StoreKind;
  key: string;
  name: string;
  local: Entry;
  what: string;
  say: Say;
  fromLocal: () => Promise<T | undefined>;
  make: () => Promise<T>;
}): Promise<T & { stored?: string; fromStore?: boolean }> {
  const local = await o.fromLocal();
  if (!o.store) return local ?? o.make();
  const entry = entryIn(o.store, o.kind, o.key, o.name);
  if (local) {
    await putInStore(o.store, o.local, entry, local, o.what, o.say);
    return { ...local, stored: entry.binary };
  }
  const taken = await takeFromStore<T>(entry, o.local);
  if (taken) {
    o.say(`${o.what}: taken from the store ${o.store}`);
    return { ...taken, stored: entry.binary };
  }
  await mkdirs(o.store, path.dirname(entry.dir), await storeDirMode(o.store));
  const made = await withCacheLock(entry.dir, `${o.what} (store ${o.store})`, o.say, async () => {
    const there = await takeFromStore<T>(entry, o.local);
    if (there) return there;
    const m = await o.make();
    await put(o.store!, o.local, entry, m);
    return m;
  }, undefined, await storeDirMode(o.store));
  return { ...made, stored: entry.binary };
}

/** An entry's build.json in the store, without taking its binary: what --check and status need (its sha256). */
export async function storedMeta<T>(store: string | undefined, kind: StoreKind, key: string, name: string): Promise<(T & { path: string }) | undefined> {
  if (!store) return undefined;
  const e = entryIn(store, kind, key, name);
  const text = await fsp.readFile(e.meta, 'utf8').catch(() => undefined);
  return text ? { ...(JSON.parse(text) as T), path: e.binary } : undefined;
}
