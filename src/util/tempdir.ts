/**
 * Temporary folders and partial files on this machine, removed however the process ends: at the
 * end of their `finally`, or, when the process leaves at once (a second Ctrl-C), on its way out.
 * And files written whole: a partial file beside them, renamed over them.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

const live = new Set<string>();
let hooked = false;

/** Remember a path to remove if the process exits before `forget` or `removeTemp`. */
export function track(p: string): string {
  if (!hooked) {
    hooked = true;
    process.on('exit', () => {
      for (const x of live) fs.rmSync(x, { recursive: true, force: true });
    });
  }
  live.add(p);
  return p;
}

export function forget(p: string): void {
  live.delete(p);
}

export async function makeTempDir(prefix: string): Promise<string> {
  return track(await fsp.mkdtemp(path.join(os.tmpdir(), prefix)));
}

export async function removeTemp(p: string): Promise<void> {
  await fsp.rm(p, { recursive: true, force: true });
  forget(p);
}

/** A temporary name beside `file` nobody can guess (the build store's folders are shared): made with O_EXCL, never an existing file or link. */
export const partName = (file: string) => `${file}.${randomBytes(8).toString('hex')}.part`;

/**
 * Write a file whole or not at all: a reader never sees half of it (a temporary file beside it,
 * made with O_EXCL and given `mode` through its own descriptor, then renamed over the file).
 */
export async function writeFileAtomic(file: string, data: string | Buffer, mode = 0o600): Promise<void> {
  const tmp = track(partName(file));
  try {
    const fh = await fsp.open(tmp, 'wx', mode);
    try {
      await fh.writeFile(data);
      await fh.chmod(mode);
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, file);
  } finally {
    await fsp.rm(tmp, { force: true });
    forget(tmp);
  }
}
