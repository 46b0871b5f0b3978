/**
 * Temporary folders and partial files on this machine, removed however the process ends: at the
 * end of their `finally`, or, when the process leaves at once (a second Ctrl-C), on its way out.
 */
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
