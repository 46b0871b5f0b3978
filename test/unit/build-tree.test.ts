/**
 * Who can touch the nginx build while root runs it. nginx's upstream tarball says uid/gid 1001:
 * unpacked by root as it stood, the tree belonged to whichever account has that uid on the build
 * host, in a 0755 folder, and that account could edit configure or the Makefile between the
 * checksum and root running them. Here a small tarball made like upstream's (entries of uid 1001,
 * a world-writable tree) goes through the real build path, and its configure and Makefile record
 * (and refuse) what they find. The tests run as root, as the project's machines and CI do.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { controllerOs, ensureNginxBinary, readAsRoot, type BuildHost } from '../../src/build/nginx.js';
import { LocalConnection } from '../../src/connect/connection.js';
import { EnvironmentError } from '../../src/errors.js';
import { run } from '../../src/util/exec.js';
import { ensureCacheRoot } from '../../src/util/paths.js';

const VERSION = '1.99.0';
const dirs: string[] = [];
const tmp = () => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-tree-'));
  dirs.push(d);
  return d;
};
afterEach(() => {
  delete process.env.K8S_HA_CACHE_DIR;
  dirs.splice(0).forEach((d) => fs.rmSync(d, { recursive: true, force: true }));
});

/** The fake nginx the Makefile makes: what deploy checks for in `nginx -V`. */
const FAKE_NGINX = '#!/bin/sh\necho "nginx version: nginx/fake" >&2\necho "configure arguments: --with-stream" >&2\n';

/**
 * nginx-VERSION/ with configure and nothing else, every entry uid/gid 1001 and mode 0777 in the
 * tarball. configure records the owner and mode of the source tree and of the build folder above
 * it, refuses to go on unless root owns the tree and the folder is 0700, and writes a Makefile that
 * records the same while make runs and makes objs/nginx.
 */
async function upstreamLikeTarball(record: string): Promise<Buffer> {
  const work = tmp();
  const tree = path.join(work, `nginx-${VERSION}`);
  fs.mkdirSync(tree);
  const makefile = ['all:', `\tstat -c 'make tree=%u %a' . >> ${record}`, '\tmkdir -p objs', `\tprintf '${FAKE_NGINX.replaceAll('\n', '\\n')}' > objs/nginx`, '\tchmod 755 objs/nginx', ''].join('\n');
  const configure = `#!/bin/sh
stat -c 'configure tree=%u %a' . >> ${record}
stat -c 'configure build=%u %a' .. >> ${record}
stat -c 'configure script=%u %a' configure >> ${record}
echo "build folder=$(cd .. && pwd -P)" >> ${record}
[ "$(stat -c %u .)" = "$(id -u)" ] || { echo "the source tree belongs to uid $(stat -c %u .), not to the builder"; exit 1; }
[ "$(stat -c %a ..)" = 700 ] || { echo "the build folder is mode $(stat -c %a ..), not 700"; exit 1; }
cat > Makefile <<'MAKEFILE'
${makefile}MAKEFILE
`;
  fs.writeFileSync(path.join(tree, 'configure'), configure);
  fs.chmodSync(path.join(tree, 'configure'), 0o777);
  fs.chmodSync(tree, 0o777);
  const out = path.join(work, 'nginx.tar.gz');
  const r = await run('tar', ['--owner=1001', '--group=1001', '--numeric-owner', '-czf', out, '-C', work, `nginx-${VERSION}`]);
  expect(r.code, r.stderr).toBe(0);
  const listing = (await run('tar', ['--numeric-owner', '-tvzf', out])).stdout;
  expect(listing).toMatch(/^drwxrwxrwx 1001\/1001 .* nginx-1\.99\.0\/$/m);
  expect(listing).toMatch(/^-rwxrwxrwx 1001\/1001 .* nginx-1\.99\.0\/configure$/m);
  return fs.readFileSync(out);
}

describe('the nginx build tree', () => {
  it('is root\'s, in a 0700 folder, whatever owner and modes the tarball names; the binary comes back read as root; the cache is 0700', async () => {
    const root = tmp();
    const record = path.join(root, 'record');
    const tarball = await upstreamLikeTarball(record);
    const server = http.createServer((_req, res) => res.end(tarball));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const cache = path.join(root, 'cache');
    process.env.K8S_HA_CACHE_DIR = cache;
    try {
      const host: BuildHost = {
        name: 'controller',
        link: 'native',
        os: await controllerOs(),
        tools: ['gcc', 'make'],
        packageManager: null,
        connection: new LocalConnection(),
        installToolchain: false,
      };
      const src = { version: VERSION, sources: [`http://127.0.0.1:${(server.address() as AddressInfo).port}/nginx-${VERSION}.tar.gz`], sha256: createHash('sha256').update(tarball).digest('hex') };
      const built = await ensureNginxBinary(src, [], host, () => undefined);

      const seen = fs.readFileSync(record, 'utf8');
      const uid = process.getuid!();
      // The builder's own (root here), not uid 1001; no mode from the tarball, no 0755 folder.
      expect(seen).toContain(`configure tree=${uid} 700\n`);
      expect(seen).toContain(`configure build=${uid} 700\n`);
      expect(seen).toContain(`configure script=${uid} 700\n`);
      expect(seen).toContain(`make tree=${uid} 700\n`);
      expect(uid).toBe(0);
      // The build folder is gone once the binary is read.
      const folder = /^build folder=(.*)$/m.exec(seen)![1]!;
      expect(folder).toMatch(/\/k8s-ha-build-[^/]+$/);
      expect(fs.existsSync(folder)).toBe(false);

      expect(built.configure).toContain('configure arguments: --with-stream');
      expect(fs.readFileSync(built.path, 'utf8')).toBe(FAKE_NGINX);
      expect(built.path.startsWith(cache)).toBe(true);
      for (const d of [cache, path.join(cache, 'sources'), path.join(cache, 'builds'), path.dirname(built.path)]) {
        expect([d, (fs.statSync(d).mode & 0o777).toString(8)]).toEqual([d, '700']);
      }
    } finally {
      server.close();
    }
  });

  it('gives the same bytes from folders of other names and lengths: the debug information -g writes names no build folder', async () => {
    // A source tree built as nginx's is: configure writes objs/Makefile with `CFLAGS = ... -g`, make compiles with it.
    const work = tmp();
    const tree = path.join(work, `nginx-${VERSION}`);
    fs.mkdirSync(path.join(tree, 'src'), { recursive: true });
    fs.writeFileSync(path.join(tree, 'src', 'main.c'), '#include <stdio.h>\nint main(void) { fputs("nginx version: nginx/fake\\nconfigure arguments: --with-stream\\n", stderr); return 0; }\n');
    const objs = ['CC = cc', 'CFLAGS = -pipe -O -g', 'objs/nginx: src/main.c', '\t$(CC) $(CFLAGS) -o objs/nginx src/main.c', ''].join('\n');
    fs.writeFileSync(path.join(tree, 'configure'), `#!/bin/sh\nmkdir -p objs\ncat > objs/Makefile <<'EOF'\n${objs}EOF\nprintf 'all:\\n\\t$(MAKE) -f objs/Makefile\\n' > Makefile\n`);
    fs.chmodSync(path.join(tree, 'configure'), 0o755);
    const tarball = path.join(work, 'nginx.tar.gz');
    expect((await run('tar', ['-czf', tarball, '-C', work, `nginx-${VERSION}`])).code).toBe(0);
    const server = http.createServer((_req, res) => res.end(fs.readFileSync(tarball)));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const src = { version: VERSION, sources: [`http://127.0.0.1:${(server.address() as AddressInfo).port}/nginx-${VERSION}.tar.gz`], sha256: createHash('sha256').update(fs.readFileSync(tarball)).digest('hex') };
    const host: BuildHost = { name: 'controller', link: 'native', os: await controllerOs(), tools: ['gcc', 'make'], packageManager: null, connection: new LocalConnection(), installToolchain: false };
    const saved = process.env.TMPDIR;
    try {
      const builds = [];
      for (const folder of ['t', 'a-much-longer-temporary-folder']) {
        process.env.K8S_HA_CACHE_DIR = path.join(work, `cache-${folder}`);
        process.env.TMPDIR = path.join(work, folder);
        fs.mkdirSync(process.env.TMPDIR, { mode: 0o700 });
        builds.push(await ensureNginxBinary(src, [], host, () => undefined));
      }
      const [a, b] = builds;
      expect(a!.path).not.toBe(b!.path);
      expect(b!.sha256).toBe(a!.sha256);
      expect(b!.identity).toBe(a!.identity);
      const bytes = fs.readFileSync(a!.path).toString('latin1');
      expect(bytes).toContain('/usr/src/nginx');
      expect(bytes).not.toContain('k8s-ha-build-');
      // What made it is recorded: the compiler, the linker and make, as they name themselves.
      expect(a!.toolchain!.join('\n')).toMatch(/^cc .*\d+\.\d+.*\nGNU ld .*\nGNU Make \d/);
    } finally {
      if (saved === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = saved;
      server.close();
    }
  });

  it('reads a binary file back through the root shell byte for byte', async () => {
    const file = path.join(tmp(), 'bin');
    const bytes = Buffer.concat([Buffer.from(Array.from({ length: 256 }, (_, i) => i)), createHash('sha512').update('x').digest(), Buffer.alloc(70_000, 0xff)]);
    fs.writeFileSync(file, bytes, { mode: 0o600 });
    expect((await readAsRoot(new LocalConnection(), file)).equals(bytes)).toBe(true);
    await expect(readAsRoot(new LocalConnection(), `${file}.missing`)).rejects.toThrow(/reading the built nginx/);
  });
});

describe('the cache folder', () => {
  const mode = (d: string) => (fs.statSync(d).mode & 0o777).toString(8);

  it('is made 0700; one others can only read (as earlier versions made it) is tightened to 0700', async () => {
    const fresh = path.join(tmp(), 'a', 'k8s-ha');
    process.env.K8S_HA_CACHE_DIR = fresh;
    expect(await ensureCacheRoot()).toBe(fresh);
    expect(mode(fresh)).toBe('700');
    const old = path.join(tmp(), 'k8s-ha');
    fs.mkdirSync(old);
    fs.chmodSync(old, 0o755);
    process.env.K8S_HA_CACHE_DIR = old;
    await ensureCacheRoot();
    expect(mode(old)).toBe('700');
  });

  it('is refused when its group or others can write to it, or another user owns it, and left as it is', async () => {
    const open = path.join(tmp(), 'k8s-ha');
    fs.mkdirSync(open);
    fs.chmodSync(open, 0o775);
    process.env.K8S_HA_CACHE_DIR = open;
    const e = await ensureCacheRoot().catch((x: unknown) => x);
    expect(e).toBeInstanceOf(EnvironmentError);
    expect((e as EnvironmentError).message).toBe(`the k8s-ha cache ${open} is writable by its group (mode 0775): its sources and binaries may have been changed by another user`);
    expect((e as EnvironmentError).hint).toContain(`rm -rf ${open}`);
    expect(mode(open)).toBe('775');

    const theirs = path.join(tmp(), 'k8s-ha');
    fs.mkdirSync(theirs, { mode: 0o700 });
    fs.chownSync(theirs, 1001, 1001);
    process.env.K8S_HA_CACHE_DIR = theirs;
    await expect(ensureCacheRoot()).rejects.toThrow(`the k8s-ha cache ${theirs} belongs to uid 1001, not to uid ${process.getuid!()} who runs k8s-ha`);
  });
});
