/**
 * Fetch a source tarball from the first URL that answers, verify its sha256
 * (a mismatch is a hard error), keep it in the cache keyed by that checksum.
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

export async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of fs.createReadStream(file)) h.update(chunk as Buffer);
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
export async function fetchVerified(name: string, sources: string[], sha256: string, say: Say, deadlineMs = DOWNLOAD_DEADLINE_MS): Promise<string> {
  const dir = await privateCacheDir('sources');
  const file = path.join(dir, `${sha256.slice(0, 16)}-${name}`);
  if (fs.existsSync(file) && (await sha256File(file)) === sha256) return file;
  const tried: string[] = [];
  for (const url of sources) {
    const part = `${file}.${process.pid}.part`;
    try {
      say(`downloading ${url}`);
      const started = Date.now();
      const res = await get(url);
      const h = createHash('sha256');
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
      if (got !== sha256) {
        await fsp.rm(part, { force: true });
        throw new BuildError(`${url} has sha256 ${got}, but the inventory says ${sha256}: refusing to build it`, {
          hint: 'check nginx.sha256 in the inventory against the sha256 published for this nginx version; never build an unverified tarball',
        });
      }
      await fsp.rename(part, file);
      return file;
    } catch (e) {
      await fsp.rm(part, { force: true });
      if (e instanceof BuildError) throw e;
      tried.push(`${url}: ${(e as Error).message}`);
    }
  }
  throw new BuildError(`no source answered for ${name}:\n${tried.map((t) => `  ${t}`).join('\n')}`, {
    hint: 'check nginx.sources in the inventory, or put a mirror URL first',
  });
}
