import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

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

/** Where downloads, built binaries and lab images' inputs are kept between runs. */
export function cacheDir(...parts: string[]): string {
  const base =
    process.env.K8S_HA_CACHE_DIR ??
    path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'k8s-ha');
  return path.join(base, ...parts);
}

/** A path as a person wants to read it: relative when under the current folder, absolute otherwise. */
export function displayPath(p: string): string {
  const r = path.relative(process.cwd(), p);
  return r && !r.startsWith('..') && !path.isAbsolute(r) ? r : p;
}
