/** The build cache's safety: one builder per entry, a lock left by a dead process taken over, metadata whole or absent. */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readCached, withCacheLock } from '../../src/build/cache.js';
import { writeFileAtomic } from '../../src/util/tempdir.js';

const made: string[] = [];
const tmp = () => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-cache-'));
  made.push(d);
  return d;
};
// The caches these tests made go with them: a test run leaves nothing in /tmp.
afterAll(() => made.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

describe('the build cache', () => {
  it('two builds of the same entry at once: one builds, the other waits and takes its result', async () => {
    const dir = tmp();
    let builds = 0;
    const said: string[] = [];
    const ensure = () =>
      withCacheLock(dir, 'nginx 1.22.1 (static)', (l) => said.push(l), async () => {
        const done = await readCached<{ sha256: string }>(path.join(dir, 'bin'), path.join(dir, 'build.json'));
        if (done) return 'from the cache';
        builds++;
        await new Promise((r) => setTimeout(r, 300));
        fs.writeFileSync(path.join(dir, 'bin'), 'binary');
        await writeFileAtomic(path.join(dir, 'build.json'), JSON.stringify({ sha256: createHash('sha256').update('binary').digest('hex') }));
        return 'built';
      });
    fs.writeFileSync(path.join(dir, 'bin'), '');
    const results = await Promise.all([ensure(), ensure()]);
    expect(builds).toBe(1);
    expect(results.sort()).toEqual(['built', 'from the cache']);
    expect(said.join('\n')).toMatch(new RegExp(`nginx 1\\.22\\.1 \\(static\\): another k8s-ha \\(pid ${process.pid}\\) is building it; waiting for its result`));
    expect(fs.existsSync(path.join(dir, '.lock'))).toBe(false);
  });

  it('a lock left by a process that is gone is taken over', async () => {
    const dir = tmp();
    fs.writeFileSync(path.join(dir, '.lock'), '999999999\n');
    expect(await withCacheLock(dir, 'x', () => undefined, async () => 'ran', 2000)).toBe('ran');
  });

  it('metadata is written whole: a reader sees the old text or the new, never a part', async () => {
    const dir = tmp();
    const file = path.join(dir, 'build.json');
    await writeFileAtomic(file, 'a'.repeat(1 << 20));
    const reads: number[] = [];
    const reader = setInterval(() => reads.push(fs.readFileSync(file, 'utf8').length), 0);
    for (let i = 0; i < 20; i++) await writeFileAtomic(file, (i % 2 ? 'a' : 'b').repeat(1 << 20));
    clearInterval(reader);
    expect(reads.every((n) => n === 1 << 20)).toBe(true);
    expect(fs.readdirSync(dir)).toEqual(['build.json']);
    // A reader busy on every turn of the event loop makes each write slow on a loaded machine.
  }, 20_000);
});

describe('downloading a source tarball', () => {
  it('a mirror that trickles is abandoned at the whole download\'s deadline, not kept by the idle timeout, and the next source is tried', async () => {
    const http = await import('node:http');
    const { fetchVerified } = await import('../../src/build/download.js');
    const body = Buffer.from('tarball bytes');
    const sha = createHash('sha256').update(body).digest('hex');
    // One byte every 100 ms: never idle for the 15 s idle timeout, never done.
    const slow = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-length': '1000000' });
      const t = setInterval(() => res.write('x'), 100);
      res.on('close', () => clearInterval(t));
    });
    const good = http.createServer((_req, res) => res.end(body));
    await Promise.all([slow, good].map((s) => new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()))));
    const url = (s: typeof slow) => `http://127.0.0.1:${(s.address() as import('node:net').AddressInfo).port}/nginx.tar.gz`;
    const said: string[] = [];
    process.env.K8S_HA_CACHE_DIR = tmp();
    try {
      const t0 = Date.now();
      const file = await fetchVerified('nginx-test.tar.gz', [url(slow), url(good)], sha, (l) => said.push(l), 800);
      expect(Date.now() - t0).toBeLessThan(5000);
      expect(fs.readFileSync(file)).toEqual(body);
      expect(said).toEqual([`downloading ${url(slow)}`, `downloading ${url(good)}`]);
      // Alone, the trickling source fails and says why.
      await expect(fetchVerified('nginx-other.tar.gz', [url(slow)], sha.replace(/^./, '0'), () => undefined, 800)).rejects.toThrow(/not complete within 1 s \(\d+ bytes received\): the mirror is too slow/);
    } finally {
      delete process.env.K8S_HA_CACHE_DIR;
      slow.closeAllConnections();
      slow.close();
      good.close();
    }
  });
});
