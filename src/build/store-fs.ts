/**
 * The few file operations the build cache's lock and the shared store need (cache.ts, store.ts),
 * on this machine (a local folder, an NFS mount) or on a build node over SFTP (build.store
 * HOST:PATH). Both give the same guarantees: a file made with O_EXCL (never through a link planted
 * there), a rename that replaces its target in one step, and a deadline on everything that waits.
 *
 * On a build node the files are read and written as the login user (no sudo): the store's folder
 * must be theirs, or their group's. A file's sha256 there is computed there (`sha256sum`), so
 * checking an entry does not copy it.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { SFTPWrapper, Stats } from 'ssh2';
import { BuildError } from '../errors.js';
import type { SshConnection } from '../connect/ssh.js';
import { deadlineOf, secondsOf } from '../connect/deadlines.js';
import { quote } from '../util/quote.js';
import { digestOf, sha256File } from './download.js';

export interface FileStat {
  /** Permission bits (and setgid, sticky). */
  mode: number;
  uid: number;
  mtimeMs: number;
  size: number;
  dir: boolean;
  link: boolean;
}

/** Failures callers tell apart, named as errno names them. */
export class FsError extends Error {
  constructor(
    readonly code: 'ENOENT' | 'EEXIST' | 'EACCES',
    message: string,
  ) {
    super(message);
  }
}

export interface StoreFs {
  /** On this machine: a lock left by a process of this machine can be asked whether it runs; released on exit. */
  readonly local: boolean;
  /** A path as messages name it: itself here, `HOST:PATH` on a build node. */
  where(p: string): string;
  lstat(p: string): Promise<FileStat | undefined>;
  /** Follows a link: the store's own folder may be one (a mount point's link). */
  stat(p: string): Promise<FileStat | undefined>;
  /** Made with `mode` (then chmod, past the umask, when it is ours), and its missing parents; one there already is fine. */
  mkdir(p: string, mode: number): Promise<void>;
  readText(p: string): Promise<string | undefined>;
  readdir(p: string): Promise<string[]>;
  /** A new file holding `data`, made with O_EXCL: FsError EEXIST when anything is there. */
  createExcl(p: string, data: string, mode: number): Promise<void>;
  /** Replaces `to` in one step. */
  rename(from: string, to: string): Promise<void>;
  link(from: string, to: string): Promise<void>;
  /** Gone already is fine. */
  rm(p: string): Promise<void>;
  /** Throws when not empty. */
  rmdir(p: string): Promise<void>;
  touch(p: string): Promise<void>;
  sha256(p: string): Promise<string | undefined>;
  /** This machine's `local` copied to a new file `to` (O_EXCL) with `mode`. */
  upload(local: string, to: string, mode: number): Promise<void>;
  /** `from` copied to a new file `local` (O_EXCL) on this machine. */
  download(from: string, local: string): Promise<void>;
  close(): void;
}

const code = (e: unknown) => (e as NodeJS.ErrnoException).code;
const fsError = (e: unknown): never => {
  const c = code(e);
  if (c === 'ENOENT' || c === 'EEXIST' || c === 'EACCES') throw new FsError(c, (e as Error).message);
  if (c === 'EPERM') throw new FsError('EACCES', (e as Error).message);
  throw e;
};
const statOf = (st: fs.Stats): FileStat => ({ mode: st.mode & 0o7777, uid: st.uid, mtimeMs: st.mtimeMs, size: st.size, dir: st.isDirectory(), link: st.isSymbolicLink() });

/** This machine's files. */
export const localFs: StoreFs = {
  local: true,
  where: (p) => p,
  lstat: async (p) => {
    const st = await fsp.lstat(p).catch(() => undefined);
    return st && statOf(st);
  },
  stat: async (p) => {
    const st = await fsp.stat(p).catch(() => undefined);
    return st && statOf(st);
  },
  mkdir: async (p, mode) => {
    await fsp.mkdir(p, { mode, recursive: true }).catch(fsError);
    // mkdir's mode is cut by the umask: the group bits must be what was asked.
    if ((await fsp.lstat(p)).uid === process.getuid?.()) await fsp.chmod(p, mode);
  },
  readText: (p) => fsp.readFile(p, 'utf8').catch(() => undefined),
  readdir: (p) => fsp.readdir(p).catch(() => [] as string[]),
  createExcl: async (p, data, mode) => {
    const fh = await fsp.open(p, 'wx', mode).catch(fsError);
    try {
      await fh.writeFile(data);
      await fh.chmod(mode);
    } finally {
      await fh.close();
    }
  },
  rename: (a, b) => fsp.rename(a, b).catch(fsError),
  link: (a, b) => fsp.link(a, b).catch(fsError),
  rm: (p) => fsp.rm(p, { force: true }),
  rmdir: (p) => fsp.rmdir(p),
  touch: async (p) => {
    const t = new Date();
    await fsp.utimes(p, t, t).catch(() => undefined);
  },
  sha256: (p) => sha256File(p).catch(() => undefined),
  upload: async (local, to, mode) => {
    await fsp.copyFile(local, to, fs.constants.COPYFILE_EXCL).catch(fsError);
    const fh = await fsp.open(to, 'r');
    try {
      await fh.chmod(mode);
    } finally {
      await fh.close();
    }
  },
  download: (from, local) => fsp.copyFile(from, local, fs.constants.COPYFILE_EXCL).catch(fsError),
  close: () => undefined,
};

/** `input` into `output`, then `done`; a failure on either side ends both (no handle left open) and is `done`'s. */
function copy(input: NodeJS.ReadableStream & { destroy(): void }, output: NodeJS.WritableStream & { destroy(): void; on(e: 'close', f: () => void): unknown }, done: (e?: Error) => void): void {
  const fail = (e: Error) => {
    input.destroy();
    output.destroy();
    done(e);
  };
  input.on('error', fail);
  output.on('error', fail);
  output.on('close', () => done(undefined));
  input.pipe(output);
}

/** SFTP's status codes (draft-ietf-secsh-filexfer-02) as errno names. */
const SFTP_CODES: Record<number, FsError['code']> = { 2: 'ENOENT', 3: 'EACCES' };

/**
 * A folder on a build node, through one SFTP session of the connection (opened on first use).
 * Every operation has a deadline: timeouts.command for one on metadata, timeouts.build for a copy
 * (a 110 MB kube-lb over a slow link). Past one, the session is ended and later operations fail.
 */
export class SftpFs implements StoreFs {
  readonly local = false;
  private session?: Promise<SFTPWrapper>;
  private broken?: Error;

  constructor(
    private readonly conn: SshConnection,
    /** The host as build.store names it. */
    private readonly host: string,
  ) {}

  where(p: string): string {
    return `${this.host}:${p}`;
  }

  /** The session, opened once within timeouts.command: a host that never answers the sftp subsystem request fails, it does not hang. */
  private sftp(): Promise<SFTPWrapper> {
    if (this.broken) return Promise.reject(this.broken);
    const hint = { hint: `check that ${this.host}'s sshd offers the sftp subsystem (Subsystem sftp in sshd_config)` };
    return (this.session ??= new Promise<SFTPWrapper>((resolve, reject) => {
      const ms = deadlineOf('command', this.conn.target.deadlines);
      const timer = setTimeout(() => {
        this.broken = new BuildError(`the build store on ${this.host}: no SFTP session within ${secondsOf(ms)} s (timeouts.command)`, hint);
        reject(this.broken);
      }, ms);
      timer.unref();
      this.conn.sftp().then(
        (s) => {
          clearTimeout(timer);
          if (this.broken) s.end();
          else resolve(s);
        },
        (e: Error) => {
          clearTimeout(timer);
          reject(new BuildError(`the build store on ${this.host}: no SFTP session: ${e.message}`, hint));
        },
      );
    }));
  }

  /** `op` on the session within the deadline of `kind`; an SFTP status as an FsError. */
  private async call<T>(what: string, p: string, op: (s: SFTPWrapper, cb: (err: Error | undefined | null, v?: T) => void) => void, kind: 'command' | 'build' = 'command'): Promise<T> {
    const s = await this.sftp();
    const ms = deadlineOf(kind, this.conn.target.deadlines);
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.broken = new BuildError(`the build store on ${this.host}: ${what} ${p} did not finish within ${secondsOf(ms)} s (timeouts.${kind})`, { hint: `check ${this.host} and the network to it, or raise timeouts.${kind}` });
        s.end();
        reject(this.broken);
      }, ms);
      timer.unref();
      const done = (err: Error | undefined | null, v?: T) => {
        clearTimeout(timer);
        if (!err) return resolve(v as T);
        const c = SFTP_CODES[(err as { code?: number }).code ?? -1];
        reject(c ? new FsError(c, `${what} ${this.where(p)}: ${err.message}`) : new Error(`${what} ${this.where(p)}: ${err.message}`));
      };
      // ssh2 throws at once for a request the server does not support (posix-rename@openssh.com on a server that is not OpenSSH).
      try {
        op(s, done);
      } catch (e) {
        done(e as Error);
      }
    });
  }

  private async statWith(p: string, how: 'lstat' | 'stat'): Promise<FileStat | undefined> {
    try {
      const st = await this.call<Stats>(how, p, (s, cb) => s[how](p, cb));
      return { mode: st.mode & 0o7777, uid: st.uid, mtimeMs: st.mtime * 1000, size: st.size, dir: st.isDirectory(), link: st.isSymbolicLink() };
    } catch (e) {
      if (e instanceof FsError && e.code === 'ENOENT') return undefined;
      throw e;
    }
  }

  lstat(p: string) {
    return this.statWith(p, 'lstat');
  }

  stat(p: string) {
    return this.statWith(p, 'stat');
  }

  async mkdir(p: string, mode: number): Promise<void> {
    try {
      await this.call<void>('mkdir', p, (s, cb) => s.mkdir(p, { mode }, cb));
    } catch (e) {
      if (e instanceof FsError && e.code === 'ENOENT' && path.posix.dirname(p) !== p) {
        await this.mkdir(path.posix.dirname(p), mode);
        return this.mkdir(p, mode);
      }
      // OpenSSH's sftp-server says only "Failure" for EEXIST.
      if (!(await this.lstat(p))?.dir) throw e;
    }
    // The umask of sftp-server cut the group bits: set them (another user's folder may not be ours to change).
    await this.call<void>('chmod', p, (s, cb) => s.chmod(p, mode, cb)).catch(() => undefined);
  }

  readText(p: string): Promise<string | undefined> {
    return this.call<Buffer>('read', p, (s, cb) => s.readFile(p, cb)).then(
      (b) => b.toString('utf8'),
      () => undefined,
    );
  }

  readdir(p: string): Promise<string[]> {
    return this.call<{ filename: string }[]>('list', p, (s, cb) => s.readdir(p, cb)).then(
      (l) => l.map((e) => e.filename),
      () => [],
    );
  }

  async createExcl(p: string, data: string, mode: number): Promise<void> {
    let handle: Buffer;
    try {
      handle = await this.call<Buffer>('create', p, (s, cb) => s.open(p, 'wx', { mode }, cb));
    } catch (e) {
      // OpenSSH's sftp-server says only "Failure" for EEXIST.
      if (!(e instanceof FsError) && (await this.lstat(p))) throw new FsError('EEXIST', (e as Error).message);
      throw e;
    }
    try {
      const b = Buffer.from(data);
      await this.call<void>('write', p, (s, cb) => s.write(handle, b, 0, b.length, 0, (err) => cb(err)));
      await this.call<void>('chmod', p, (s, cb) => s.fchmod(handle, mode, cb));
    } finally {
      await this.call<void>('close', p, (s, cb) => s.close(handle, cb)).catch(() => undefined);
    }
  }

  rename(from: string, to: string): Promise<void> {
    // posix-rename@openssh.com: SFTP's own rename refuses to replace a file.
    return this.call<void>('rename', from, (s, cb) => s.ext_openssh_rename(from, to, cb));
  }

  link(from: string, to: string): Promise<void> {
    return this.call<void>('link', from, (s, cb) => s.ext_openssh_hardlink(from, to, cb));
  }

  rm(p: string): Promise<void> {
    return this.call<void>('remove', p, (s, cb) => s.unlink(p, cb)).catch((e) => {
      if (!(e instanceof FsError && e.code === 'ENOENT')) throw e;
    });
  }

  rmdir(p: string): Promise<void> {
    return this.call<void>('rmdir', p, (s, cb) => s.rmdir(p, cb));
  }

  async touch(p: string): Promise<void> {
    const t = new Date();
    await this.call<void>('touch', p, (s, cb) => s.utimes(p, t, t, cb));
  }

  /** Set once `sha256sum` gave no answer there (an SFTP-only account, a host without GNU coreutils): files are then hashed as they are read over SFTP. */
  private noSha256sum = false;

  async sha256(p: string): Promise<string | undefined> {
    if (this.broken) throw this.broken;
    if (!this.noSha256sum) {
      const r = await this.conn.exec(`sha256sum -- ${quote(p)}`);
      const m = /^([0-9a-f]{64}) /.exec(r.stdout);
      if (r.code === 0 && m) return m[1];
      // Missing is an answer; anything else (no shell, no sha256sum) says to hash it here.
      if (!(await this.lstat(p))) return undefined;
      this.noSha256sum = true;
    }
    const s = await this.sftp();
    return this.call<string | undefined>('read', p, (_s, cb) => void digestOf(s.createReadStream(p)).then((hex) => cb(undefined, hex), cb), 'build').catch((e) => {
      if (e instanceof FsError && e.code === 'ENOENT') return undefined;
      throw e;
    });
  }

  async upload(local: string, to: string, mode: number): Promise<void> {
    const s = await this.sftp();
    await this.call<void>('copy to', to, (_s, cb) => copy(fs.createReadStream(local), s.createWriteStream(to, { flags: 'wx', mode }), cb), 'build');
    await this.call<void>('chmod', to, (s2, cb) => s2.chmod(to, mode, cb));
  }

  async download(from: string, local: string): Promise<void> {
    const s = await this.sftp();
    await this.call<void>('copy from', from, (_s, cb) => copy(s.createReadStream(from), fs.createWriteStream(local, { flags: 'wx', mode: 0o600 }), cb), 'build');
  }

  close(): void {
    void this.session?.then((s) => s.end()).catch(() => undefined);
    this.conn.close();
  }
}
