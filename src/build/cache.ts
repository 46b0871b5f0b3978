/**
 * The build cache's own safety: metadata written whole or not at all, and one builder per entry.
 * Two deploys (two operators, or two terminals) that need the same build at once make it once: the
 * second waits for the first and takes its result.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { BuildError } from '../errors.js';
import { forget, track } from '../util/tempdir.js';
import { sha256File, type Say } from './download.js';

/** Write a file whole or not at all: a reader never sees half of it (a temporary file beside it, then rename). */
export async function writeFileAtomic(file: string, text: string): Promise<void> {
  const tmp = track(`${file}.${process.pid}.${Date.now()}.part`);
  await fsp.writeFile(tmp, text);
  await fsp.rename(tmp, file);
  forget(tmp);
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
};

/** A lock file's text (`PID HOST`), or undefined when there is none. */
function readLock(lock: string): string | undefined {
  try {
    return fs.readFileSync(lock, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** How often a holder touches its lock, and how long untouched makes it stale: a holder on another machine cannot be asked whether it lives. */
export const LOCK_HEARTBEAT_MS = 5_000;
export const LOCK_STALE_MS = 60_000;

/** Who holds a lock, from its text: `PID HOST` (or `PID` alone, as earlier versions wrote it: this machine). */
export function lockHolder(text: string): { pid: number; host: string } {
  const [pid, host] = text.split(/\s+/);
  return { pid: Number(pid), host: host || os.hostname() };
}

/**
 * Run `fn` holding the lock of entry `dir` (a file made with O_EXCL holding our PID and host name),
 * in this machine's cache or in a shared store (build.store, perhaps on NFS, written by other
 * machines too). Another process holding it: wait, saying so, until it lets go, up to `waitMs`;
 * `fn` then finds that process's result. A lock is taken over when its holder is gone: a process of
 * this machine that no longer runs, or, from any machine, a lock not touched for LOCK_STALE_MS (its
 * holder touches it every LOCK_HEARTBEAT_MS while it builds).
 */
export async function withCacheLock<T>(dir: string, what: string, say: Say, fn: () => Promise<T>, waitMs = 30 * 60_000, mode = 0o700): Promise<T> {
  await fsp.mkdir(dir, { recursive: true, mode });
  const lock = path.join(dir, '.lock');
  const me = `${process.pid} ${os.hostname()}`;
  const end = Date.now() + waitMs;
  let told = false;
  let emptySince = 0;
  for (;;) {
    try {
      const fd = fs.openSync(lock, 'wx');
      fs.writeSync(fd, `${me}\n`);
      fs.closeSync(fd);
      break;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // The entry's folder removed by a builder that failed: make it again and retry.
      if (code === 'ENOENT') {
        await fsp.mkdir(dir, { recursive: true, mode });
        continue;
      }
      if (code !== 'EEXIST') throw e;
    }
    const text = readLock(lock);
    if (text === undefined) continue; // let go of just now: try to take it
    const holder = lockHolder(text);
    const age = Date.now() - (fs.statSync(lock, { throwIfNoEntry: false })?.mtimeMs ?? Date.now());
    // An empty lock is one being written; one empty for seconds was left by a process killed in between.
    emptySince = holder.pid ? 0 : emptySince || Date.now();
    const gone = holder.pid ? (holder.host === os.hostname() && !alive(holder.pid)) || age > LOCK_STALE_MS : Date.now() - emptySince > 5000;
    if (gone) {
      // Left by a process that is gone (killed mid-build): take it over, unless another waiter already did.
      if (readLock(lock) === text) fs.rmSync(lock, { force: true });
      continue;
    }
    if (!holder.pid) {
      await new Promise((r) => setTimeout(r, 50));
      continue;
    }
    const who = `another k8s-ha (pid ${holder.pid}${holder.host === os.hostname() ? '' : ` on ${holder.host}`})`;
    if (Date.now() >= end) throw new BuildError(`${what}: ${who} has been building it for ${Math.round(waitMs / 60_000)} min`, { hint: `wait for it, or remove ${lock} if that process is not k8s-ha` });
    if (!told) say(`${what}: ${who} is building it; waiting for its result`);
    told = true;
    await new Promise((r) => setTimeout(r, 500));
  }
  track(lock);
  // Touched while held, so a waiter on another machine sees it is alive.
  const heartbeat = setInterval(() => {
    const t = new Date();
    fs.utimes(lock, t, t, () => undefined);
  }, LOCK_HEARTBEAT_MS);
  heartbeat.unref();
  try {
    return await fn();
  } finally {
    clearInterval(heartbeat);
    // Ours only: a lock another process took over (it thought us gone) is its own.
    if (readLock(lock) === me) fs.rmSync(lock, { force: true });
    forget(lock);
    // A build that failed leaves no empty entry behind.
    try {
      fs.rmdirSync(dir);
    } catch {
      /* not empty: the entry was made */
    }
  }
}

/** A cache entry when whole: its metadata, and the binary beside it with the sha256 recorded there. */
export async function readCached<T extends { sha256: string }>(binary: string, metaFile: string): Promise<(T & { path: string; cached: true }) | undefined> {
  const text = await fsp.readFile(metaFile, 'utf8').catch(() => undefined);
  if (!text || !fs.existsSync(binary)) return undefined;
  const meta = JSON.parse(text) as T;
  return (await sha256File(binary)) === meta.sha256 ? { ...meta, path: binary, cached: true } : undefined;
}
