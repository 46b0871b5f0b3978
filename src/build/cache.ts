/**
 * The build cache's own safety: metadata written whole or not at all, and one builder per entry.
 * Two deploys (two operators, or two terminals) that need the same build at once make it once: the
 * second waits for the first and takes its result. The same lock guards an entry of the shared
 * store (store.ts), which other machines write to as well.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { BuildError } from '../errors.js';
import { partName } from '../util/tempdir.js';
import { sha256File, type Say } from './download.js';
import { FsError, localFs, type StoreFs } from './store-fs.js';

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
};

/**
 * How often a holder touches its lock, and how long a lock of another machine may stay the same
 * (text and time, as this process's own clock sees it change) before its holder counts as gone: a
 * process on another machine cannot be asked whether it runs, and its clock may not be ours.
 * Changed only by tests.
 */
export const lockTiming = { heartbeatMs: 5_000, staleMs: 60_000 };

let machine: string | undefined;
/** This machine, as a lock names it: systemd's machine ID (two hosts may share a name), else the host name. */
export function machineId(): string {
  if (machine === undefined) {
    let id = '';
    try {
      id = fs.readFileSync('/etc/machine-id', 'utf8').trim();
    } catch {
      /* none: the host name alone */
    }
    machine = /^[0-9a-f]{32}$/.test(id) ? id : '-';
  }
  return machine;
}

/** Who holds a lock, from its text: `PID HOST MACHINE` (`PID` alone, as earlier versions wrote it: this machine). */
export function lockHolder(text: string): { pid: number; host: string; local: boolean } {
  const [pid, host, id] = text.split(/\s+/);
  const local = !host || (id && id !== '-' && machineId() !== '-' ? id === machineId() : host === os.hostname());
  return { pid: Number(pid), host: host || os.hostname(), local };
}

/** The lock of an entry is another's: waited for until `waitMs`, or at once with `waitMs` 0. */
export class LockHeldError extends BuildError {}

/**
 * Run `fn` holding the lock of entry `dir` (a file made with O_EXCL holding our PID, host name and
 * machine ID), in this machine's cache or in a shared store (build.store: a folder perhaps on NFS,
 * or a build node's over SFTP, written by other machines too). Another process holding it: wait,
 * saying so, until it lets go, up to `waitMs`; `fn` then finds that process's result. A lock is
 * taken over when its holder is gone: a process of this machine that no longer runs, or a lock of
 * another machine that has not changed for lockTiming.staleMs (its holder touches it every
 * heartbeatMs while it builds). Taking over is a rename to a name of our own, so two waiters cannot
 * both take it, nor remove a lock made since.
 */
export async function withCacheLock<T>(dir: string, what: string, say: Say, fn: () => Promise<T>, waitMs = 30 * 60_000, mode = 0o700, files: StoreFs = localFs): Promise<T> {
  await files.mkdir(dir, mode);
  const lock = path.join(dir, '.lock');
  const me = `${process.pid} ${os.hostname()} ${machineId()}`;
  const end = Date.now() + waitMs;
  let told = false;
  let emptySince = 0;
  /** The lock as last seen, and when (by our clock) it last changed. */
  let seen = { text: '', mtimeMs: 0, since: Date.now() };
  for (;;) {
    try {
      await files.createExcl(lock, `${me}\n`, 0o644);
      break;
    } catch (e) {
      const code = e instanceof FsError ? e.code : undefined;
      // The entry's folder removed by a builder that failed: make it again and retry.
      if (code === 'ENOENT') {
        await files.mkdir(dir, mode);
        continue;
      }
      if (code === 'EACCES') {
        throw new BuildError(`${what}: cannot make the lock ${files.where(lock)}: ${code}`, { hint: `this user may not write to ${files.where(dir)}: give the operators' group write access to it (chmod g+w)` });
      }
      if (code !== 'EEXIST') throw e;
    }
    const text = (await files.readText(lock))?.trim();
    if (text === undefined) continue; // let go of just now: try to take it
    const mtimeMs = (await files.lstat(lock))?.mtimeMs ?? 0;
    if (text !== seen.text || mtimeMs !== seen.mtimeMs) seen = { text, mtimeMs, since: Date.now() };
    const holder = lockHolder(text);
    // An empty lock is one being written; one empty for seconds was left by a process killed in between.
    emptySince = holder.pid ? 0 : emptySince || Date.now();
    const gone = holder.pid ? (holder.local ? !alive(holder.pid) : Date.now() - seen.since > lockTiming.staleMs) : Date.now() - emptySince > 5000;
    if (gone) {
      await takeOver(files, lock, text);
      continue;
    }
    if (!holder.pid) {
      await new Promise((r) => setTimeout(r, 50));
      continue;
    }
    const who = `another k8s-ha (pid ${holder.pid}${holder.local ? '' : ` on ${holder.host}`})`;
    if (Date.now() >= end) {
      throw new LockHeldError(`${what}: ${who} ${waitMs ? `has been building it for ${Math.round(waitMs / 60_000)} min` : 'is building it'}`, { hint: `wait for it, or remove ${files.where(lock)} if that process is not k8s-ha` });
    }
    if (!told) say(`${what}: ${who} is building it; waiting for its result`);
    told = true;
    await new Promise((r) => setTimeout(r, 500));
  }
  // Ours only: a lock another process took over (it thought us gone) is its own.
  const release = async () => {
    if ((await files.readText(lock))?.trim() === me) await files.rm(lock);
  };
  // On this machine, also when the process leaves at once (a second Ctrl-C); a build node's lock is
  // then left to go stale (lockTiming.staleMs), as a controller that vanished leaves it.
  const releaseSync = () => {
    if (readLockSync(lock) === me) fs.rmSync(lock, { force: true });
  };
  if (files.local) process.on('exit', releaseSync);
  // Touched while held, so a waiter on another machine sees it is alive.
  let untouched = false;
  const heartbeat = setInterval(() => {
    files.touch(lock).then(
      () => (untouched = false),
      (e: Error) => {
        // Said once: a waiter elsewhere takes a lock over once it has not changed for lockTiming.staleMs.
        if (!untouched) say(`${what}: cannot touch the lock ${files.where(lock)} (${e.message}); another controller may take it over in ${Math.round(lockTiming.staleMs / 1000)} s and build the same`);
        untouched = true;
      },
    );
  }, lockTiming.heartbeatMs);
  heartbeat.unref();
  try {
    return await fn();
  } finally {
    clearInterval(heartbeat);
    if (files.local) process.off('exit', releaseSync);
    await release().catch(() => undefined);
    // A build that failed leaves no empty entry behind.
    await files.rmdir(dir).catch(() => undefined);
  }
}

function readLockSync(lock: string): string | undefined {
  try {
    return fs.readFileSync(lock, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/**
 * Take over a lock whose holder is gone: renamed to a name of our own (atomic: of two waiters, one
 * gets it), then removed if it is the lock judged gone. If it is not (its holder let go and another
 * took it in between), it is put back unless yet another lock is there by now.
 */
async function takeOver(files: StoreFs, lock: string, judged: string): Promise<void> {
  const mine = partName(lock);
  try {
    await files.rename(lock, mine);
  } catch {
    return; // gone already, or another waiter took it
  }
  if ((await files.readText(mine))?.trim() === judged) {
    await files.rm(mine);
    return;
  }
  try {
    await files.link(mine, lock);
  } catch {
    // A new lock is there: the one moved aside was let go of meanwhile, or its holder finds itself
    // overtaken. Or the link was refused (fs.protected_hardlinks: the lock is another user's): then
    // it goes back by name, unless a lock is there by now.
    if (!(await files.lstat(lock))) {
      await files.rename(mine, lock);
      return;
    }
  }
  await files.rm(mine);
}

/** A cache entry when whole: its metadata, and the binary beside it with the sha256 recorded there. */
export async function readCached<T extends { sha256: string }>(binary: string, metaFile: string): Promise<(T & { path: string; cached: true }) | undefined> {
  const text = await fsp.readFile(metaFile, 'utf8').catch(() => undefined);
  if (!text || !fs.existsSync(binary)) return undefined;
  const meta = JSON.parse(text) as T;
  return (await sha256File(binary)) === meta.sha256 ? { ...meta, path: binary, cached: true } : undefined;
}
