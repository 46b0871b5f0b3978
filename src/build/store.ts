/**
 * The shared artifact store (build.store): a folder every operator's runs read from and write to,
 * on a mount they share (NFS or any other). Laid out like the cache (`builds/KEY/kube-nginx`,
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
import { LockHeldError, readCached, withCacheLock } from './cache.js';
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

/** Folders made in the store: writable by the group when the store's own folder is (and setgid when it is), so every operator may add entries. */
async function storeDirMode(root: string): Promise<number> {
  const st = await fsp.stat(root);
  return 0o755 | (st.mode & 0o2020);
}

async function mkdirs(root: string, dir: string, mode: number): Promise<void> {
  for (let d = root, parts = path.relative(root, dir).split(path.sep); parts.length; ) {
    d = path.join(d, parts.shift()!);
    await fsp.mkdir(d).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'EEXIST') throw e;
    });
    // mkdir's mode is cut by the umask; the group bits must be what the store's own folder has.
    if ((await fsp.lstat(d)).uid === process.getuid?.()) await fsp.chmod(d, mode);
  }
}

/**
 * Why an entry of the store cannot be trusted, or undefined: each of its folders and files must be
 * what it seems (no symbolic link, which could lead anywhere) and not writable by others.
 */
async function unsafe(e: Entry): Promise<string | undefined> {
  for (const p of [path.dirname(e.dir), e.dir, e.binary, e.meta]) {
    const st = await fsp.lstat(p).catch(() => undefined);
    if (!st) return `${p} is missing`;
    if (st.isSymbolicLink()) return `${p} is a symbolic link`;
    if (st.mode & 0o002) return `${p} is writable by others`;
  }
  return undefined;
}

/**
 * `from` copied to `to` whole: to a temporary name nobody can guess, made with O_EXCL (never
 * through a link planted there), given `mode` through its own descriptor, checked against `sha256`
 * (the source may have changed between its check and the copy), then renamed.
 */
async function copyWhole(from: string, to: string, mode: number, sha256: string): Promise<boolean> {
  const tmp = track(partName(to));
  try {
    await fsp.copyFile(from, tmp, fs.constants.COPYFILE_EXCL);
    const fh = await fsp.open(tmp, 'r');
    try {
      await fh.chmod(mode);
    } finally {
      await fh.close();
    }
    if ((await sha256File(tmp)) !== sha256) return false;
    await fsp.rename(tmp, to);
    return true;
  } finally {
    await fsp.rm(tmp, { force: true });
    forget(tmp);
  }
}

/** The store's entry when whole, safe, and made from what is asked for (`accepts`, from its build.json): its metadata; else why not. */
async function wholeEntry<T extends { sha256: string }>(e: Entry, accepts: (meta: T) => boolean): Promise<{ meta: T } | { why: string }> {
  const why = await unsafe(e);
  if (why) return { why };
  const found = await readCached<T>(e.binary, e.meta).catch(() => undefined);
  if (!found) return { why: `${e.binary} is not the file its build.json records` };
  if (!accepts(found)) return { why: `${e.meta} does not describe what its key is made from` };
  return { meta: found };
}

/** The store's entry into the local cache entry: its binary copied and checked again, then its build.json written beside it. */
async function take<T extends { sha256: string; path: string }>(found: T, store: Entry, local: Entry): Promise<(T & { cached: true; fromStore: true }) | undefined> {
  await fsp.mkdir(local.dir, { recursive: true, mode: 0o700 });
  if (!(await copyWhole(store.binary, local.binary, 0o755, found.sha256))) return undefined;
  const meta = { ...found, path: local.binary, cached: false };
  delete (meta as { fromStore?: boolean }).fromStore;
  delete (meta as { stored?: string }).stored;
  await writeFileAtomic(local.meta, JSON.stringify(meta, null, 2) + '\n');
  return { ...meta, path: local.binary, cached: true, fromStore: true };
}

/** A local entry put into the store as it is, binary first, build.json last; the caller made the entry's folder and holds its lock. */
async function put<T extends { sha256: string }>(local: Entry, store: Entry, made: T): Promise<void> {
  if (!(await copyWhole(local.binary, store.binary, 0o755, made.sha256))) throw new Error(`${local.binary} changed while it was copied to the store`);
  const meta = JSON.parse(await fsp.readFile(local.meta, 'utf8')) as Record<string, unknown>;
  await writeFileAtomic(store.meta, JSON.stringify({ ...meta, path: store.binary, cached: false }, null, 2) + '\n', 0o644);
}

/**
 * An artifact through the store, which is the shared truth: the store's entry when it has a whole
 * one made from these inputs (the cache's copy when that is the same file, else the store's copied
 * into the cache); else the cache's, put into the store unless another controller is putting one
 * there now; else made by `make` (which builds into the cache under its own lock) while holding the
 * store entry's lock, then put into the store. Without a store, the cache's or `make`'s.
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
  /** Whether a store entry's build.json describes what the key is made from. */
  accepts: (meta: T) => boolean;
}): Promise<T & { stored?: string; fromStore?: boolean }> {
  const local = await o.fromLocal();
  if (!o.store) return local ?? o.make();
  const root = o.store;
  const entry = entryIn(root, o.kind, o.key, o.name);
  const mode = await storeDirMode(root);
  const there = await wholeEntry<T>(entry, o.accepts);
  if ('meta' in there) {
    if (local?.sha256 === there.meta.sha256) return { ...local, stored: entry.binary };
    const taken = await take(there.meta, entry, o.local);
    if (taken) {
      o.say(`${o.what}: taken from the store ${root}${local ? ` (this machine's cache had another build, sha256 ${local.sha256.slice(0, 12)}: the store's is the one every controller deploys)` : ''}`);
      return { ...taken, stored: entry.binary };
    }
  } else if (fs.existsSync(entry.meta) || fs.existsSync(entry.binary)) {
    o.say(`${o.what}: the store's entry is not used (${there.why}); it is made again`);
  }
  await mkdirs(root, entry.dir, mode);
  if (local) {
    // Put there unless another controller is at it: this run needs nothing from it.
    try {
      await withCacheLock(entry.dir, `${o.what} (store ${root})`, o.say, async () => {
        if (!('meta' in (await wholeEntry<T>(entry, o.accepts)))) await put(o.local, entry, local);
      }, 0, mode);
      return { ...local, stored: entry.binary };
    } catch (e) {
      if (!(e instanceof LockHeldError)) throw e;
      return local;
    }
  }
  const made = await withCacheLock(entry.dir, `${o.what} (store ${root})`, o.say, async () => {
    const now = await wholeEntry<T>(entry, o.accepts);
    if ('meta' in now) {
      const taken = await take(now.meta, entry, o.local);
      if (taken) return taken;
    }
    const m = await o.make();
    await put(o.local, entry, m);
    return m;
  }, undefined, mode);
  return { ...made, stored: entry.binary };
}

/** An entry's build.json in the store when the entry is whole and safe, without taking its binary: what --check and status need (its sha256). */
export async function storedEntry<T extends { sha256: string }>(store: string | undefined, kind: StoreKind, key: string, name: string, accepts: (meta: T) => boolean): Promise<(T & { path: string }) | undefined> {
  if (!store) return undefined;
  const e = entryIn(store, kind, key, name);
  const there = await wholeEntry<T>(e, accepts);
  return 'meta' in there ? { ...there.meta, path: e.binary } : undefined;
}
