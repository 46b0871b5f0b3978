/**
 * Fetch a source tarball (or a runtime package) from the first URL that answers, verify its digest
 * (sha256 from the inventory, or the sha512 npm's lock records; a mismatch is a hard error), keep it
 * in the cache keyed by that digest.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { BuildError } from '../errors.js';
import { privateCacheDir } from '../util/paths.js';

export type Say = (line: string) => void;

export function sha256File(file: string, algorithm: 'sha256' | 'sha512' = 'sha256'): Promise<string> {
  return digestOf(fs.createReadStream(file), algorithm);
}

/** The hex digest of what a stream carries (a file here, or one read over SFTP). */
export async function digestOf(stream: AsyncIterable<unknown>, algorithm: 'sha256' | 'sha512' = 'sha256'): Promise<string> {
  const h = createHash(algorithm);
  for await (const chunk of stream) h.update(chunk as Buffer);
  return h.digest('hex');
}

function get(url: string, redirects = 5): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    const lib = url.startsWith('https:') ? https : http;
    const req = lib.get(url, { timeout: 15_000, headers: { 'user-agent': 'k8s-ha' } }, (res) => {
      const status = res.statusCode ?? 0;
      if (status >= 300 && status < 400 && res.headers.location && redirects > 0) {
        res.resume();
        resolve(get(new URL(res.headers.location, url).toString(), redirects - 1));
        return;
      }
      if (status !== 200) {
        res.resume();
        reject(new Error(`HTTP ${status}`));
        return;
      }
      resolve(res);
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 15 s')));
    req.on('error', reject);
  });
}

/** A whole download's deadline: a mirror that trickles a byte every few seconds never trips the idle timeout alone. */
export const DOWNLOAD_DEADLINE_MS = 5 * 60_000;

/** The verified tarball's path in the cache; downloads only when it is not there yet. */
export function fetchVerified(name: string, sources: string[], sha256: string, say: Say, deadlineMs = DOWNLOAD_DEADLINE_MS): Promise<string> {
  return fetchDigest(name, sources, { algorithm: 'sha256', hex: sha256 }, say, deadlineMs, {
    mismatch: (url, got) =>
      new BuildError(`${url} has sha256 ${got}, but the inventory says ${sha256}: refusing to build it`, {
        hint: 'check nginx.sha256 in the inventory against the sha256 published for this nginx version; never build an unverified tarball',
      }),
    none: (tried) => new BuildError(`no source answered for ${name}:\n${tried}`, { hint: 'check nginx.sources in the inventory, or put a mirror URL first' }),
  });
}

/** An npm package's tarball, verified against its lock entry's integrity (`sha512-BASE64`): its path in the cache. */
export function fetchPackage(name: string, url: string, integrity: string, say: Say): Promise<string> {
  const m = /^sha512-([A-Za-z0-9+/]+={0,2})$/.exec(integrity);
  if (!m) throw new BuildError(`${name}: the integrity ${integrity} is not a sha512 (npm's lock records one)`, { hint: 'run npm ci, then npm run build' });
  const hex = Buffer.from(m[1]!, 'base64').toString('hex');
  return fetchDigest(name, [url], { algorithm: 'sha512', hex }, say, DOWNLOAD_DEADLINE_MS, {
    mismatch: (u, got) => new BuildError(`${u} has sha512 ${got.slice(0, 32)}..., but package-lock.json records ${hex.slice(0, 32)}...: refusing to use it`, { hint: 'never run an unverified runtime: check the registry (or the proxy in front of it) serving this URL' }),
    none: (tried) => new BuildError(`cannot download ${name}:\n${tried}`, { hint: 'this machine must reach the npm registry (or set npm_config_registry to a mirror of it)' }),
  });
}

async function fetchDigest(
  name: string,
  sources: string[],
  digest: { algorithm: 'sha256' | 'sha512'; hex: string },
  say: Say,
  deadlineMs: number,
  errors: { mismatch: (url: string, got: string) => BuildError; none: (tried: string) => BuildError },
): Promise<string> {
  const dir = await privateCacheDir('sources');
  const file = path.join(dir, `${digest.hex.slice(0, 16)}-${name}`);
  if (fs.existsSync(file) && (await sha256File(file, digest.algorithm)) === digest.hex) return file;
  const tried: string[] = [];
  for (const url of sources) {
    const part = `${file}.${process.pid}.part`;
    try {
      say(`downloading ${url}`);
      const started = Date.now();
      const res = await get(url);
      const h = createHash(digest.algorithm);
      await new Promise<void>((resolve, reject) => {
        const out = fs.createWriteStream(part);
        const left = deadlineMs - (Date.now() - started);
        const deadline = setTimeout(() => res.destroy(new Error(`not complete within ${Math.round(deadlineMs / 1000)} s (${res.socket?.bytesRead ?? 0} bytes received): the mirror is too slow`)), Math.max(0, left));
        deadline.unref();
        const fail = (e: Error) => {
          clearTimeout(deadline);
          reject(e);
        };
        res.on('data', (c: Buffer) => h.update(c));
        res.on('error', fail);
        out.on('error', fail);
        out.on('finish', () => {
          clearTimeout(deadline);
          resolve();
        });
        res.pipe(out);
      });
      const got = h.digest('hex');
      if (got !== digest.hex) {
        await fsp.rm(part, { force: true });
        throw errors.mismatch(url, got);
      }
      await fsp.rename(part, file);
      return file;
    } catch (e) {
      await fsp.rm(part, { force: true });
      if (e instanceof BuildError) throw e;
      tried.push(`${url}: ${(e as Error).message}`);
    }
  }
  throw errors.none(tried.map((t) => `  ${t}`).join('\n'));
}
