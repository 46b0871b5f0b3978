/** The build cache's safety: one builder per entry, a lock left by a dead process taken over, metadata whole or absent. */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { readCached, withCacheLock, writeFileAtomic } from '../../src/build/cache.js';

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-cache-'));

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
  });
});
