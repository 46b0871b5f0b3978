/**
 * The shared artifact store (build.store) with plain files: what two controllers sharing it see, a
 * lock held from another machine, an entry that is not whole, and the folder checks made at load.
 * The artifact identity of an nginx build, from plain data.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LOCK_STALE_MS, lockHolder, readCached, writeFileAtomic } from '../../src/build/cache.js';
import { artifactIdentity, buildKey, cachedNginxBinary } from '../../src/build/nginx.js';
import { entryIn, storeProblem, throughStore, type Entry } from '../../src/build/store.js';

const made: string[] = [];
const tmp = () => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-store-'));
  made.push(d);
  return d;
};
afterAll(() => made.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

const sha = (s: string) => createHash('sha256').update(s).digest('hex');

interface Made {
  sha256: string;
  path: string;
  cached: boolean;
  by: string;
}

/** One controller: its own cache folder; `make` writes the entry there as a build does (binary, then build.json). */
function controller(name: string, store: string | undefined, key = 'k1', bytes = 'the binary') {
  const cache = tmp();
  const local: Entry = entryIn(cache, 'builds', key, 'kube-nginx');
  let builds = 0;
  const said: string[] = [];
  const get = () =>
    throughStore<Made>({
      store,
      kind: 'builds',
      key,
      name: 'kube-nginx',
      local,
      what: 'nginx 1.22.1 (static)',
      say: (l) => said.push(l),
      fromLocal: () => readCached<Made>(local.binary, local.meta),
      make: async () => {
        builds++;
        await new Promise((r) => setTimeout(r, 300));
        fs.mkdirSync(local.dir, { recursive: true });
        fs.writeFileSync(local.binary, bytes);
        const meta = { sha256: sha(bytes), path: local.binary, cached: false, by: name };
        await writeFileAtomic(local.meta, JSON.stringify(meta));
        return meta;
      },
    });
  return { get, local, said, builds: () => builds };
}

const listing = (dir: string) => fs.readdirSync(dir, { recursive: true }).map(String).sort();

describe('the shared store', () => {
  it('two controllers at once: one builds, the other waits for the store and takes its result; the entry is whole, nothing left over', async () => {
    const store = tmp();
    const [a, b] = [controller('a', store), controller('b', store)];
    const [ra, rb] = await Promise.all([a.get(), b.get()]);
    expect(a.builds() + b.builds()).toBe(1);
    expect(ra.sha256).toBe(sha('the binary'));
    expect(rb.sha256).toBe(ra.sha256);
    // Each controller has it in its own cache; both name the store's copy.
    expect(fs.readFileSync(a.local.binary, 'utf8')).toBe('the binary');
    expect(fs.readFileSync(b.local.binary, 'utf8')).toBe('the binary');
    expect(ra.stored).toBe(path.join(store, 'builds', 'k1', 'kube-nginx'));
    expect(rb.stored).toBe(ra.stored);
    const waiter = a.builds() ? b : a;
    expect(waiter.said.join('\n')).toMatch(new RegExp(`another k8s-ha \\(pid ${process.pid}\\) is building it; waiting for its result`));
    expect(listing(store)).toEqual(['builds', 'builds/k1', 'builds/k1/build.json', 'builds/k1/kube-nginx']);
    expect(JSON.parse(fs.readFileSync(path.join(store, 'builds/k1/build.json'), 'utf8'))).toMatchObject({ sha256: sha('the binary'), path: ra.stored });
  });

  it('a third controller later builds nothing: the entry comes from the store into its cache; one that had it only in its cache puts it there', async () => {
    const store = tmp();
    const first = controller('first', store);
    await first.get();
    const later = controller('later', store);
    const r = await later.get();
    expect(later.builds()).toBe(0);
    expect(r).toMatchObject({ cached: true, fromStore: true, sha256: sha('the binary') });
    expect(later.said).toEqual(['nginx 1.22.1 (static): taken from the store ' + store]);

    // Built before the store was set: the next run with one puts its cache's entry into the store.
    const other = tmp();
    const old = controller('old', undefined, 'k2', 'older');
    await old.get();
    expect(old.builds()).toBe(1);
    const again = await throughStore<Made>({ store: other, kind: 'builds', key: 'k2', name: 'kube-nginx', local: old.local, what: 'x', say: () => undefined, fromLocal: () => readCached<Made>(old.local.binary, old.local.meta), make: () => Promise.reject(new Error('must not build')) });
    expect(again.cached).toBe(true);
    expect(fs.readFileSync(path.join(other, 'builds/k2/kube-nginx'), 'utf8')).toBe('older');
  });

  it('an entry whose binary is not the one its build.json records is not taken: it is built again and the entry made whole', async () => {
    const store = tmp();
    await controller('a', store).get();
    fs.writeFileSync(path.join(store, 'builds/k1/kube-nginx'), 'changed by someone');
    const b = controller('b', store);
    const r = await b.get();
    expect(b.builds()).toBe(1);
    expect(r.sha256).toBe(sha('the binary'));
    expect(fs.readFileSync(path.join(store, 'builds/k1/kube-nginx'), 'utf8')).toBe('the binary');
    // A build.json alone (its binary never arrived) is no entry either.
    fs.rmSync(path.join(store, 'builds/k1/kube-nginx'));
    const c = controller('c', store);
    await c.get();
    expect(c.builds()).toBe(1);
  });

  it("a lock held from another machine is waited for while it is kept fresh, and taken over once it is stale", async () => {
    const store = tmp();
    const dir = path.join(store, 'builds', 'k1');
    fs.mkdirSync(dir, { recursive: true });
    const lock = path.join(dir, '.lock');
    // PID 1 on another host: not ours to ask whether it runs; it is judged by the lock's age.
    fs.writeFileSync(lock, '1 builder-elsewhere\n');
    const a = controller('a', store);
    const t0 = Date.now();
    const pending = a.get();
    await new Promise((r) => setTimeout(r, 1200));
    expect(a.builds()).toBe(0);
    expect(a.said.join('\n')).toMatch(/another k8s-ha \(pid 1 on builder-elsewhere\) is building it; waiting for its result/);
    // The other machine finishes: it lets go of the lock.
    fs.rmSync(lock);
    await pending;
    expect(a.builds()).toBe(1);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1200);

    // A lock from another machine not touched for longer than LOCK_STALE_MS: its holder is gone.
    const store2 = tmp();
    const dir2 = path.join(store2, 'builds', 'k1');
    fs.mkdirSync(dir2, { recursive: true });
    fs.writeFileSync(path.join(dir2, '.lock'), '1 builder-elsewhere\n');
    const old = new Date(Date.now() - LOCK_STALE_MS - 5000);
    fs.utimesSync(path.join(dir2, '.lock'), old, old);
    const b = controller('b', store2);
    await b.get();
    expect(b.builds()).toBe(1);
    expect(fs.existsSync(path.join(dir2, '.lock'))).toBe(false);
  });

  it('a lock names its holder by PID and host; a lock of earlier versions (PID alone) is this machine\'s', () => {
    expect(lockHolder('4242 ctl-2')).toEqual({ pid: 4242, host: 'ctl-2' });
    expect(lockHolder('4242')).toEqual({ pid: 4242, host: os.hostname() });
  });

  it('folders the store makes keep its group and setgid bit, so every operator of the group may add entries', async () => {
    const store = tmp();
    fs.chmodSync(store, 0o2775);
    await controller('a', store).get();
    for (const d of ['builds', 'builds/k1']) expect([d, (fs.statSync(path.join(store, d)).mode & 0o7777).toString(8)]).toEqual([d, '2775']);
    expect((fs.statSync(path.join(store, 'builds/k1/kube-nginx')).mode & 0o777).toString(8)).toBe('755');
    expect((fs.statSync(path.join(store, 'builds/k1/build.json')).mode & 0o777).toString(8)).toBe('644');
    // A store only its owner may write to: its folders are the owner's too.
    const mine = tmp();
    fs.chmodSync(mine, 0o755);
    await controller('b', mine).get();
    expect((fs.statSync(path.join(mine, 'builds/k1')).mode & 0o7777).toString(8)).toBe('755');
  });

  it('the folder is checked: it must exist, be a folder, be writable by this user and not by others', async () => {
    const d = tmp();
    expect(await storeProblem(d)).toBeUndefined();
    expect(await storeProblem(path.join(d, 'nope'))).toMatch(/nope does not exist: mount the shared folder there/);
    fs.writeFileSync(path.join(d, 'file'), '');
    expect(await storeProblem(path.join(d, 'file'))).toMatch(/file is not a folder/);
    fs.chmodSync(d, 0o777);
    expect(await storeProblem(d)).toMatch(/writable by every user of this machine \(mode 0777\): any of them could put a binary on every node; chmod o-w/);
    // Sticky or not: another user could still add an entry nobody has made yet.
    fs.chmodSync(d, 0o1777);
    expect(await storeProblem(d)).toMatch(/mode 1777/);
    fs.chmodSync(d, 0o2775);
    expect(await storeProblem(d)).toBeUndefined();
  });
});

describe('--check and status with a store', () => {
  it("find a build in the store when this machine's cache has none, without taking it (they build and write nothing)", async () => {
    const store = tmp();
    const cache = tmp();
    process.env.K8S_HA_CACHE_DIR = cache;
    try {
      const src = { version: '1.22.1', sources: [], sha256: 'a'.repeat(64) };
      const os1 = { id: 'debian', versionId: '12', prettyName: 'Debian 12', arch: 'x86_64', glibc: '2.36' };
      const key = buildKey(src, ['--with-stream'], os1, 'static');
      expect(await cachedNginxBinary(src, ['--with-stream'], 'static', os1, store)).toBeUndefined();
      const e = entryIn(store, 'builds', key, 'kube-nginx');
      fs.mkdirSync(e.dir, { recursive: true });
      fs.writeFileSync(e.binary, 'nginx');
      const meta = { sha256: sha('nginx'), osKey: 'static-musl-x86_64', version: '1.22.1', sourceSha256: src.sha256, configureArgs: ['--with-stream'], link: 'static', identity: 'sha256:x' };
      fs.writeFileSync(e.meta, JSON.stringify(meta));
      expect(await cachedNginxBinary(src, ['--with-stream'], 'static', os1, store)).toMatchObject({ sha256: sha('nginx'), path: e.binary, fromStore: true });
      // build.host a node: its OS is not known without asking it; the store's entries are searched by what they were made from.
      expect(await cachedNginxBinary(src, ['--with-stream'], 'static', undefined, store)).toMatchObject({ sha256: sha('nginx'), path: e.binary, fromStore: true });
      expect(await cachedNginxBinary(src, ['--with-stream', '--with-threads'], 'static', undefined, store)).toBeUndefined();
      expect(fs.readdirSync(cache)).toEqual([]);
    } finally {
      delete process.env.K8S_HA_CACHE_DIR;
    }
  });
});

describe('the artifact identity', () => {
  const src = { version: '1.22.1', sha256: '9ebb333a9e82b952acd3e2b4aeb1d4ff6406f72491bab6cd9fe69f0dea737f31' };
  const tools = ['x86_64-linux-gnu-gcc (Debian 12.2.0-14+deb12u1) 12.2.0', 'musl 1.2.3', 'GNU ld (GNU Binutils for Debian) 2.40', 'GNU Make 4.3'];
  const id = (o: Partial<{ src: typeof src; configure: string[]; link: 'static' | 'native'; osKey: string; tools: string[] }> = {}) =>
    artifactIdentity(o.src ?? src, o.configure ?? ['--with-stream'], o.link ?? 'static', o.osKey ?? 'static-musl-x86_64', o.tools ?? tools);

  it('is the same for the same inputs and toolchain, wherever and by whom the build is made', () => {
    expect(id()).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(id()).toBe(id({ configure: ['--with-stream'], tools: [...tools] }));
  });

  it('differs when any input or tool differs', () => {
    const others = [
      id({ src: { ...src, sha256: src.sha256.replace(/^9/, '8') } }),
      id({ src: { ...src, version: '1.22.2' } }),
      id({ configure: ['--with-stream', '--with-threads'] }),
      id({ link: 'native', osKey: 'debian-12-x86_64-glibc2.36' }),
      id({ osKey: 'static-musl-aarch64' }),
      id({ tools: tools.map((t) => t.replace('12.2.0-14+deb12u1', '12.2.0-14')) }),
      id({ tools: tools.map((t) => t.replace('musl 1.2.3', 'musl 1.2.4')) }),
    ];
    expect(new Set([id(), ...others]).size).toBe(others.length + 1);
  });
});
