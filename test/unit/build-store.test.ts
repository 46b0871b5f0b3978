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
import { lockHolder, lockTiming, machineId, readCached } from '../../src/build/cache.js';
import { writeFileAtomic } from '../../src/util/tempdir.js';
import { artifactIdentity, buildKey, cachedNginxBinary } from '../../src/build/nginx.js';
import { entryIn, storeProblem, throughStore, type Entry, type Store } from '../../src/build/store.js';
import { localFs } from '../../src/build/store-fs.js';

/** A folder of this machine as the store. */
const at = (root: string): Store => ({ files: localFs, root });

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
function controller(name: string, store: string | undefined, key = 'k1', bytes = 'the binary', during?: () => void) {
  const cache = tmp();
  const local: Entry = entryIn(cache, 'builds', key, 'kube-nginx');
  let builds = 0;
  const said: string[] = [];
  const get = () =>
    throughStore<Made>({
      store: store === undefined ? undefined : at(store),
      kind: 'builds',
      key,
      name: 'kube-nginx',
      local,
      what: 'nginx 1.22.1 (static)',
      say: (l) => said.push(l),
      fromLocal: () => readCached<Made>(local.binary, local.meta),
      accepts: (m) => typeof m.by === 'string',
      make: async () => {
        builds++;
        during?.();
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
    const again = await throughStore<Made>({ store: at(other), kind: 'builds', key: 'k2', name: 'kube-nginx', local: old.local, what: 'x', say: () => undefined, fromLocal: () => readCached<Made>(old.local.binary, old.local.meta), accepts: () => true, make: () => Promise.reject(new Error('must not build')) });
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

  it('a lock held from another machine is waited for while it changes, and taken over once it has not changed for staleMs by our own clock', async () => {
    const saved = { ...lockTiming };
    lockTiming.staleMs = 1000;
    try {
      const store = tmp();
      const dir = path.join(store, 'builds', 'k1');
      fs.mkdirSync(dir, { recursive: true });
      const lock = path.join(dir, '.lock');
      // PID 1 of another machine: not ours to ask whether it runs. Its holder touches it (a heartbeat),
      // with a clock of its own: an mtime far in the past says nothing.
      fs.writeFileSync(lock, '1 builder-elsewhere 0123456789abcdef0123456789abcdef\n');
      let beat = 0;
      const heartbeat = setInterval(() => {
        const t = new Date(Date.now() - 3_600_000 + beat++ * 1000);
        fs.utimesSync(lock, t, t);
      }, 200);
      const a = controller('a', store);
      const pending = a.get();
      await new Promise((r) => setTimeout(r, 2500));
      expect(a.builds()).toBe(0);
      expect(a.said.join('\n')).toMatch(/another k8s-ha \(pid 1 on builder-elsewhere\) is building it; waiting for its result/);
      // Its holder dies: the lock stays as it is, and is taken over staleMs later.
      clearInterval(heartbeat);
      const died = Date.now();
      await pending;
      expect(a.builds()).toBe(1);
      expect(Date.now() - died).toBeGreaterThanOrEqual(700);
      expect(fs.readdirSync(dir).sort()).toEqual(['build.json', 'kube-nginx']);
    } finally {
      Object.assign(lockTiming, saved);
    }
  });

  it('the holder touches its lock while it builds; the entry folder is the group\'s and the lock readable while it is held', async () => {
    const saved = { ...lockTiming };
    lockTiming.heartbeatMs = 100;
    try {
      const store = tmp();
      fs.chmodSync(store, 0o2775);
      const lock = path.join(store, 'builds', 'k1', '.lock');
      const seen: { mtimes: number[]; dirMode: string; lockMode: string; text: string }[] = [];
      const a = controller('a', store, 'k1', 'the binary', () => {
        const first = fs.statSync(lock).mtimeMs;
        seen.push({ mtimes: [first], dirMode: (fs.statSync(path.dirname(lock)).mode & 0o7777).toString(8), lockMode: (fs.statSync(lock).mode & 0o777).toString(8), text: fs.readFileSync(lock, 'utf8') });
        setTimeout(() => seen[0]!.mtimes.push(fs.statSync(lock).mtimeMs), 280);
      });
      await a.get();
      expect(seen[0]!.mtimes[1]).toBeGreaterThan(seen[0]!.mtimes[0]!);
      expect(seen[0]!.dirMode).toBe('2775');
      expect(seen[0]!.lockMode).toBe('644');
      expect(seen[0]!.text).toBe(`${process.pid} ${os.hostname()} ${machineId()}\n`);
      expect(fs.existsSync(lock)).toBe(false);
    } finally {
      Object.assign(lockTiming, saved);
    }
  });

  it('a controller that has the build in its cache does not wait for another that is putting one in the store', async () => {
    const store = tmp();
    const mine = controller('mine', undefined);
    await mine.get();
    const dir = path.join(store, 'builds', 'k1');
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, '.lock'), '1 builder-elsewhere 0123456789abcdef0123456789abcdef\n');
    const t0 = Date.now();
    const r = await throughStore<Made>({ store: at(store), kind: 'builds', key: 'k1', name: 'kube-nginx', local: mine.local, what: 'x', say: () => undefined, fromLocal: () => readCached<Made>(mine.local.binary, mine.local.meta), accepts: () => true, make: () => Promise.reject(new Error('must not build')) });
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(r.sha256).toBe(sha('the binary'));
    expect(r.stored).toBeUndefined();
  });

  it("the store is the shared truth: a whole entry there wins over another build in this machine's cache", async () => {
    const store = tmp();
    await controller('first', store, 'k1', 'the store\'s build').get();
    const other = controller('other', undefined, 'k1', 'a build of another compiler');
    await other.get();
    const r = await throughStore<Made>({ store: at(store), kind: 'builds', key: 'k1', name: 'kube-nginx', local: other.local, what: 'nginx', say: (l) => other.said.push(l), fromLocal: () => readCached<Made>(other.local.binary, other.local.meta), accepts: () => true, make: () => Promise.reject(new Error('must not build')) });
    expect(r).toMatchObject({ sha256: sha("the store's build"), fromStore: true });
    expect(fs.readFileSync(other.local.binary, 'utf8')).toBe("the store's build");
    expect(other.said.join('\n')).toMatch(/taken from the store .* \(this machine's cache had another build, sha256 [0-9a-f]{12}: the store's is the one every controller deploys\)/);
  });

  it('an entry that is a symbolic link, writable by others, or describes other inputs is not taken: it is made again', async () => {
    const store = tmp();
    await controller('a', store).get();
    const binary = path.join(store, 'builds/k1/kube-nginx');
    const elsewhere = path.join(tmp(), 'planted');
    fs.copyFileSync(binary, elsewhere);
    fs.rmSync(binary);
    fs.symlinkSync(elsewhere, binary);
    const b = controller('b', store);
    await b.get();
    expect(b.builds()).toBe(1);
    expect(b.said.join('\n')).toMatch(/the store's entry is not used \(.*kube-nginx is a symbolic link\); it is made again/);
    expect(fs.lstatSync(binary).isSymbolicLink()).toBe(false);

    fs.chmodSync(binary, 0o757);
    const c = controller('c', store);
    await c.get();
    expect(c.said.join('\n')).toMatch(/kube-nginx is writable by others/);

    const meta = path.join(store, 'builds/k1/build.json');
    fs.writeFileSync(meta, JSON.stringify({ ...JSON.parse(fs.readFileSync(meta, 'utf8')), by: 7 }));
    const d = controller('d', store);
    await d.get();
    expect(d.builds()).toBe(1);
    expect(d.said.join('\n')).toMatch(/build\.json does not describe what its key is made from/);
  });

  it('a lock names its holder by PID, host and machine ID (two hosts may share a name); a lock of earlier versions (PID alone) is this machine\'s', () => {
    expect(lockHolder(`4242 ${os.hostname()} 0123456789abcdef0123456789abcdef`)).toEqual({ pid: 4242, host: os.hostname(), local: machineId() === '-' });
    expect(lockHolder('4242 ctl-2 -')).toEqual({ pid: 4242, host: 'ctl-2', local: false });
    expect(lockHolder(`4242 ${os.hostname()} ${machineId()}`)).toMatchObject({ local: true });
    expect(lockHolder('4242')).toEqual({ pid: 4242, host: os.hostname(), local: true });
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
      expect(await cachedNginxBinary(src, ['--with-stream'], 'static', os1, at(store))).toBeUndefined();
      const e = entryIn(store, 'builds', key, 'kube-nginx');
      fs.mkdirSync(e.dir, { recursive: true });
      fs.writeFileSync(e.binary, 'nginx');
      const meta = { sha256: sha('nginx'), osKey: 'static-musl-x86_64', version: '1.22.1', sourceSha256: src.sha256, configureArgs: ['--with-stream'], link: 'static', identity: 'sha256:x' };
      fs.writeFileSync(e.meta, JSON.stringify(meta));
      expect(await cachedNginxBinary(src, ['--with-stream'], 'static', os1, at(store))).toMatchObject({ sha256: sha('nginx'), path: e.binary, fromStore: true });
      // build.host a node: its OS is not known without asking it; the store's entries are searched by what they were made from.
      expect(await cachedNginxBinary(src, ['--with-stream'], 'static', undefined, at(store))).toMatchObject({ sha256: sha('nginx'), path: e.binary, fromStore: true });
      expect(await cachedNginxBinary(src, ['--with-stream', '--with-threads'], 'static', undefined, at(store))).toBeUndefined();
      // A second build from the same inputs for another CPU: which one a node-built run means is not known.
      const arm = entryIn(store, 'builds', buildKey(src, ['--with-stream'], { ...os1, arch: 'aarch64' }, 'static'), 'kube-nginx');
      fs.mkdirSync(arm.dir, { recursive: true });
      fs.writeFileSync(arm.binary, 'nginx for arm');
      fs.writeFileSync(arm.meta, JSON.stringify({ ...meta, sha256: sha('nginx for arm'), osKey: 'static-musl-aarch64' }));
      expect(await cachedNginxBinary(src, ['--with-stream'], 'static', undefined, at(store))).toBeUndefined();
      expect(await cachedNginxBinary(src, ['--with-stream'], 'static', os1, at(store))).toMatchObject({ sha256: sha('nginx') });
      // An entry whose binary is not the one recorded is not reported.
      fs.writeFileSync(e.binary, 'changed');
      expect(await cachedNginxBinary(src, ['--with-stream'], 'static', os1, at(store))).toBeUndefined();
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
