/**
 * The shared artifact store (build.store): a folder every operator's runs read from and write to,
 * on a mount they share (NFS or any other), or on a build node they all reach over SSH
 * (`HOST:PATH`, read and written over SFTP: store-fs.ts). Laid out like the cache (`builds/KEY/kube-nginx`,
 * `kube-lb/KEY/kube-lb`, each with its build.json), under the same key: what a build is made from.
 *
 * The local cache stays the working copy; the store is the shared truth. A run takes the store's
 * entry when it has a whole and safe one (throughStore: its binary's sha256 as its build.json
 * records, copied into the cache and checked again), else its cache's, else builds: holding the
 * store entry's lock, so two operators who need the same build at once make it once, on whichever
 * machine came first. What a run builds, or finds only in its own cache, is put into the store: the
 * binary first, under a temporary name then renamed, build.json last, so a reader sees a whole entry
 * or none.
 *
 * Whoever can write to the store can put a binary on every node, run there as root: give it to the
 * operators' group alone. A store others may write to is refused at load (local-files.ts).
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { forget, partName, track, writeFileAtomic } from '../util/tempdir.js';
import { LockHeldError, withCacheLock } from './cache.js';
import { sha256File, type Say } from './download.js';
import { localFs, type StoreFs } from './store-fs.js';

/** The store a run uses: its files (here, or a build node's) and its folder there. */
export interface Store {
  files: StoreFs;
  root: string;
}

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
export async function storeProblem(root: string, files: StoreFs = localFs, write = true): Promise<string | undefined> {
  const where = files.where(root);
  let st;
  try {
    st = await files.stat(root);
  } catch (e) {
    return `${where} cannot be read (${(e as Error).message})`;
  }
  if (!st) return `${where} does not exist: ${files.local ? 'mount the shared folder there (or make it)' : 'make it there (the login user, or their group, must be able to write to it)'}, or point build.store at it`;
  if (!st.dir) return `${where} is not a folder: point build.store at the shared folder`;
  if (st.mode & 0o002) {
    return `${where} is writable by every user of ${files.local ? 'this machine' : 'that host'} (mode ${st.mode.toString(8).padStart(4, '0')}): any of them could put a binary on every node; chmod o-w ${root} (the operators' group may write to it)`;
  }
  if (!write) return undefined;
  if (files.local) {
    try {
      await fsp.access(root, fs.constants.W_OK | fs.constants.X_OK);
      return undefined;
    } catch {
      return `${where} is not writable by uid ${process.getuid?.() ?? '?'}, who runs k8s-ha: give the operators' group write access to it (chmod g+w, and make this user a member)`;
    }
  }
  // On a build node: whether the login user may write there is known by writing.
  const probe = partName(path.join(root, '.k8s-ha-probe'));
  try {
    await files.createExcl(probe, '', 0o600);
  } catch {
    return `${where} is not writable by the user k8s-ha logs in as: give the operators' group write access to it (chmod g+w, and make this user a member)`;
  } finally {
    await files.rm(probe).catch(() => undefined);
  }
  return undefined;
}

/** Folders made in the store: writable by the group when the store's own folder is (and setgid when it is), so every operator may add entries. */
async function storeDirMode(store: Store): Promise<number> {
  const st = await store.files.stat(store.root);
  return 0o755 | ((st?.mode ?? 0) & 0o2020);
}

/** The entry's folders, each given the store's group bits. */
async function mkdirs(store: Store, dir: string, mode: number): Promise<void> {
  for (let d = store.root, parts = path.relative(store.root, dir).split(path.sep); parts.length; ) {
    d = path.join(d, parts.shift()!);
    await store.files.mkdir(d, mode);
  }
}

/**
 * Why an entry of the store cannot be trusted, or undefined: each of its folders and files must be
 * what it seems (no symbolic link, which could lead anywhere) and not writable by others.
 */
async function unsafe(files: StoreFs, e: Entry): Promise<string | undefined> {
  for (const p of [path.dirname(e.dir), e.dir, e.binary, e.meta]) {
    const st = await files.lstat(p);
    if (!st) return `${files.where(p)} is missing`;
    if (st.link) return `${files.where(p)} is a symbolic link`;
    if (st.mode & 0o002) return `${files.where(p)} is writable by others`;
  }
  return undefined;
}

/** The store's entry when whole, safe, and made from what is asked for (`accepts`, from its build.json): its metadata; else why not. */
async function wholeEntry<T extends { sha256: string }>(files: StoreFs, e: Entry, accepts: (meta: T) => boolean): Promise<{ meta: T } | { why: string }> {
  const why = await unsafe(files, e);
  if (why) return { why };
  const text = await files.readText(e.meta);
  let found: T | undefined;
  try {
    found = text === undefined ? undefined : (JSON.parse(text) as T);
  } catch {
    /* not JSON: not whole */
  }
  if (!found || (await files.sha256(e.binary)) !== found.sha256) return { why: `${files.where(e.binary)} is not the file its build.json records` };
  if (!accepts(found)) return { why: `${files.where(e.meta)} does not describe what its key is made from` };
  return { meta: found };
}

/**
 * The store's entry into the local cache entry: its binary copied to a temporary name nobody can
 * guess (O_EXCL), checked against the sha256 its build.json records (it may have changed since),
 * renamed; then its build.json written beside it.
 */
async function take<T extends { sha256: string; path: string }>(found: T, store: Store, from: Entry, local: Entry): Promise<(T & { cached: true; fromStore: true }) | undefined> {
  await fsp.mkdir(local.dir, { recursive: true, mode: 0o700 });
  const tmp = track(partName(local.binary));
  try {
    await store.files.download(from.binary, tmp);
    await fsp.chmod(tmp, 0o755);
    if ((await sha256File(tmp)) !== found.sha256) return undefined;
    await fsp.rename(tmp, local.binary);
  } finally {
    await fsp.rm(tmp, { force: true });
    forget(tmp);
  }
  const meta = { ...found, path: local.binary, cached: false };
  delete (meta as { fromStore?: boolean }).fromStore;
  delete (meta as { stored?: string }).stored;
  await writeFileAtomic(local.meta, JSON.stringify(meta, null, 2) + '\n');
  return { ...meta, path: local.binary, cached: true, fromStore: true };
}

/**
 * A local entry put into the store as it is: the binary to a temporary name nobody can guess (made
 * with O_EXCL, never through a link planted there), checked there against its sha256, renamed;
 * build.json last, the same way. The caller made the entry's folder and holds its lock.
 */
async function put<T extends { sha256: string }>(local: Entry, store: Store, to: Entry, made: T): Promise<void> {
  const files = store.files;
  // In a folder of this machine, removed however the process ends; a build node's are removed here, or left as .part files.
  const tmp = partName(to.binary);
  const metaTmp = partName(to.meta);
  if (files.local) [tmp, metaTmp].forEach(track);
  try {
    await files.upload(local.binary, tmp, 0o755);
    if ((await files.sha256(tmp)) !== made.sha256) throw new Error(`${local.binary} changed while it was copied to the store ${files.where(to.dir)}`);
    await files.rename(tmp, to.binary);
    const meta = JSON.parse(await fsp.readFile(local.meta, 'utf8')) as Record<string, unknown>;
    await files.createExcl(metaTmp, JSON.stringify({ ...meta, path: to.binary, cached: false }, null, 2) + '\n', 0o644);
    await files.rename(metaTmp, to.meta);
  } finally {
    await files.rm(tmp).catch(() => undefined);
    await files.rm(metaTmp).catch(() => undefined);
    [tmp, metaTmp].forEach(forget);
  }
}

/**
 * An artifact through the store, which is the shared truth: the store's entry when it has a whole
 * one made from these inputs (the cache's copy when that is the same file, else the store's copied
 * into the cache); else the cache's, put into the store unless another controller is putting one
 * there now; else made by `make` (which builds into the cache under its own lock) while holding the
 * store entry's lock, then put into the store. Without a store, the cache's or `make`'s.
 */
export async function throughStore<T extends { sha256: string; path: string; cached: boolean }>(o: {
  store: Store | undefined;
  kind: StoreKind;
  key: string;
  name: string;
  local: Entry;
  what: string;
  say: Say;
  fromLocal: () => Promise<T | undefined>;
  make: () => Promise<T>;
  /** Whether a store entry's build.json describes what the key is made from. */
  accepts: (meta: T) => boolean;
}): Promise<T & { stored?: string; fromStore?: boolean }> {
  const local = await o.fromLocal();
  if (!o.store) return local ?? o.make();
  const store = o.store;
  const files = store.files;
  const label = files.where(store.root);
  const entry = entryIn(store.root, o.kind, o.key, o.name);
  const stored = files.where(entry.binary);
  const mode = await storeDirMode(store);
  const there = await wholeEntry<T>(files, entry, o.accepts);
  if ('meta' in there) {
    if (local?.sha256 === there.meta.sha256) return { ...local, stored };
    const taken = await take(there.meta, store, entry, o.local);
    if (taken) {
      o.say(`${o.what}: taken from the store ${label}${local ? ` (this machine's cache had another build, sha256 ${local.sha256.slice(0, 12)}: the store's is the one every controller deploys)` : ''}`);
      return { ...taken, stored };
    }
  } else if ((await files.lstat(entry.meta)) || (await files.lstat(entry.binary))) {
    o.say(`${o.what}: the store's entry is not used (${there.why}); it is made again`);
  }
  await mkdirs(store, entry.dir, mode);
  if (local) {
    // Put there unless another controller is at it: this run needs nothing from it.
    try {
      await withCacheLock(entry.dir, `${o.what} (store ${label})`, o.say, async () => {
        if (!('meta' in (await wholeEntry<T>(files, entry, o.accepts)))) await put(o.local, store, entry, local);
      }, 0, mode, files);
      return { ...local, stored };
    } catch (e) {
      if (!(e instanceof LockHeldError)) throw e;
      return local;
    }
  }
  const made = await withCacheLock(entry.dir, `${o.what} (store ${label})`, o.say, async () => {
    const now = await wholeEntry<T>(files, entry, o.accepts);
    if ('meta' in now) {
      const taken = await take(now.meta, store, entry, o.local);
      if (taken) return taken;
    }
    const m = await o.make();
    await put(o.local, store, entry, m);
    return m;
  }, undefined, mode, files);
  return { ...made, stored };
}

/** An entry's build.json in the store when the entry is whole and safe, without taking its binary: what --check and status need (its sha256). */
export async function storedEntry<T extends { sha256: string }>(store: Store | undefined, kind: StoreKind, key: string, name: string, accepts: (meta: T) => boolean): Promise<(T & { path: string }) | undefined> {
  if (!store) return undefined;
  const e = entryIn(store.root, kind, key, name);
  const there = await wholeEntry<T>(store.files, e, accepts);
  return 'meta' in there ? { ...there.meta, path: store.files.where(e.binary) } : undefined;
}

/** Every whole and safe entry of `kind` in the store, with its key: what status and --check compare per CPU architecture. */
export async function storedEntries<T extends { sha256: string }>(store: Store, kind: StoreKind, name: string, accepts: (meta: T) => boolean): Promise<(T & { path: string; key: string })[]> {
  const out: (T & { path: string; key: string })[] = [];
  for (const key of await store.files.readdir(path.join(store.root, kind))) {
    const e = entryIn(store.root, kind, key, name);
    const there = await wholeEntry<T>(store.files, e, accepts).catch(() => ({ why: 'unreadable' }));
    if ('meta' in there) out.push({ ...there.meta, path: store.files.where(e.binary), key });
  }
  return out;
}
