/**
 * lb.impl container, the pure parts: the image made from the static nginx (a `docker save` archive,
 * byte for byte a function of the binary), the runtime a node uses, the unit that runs it, the image
 * step's plan, and what verify reads from the runtime. The lab runs all of it for real
 * (test/integration/container.test.ts).
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Parser, type ReadEntry } from 'tar';
import { IMAGE_REPOSITORY, nginxImage, ociArch } from '../../src/build/image.js';
import { CONTAINER_CONF_DIR, parseContainerState, renderContainerUnit, resolveRuntime } from '../../src/lb/container.js';
import { holdsImage, image } from '../../src/ops/image.js';
import { imageRefProblem, imageRepository } from '../../src/inventory/schema.js';
import { containerOwnerScript, containerProblem } from '../../src/engine/verify.js';
import net from 'node:net';
import { spawnSync } from 'node:child_process';
import { inventorySchema } from '../../src/inventory/schema.js';
import { checkRules } from '../../src/inventory/rules.js';
import type { HostFacts } from '../../src/facts/host.js';

/** Every entry of a tar archive: name, mode, owner, mtime and content. */
function entries(archive: Buffer): Map<string, { mode: number; uid: number; gid: number; mtime: number; content: Buffer; type: string }> {
  const out = new Map();
  const p = new Parser();
  p.on('entry', (e: ReadEntry) => {
    const chunks: Buffer[] = [];
    e.on('data', (c: Buffer) => chunks.push(c));
    e.on('end', () => out.set(e.path, { mode: e.mode, uid: e.uid, gid: e.gid, mtime: e.mtime?.getTime(), content: Buffer.concat(chunks), type: e.type }));
  });
  p.end(archive);
  return out;
}

const binary = Buffer.from('\x7fELF pretend static nginx');

describe('the balancer image', () => {
  it('is a docker-save archive naming itself by its config digest, with one layer: nginx, its user and /tmp, owned by root, time 0', () => {
    const img = nginxImage(binary, '1.22.1', 'x86_64');
    expect(img.ref).toMatch(new RegExp(`^${IMAGE_REPOSITORY}:1\\.22\\.1-${img.id.slice(0, 12)}$`));
    const outer = entries(img.archive);
    const manifest = JSON.parse(outer.get('manifest.json')!.content.toString());
    expect(manifest).toEqual([{ Config: `${img.id}.json`, RepoTags: [img.ref], Layers: [expect.stringMatching(/^[0-9a-f]{64}\/layer\.tar$/)] }]);
    const config = JSON.parse(outer.get(`${img.id}.json`)!.content.toString());
    expect(config).toMatchObject({ architecture: 'amd64', os: 'linux', config: { Entrypoint: ['/usr/sbin/kube-nginx'] } });
    expect(config.config.Cmd).toEqual(['-e', 'stderr', '-g', 'daemon off;', '-c', `${CONTAINER_CONF_DIR}/kube-nginx.conf`]);
    const layer = outer.get(manifest[0].Layers[0])!.content;
    expect(config.rootfs.diff_ids).toEqual([`sha256:${createHash('sha256').update(layer).digest('hex')}`]);
    const files = entries(layer);
    expect([...files.keys()].sort()).toEqual(['etc/', 'etc/group', 'etc/passwd', 'tmp/', 'usr/', 'usr/sbin/', 'usr/sbin/kube-nginx']);
    expect(files.get('usr/sbin/kube-nginx')).toMatchObject({ mode: 0o755, uid: 0, gid: 0, mtime: 0, content: binary });
    expect(files.get('tmp/')).toMatchObject({ mode: 0o1777, type: 'Directory' });
    expect(files.get('etc/passwd')!.content.toString()).toContain('kube-nginx:x:65532:65532:kube-nginx:/nonexistent:/sbin/nologin\n');
    for (const f of files.values()) expect(f).toMatchObject({ uid: 0, gid: 0, mtime: 0 });
  });

  it('is the same bytes for the same binary, and another tag for another binary or architecture', () => {
    const a = nginxImage(binary, '1.22.1', 'x86_64');
    expect(nginxImage(Buffer.from(binary), '1.22.1', 'x86_64').archive.equals(a.archive)).toBe(true);
    expect(nginxImage(Buffer.concat([binary, Buffer.from('x')]), '1.22.1', 'x86_64').ref).not.toBe(a.ref);
    expect(nginxImage(binary, '1.22.1', 'aarch64').ref).not.toBe(a.ref);
    expect(() => ociArch('riscv64')).toThrow(/no container image architecture for riscv64/);
  });
});

describe('the container runtime and its unit', () => {
  it('auto takes podman where the node has it, else docker, else none; a named one is used as named', () => {
    expect(resolveRuntime('auto', ['gcc', 'podman', 'docker'])).toBe('podman');
    expect(resolveRuntime('auto', ['docker'])).toBe('docker');
    expect(resolveRuntime('auto', ['gcc'])).toBeUndefined();
    expect(resolveRuntime('docker', ['podman'])).toBe('docker');
  });

  it('runs the image on the host network, never pulled, config read-only, systemd the only restarter, reload a HUP', () => {
    const inv = inventorySchema.parse({ masters: [{ name: 'm1', address: '10.0.0.1' }], nodes: [{ name: 'n1' }] });
    const ref = `${IMAGE_REPOSITORY}:1.22.1-0123456789ab`;
    const podman = renderContainerUnit(inv, 'podman', ref);
    expect(podman).toMatch(new RegExp(`^ExecStart=/usr/bin/podman run --name kube-nginx --replace --rm -d --pull=never --net=host .*-v /etc/kube-nginx:/etc/kube-nginx:ro ${ref}$`, 'm'));
    expect(podman).toMatch(/^Type=notify$/m);
    expect(podman).toMatch(/^ExecReload=\/usr\/bin\/podman kill --signal HUP kube-nginx$/m);
    expect(podman).not.toMatch(/^ExecStart=.*--restart/m);
    const docker = renderContainerUnit(inv, 'docker', ref);
    expect(docker).toMatch(new RegExp(`^ExecStart=/usr/bin/docker run --name kube-nginx --rm --restart=no --pull=never --net=host .*-v /etc/kube-nginx:/etc/kube-nginx:ro ${ref}$`, 'm'));
    expect(docker).toMatch(/^Requires=docker\.service$/m);
    expect(docker).toMatch(/^ExecReload=\/usr\/bin\/docker kill --signal HUP kube-nginx$/m);
    for (const u of [podman, docker]) expect(u).toMatch(/^Restart=always$/m);
  });

  it('refuses lb.impl container with a native build: the image has no C library', () => {
    const inv = inventorySchema.parse({
      masters: [{ name: 'm1', address: '10.0.0.1' }],
      nodes: [{ name: 'n1', lb: { impl: 'container' } }],
      nginx: { version: '1.22.1', sources: ['http://mirror/nginx.tar.gz'], sha256: 'a'.repeat(64) },
      build: { link: 'native' },
    });
    expect(checkRules(inv).map((d) => `${d.path.join('.')}: ${d.message}`)).toContain(
      'build.link: is native, but lb.impl container and static-pod run nginx in an image with no C library: only a static build runs there; remove build.link (static is the default)',
    );
  });
});

describe('the image step', () => {
  const img = nginxImage(binary, '1.22.1', 'x86_64');
  const artifacts = { 'kube-nginx-image': { content: img.archive, sha256: img.sha256, ref: img.ref, describe: 'the image' } };
  const ctx = { notified: new Set<never>(), artifacts, render: () => '' };
  const args = { source: 'artifact:kube-nginx-image', repository: IMAGE_REPOSITORY, runtime: 'auto' as const, archive: '/var/lib/k8s-ha/images/kube-nginx.tar', container: 'kube-nginx', validate: 'CHECK /etc/kube-nginx/kube-nginx.conf' };
  const facts = (tools: string[], images: string[], containers: string[] = []) => ({ tools, images: { [IMAGE_REPOSITORY]: images }, containers: { 'kube-nginx': containers } }) as unknown as HostFacts;
  const check = { kind: 'run', when: 'validate', label: `check the config in ${img.ref}`, command: 'CHECK /etc/kube-nginx/kube-nginx.conf' };

  it('asks every runtime which tags of the repository it holds, and what the container runs', () => {
    expect(image.facts(args)).toEqual({ images: [IMAGE_REPOSITORY], containers: ['kube-nginx'] });
  });

  it('loads the archive while staging and checks the config inside the new image once every file is staged, when the runtime lacks it', () => {
    const p = image.plan(args, facts(['podman'], [`podman ${IMAGE_REPOSITORY}:1.22.1-000000000000`, `docker ${img.ref}`]), ctx);
    expect(p.changes).toEqual([
      { kind: 'put', path: args.archive, content: img.archive, sha256: img.sha256, mode: '0600', validate: '/usr/bin/podman load -q -i /var/lib/k8s-ha/images/kube-nginx.tar' },
      check,
      expect.objectContaining({ kind: 'run', when: 'verified', label: 'remove older images', command: expect.stringContaining(`grep -vxF ${img.ref}`) }),
    ]);
    expect(p.summary).toMatch(/^load .* into podman \(0\.0 MB, no registry\)$/);
  });

  it('an image loaded already that the container does not run yet (an earlier run refused it) is still checked', () => {
    const p = image.plan(args, facts(['podman'], [`podman ${img.ref}`], [`podman true 42 ${IMAGE_REPOSITORY}:1.22.1-000000000000`]), ctx);
    expect(p).toEqual({ changes: [check], notify: [], summary: `${img.ref} is in podman; check the config in it` });
  });

  it('sends and checks nothing when the runtime holds that tag and the container runs it', () => {
    expect(image.plan(args, facts(['podman'], [`podman ${img.ref}`], [`podman true 42 ${img.ref}`]), ctx)).toEqual({ changes: [], notify: [], summary: `${img.ref} is in podman` });
  });

  it('stops the host while it stages, saying what to install, when the node has no runtime', () => {
    const p = image.plan(args, facts(['gcc'], []), ctx);
    expect(p.changes).toEqual([{ kind: 'run', when: 'staging', label: 'find a container runtime', command: expect.stringMatching(/no container runtime on this node: lb\.impl container needs podman or docker.*>&2; exit 1$/) }]);
    const named = image.plan({ ...args, runtime: 'docker' }, facts(['podman'], []), ctx);
    expect(named.summary).toBe('lb.runtime is docker, but this node has no docker on its PATH: install it, or set lb.runtime to the runtime the node has');
  });
});

describe('lb.image: the site\'s own image', () => {
  const digest = `sha256:${'a'.repeat(64)}`;
  it('must be fully qualified and pinned', () => {
    expect(imageRefProblem('registry.example.com:5000/ops/kube-nginx:1.22.1')).toBeUndefined();
    expect(imageRefProblem(`registry.example.com/ops/kube-nginx@${digest}`)).toBeUndefined();
    expect(imageRefProblem(`localhost/k8s-ha/kube-nginx:1.22.1-0123456789ab@${digest}`)).toBeUndefined();
    expect(imageRefProblem('kube-nginx:1.22.1')).toMatch(/^must name its registry first .*a short name makes each runtime guess a registry$/);
    expect(imageRefProblem('library/kube-nginx:1.22.1')).toMatch(/^must name its registry first/);
    expect(imageRefProblem('registry.example.com/ops/kube-nginx')).toMatch(/^must be pinned with a :tag or an @sha256: digest/);
    expect(imageRefProblem('registry.example.com/Ops/kube-nginx:1')).toMatch(/^must be an image reference/);
    expect(imageRefProblem('registry.example.com/ops/kube-nginx:1 ; reboot')).toMatch(/^must be an image reference/);
    expect(imageRepository(`registry.example.com:5000/ops/kube-nginx:1.22.1@${digest}`)).toBe('registry.example.com:5000/ops/kube-nginx');
  });

  it('is held when the runtime lists its tag and its digest, each that the reference gives', () => {
    const lines = [`podman registry.example.com/ops/kube-nginx:1.22.1 registry.example.com/ops/kube-nginx@${digest}`];
    expect(holdsImage(lines, 'podman', 'registry.example.com/ops/kube-nginx:1.22.1')).toBe(true);
    expect(holdsImage(lines, 'podman', `registry.example.com/ops/kube-nginx@${digest}`)).toBe(true);
    expect(holdsImage(lines, 'podman', `registry.example.com/ops/kube-nginx:1.22.1@${digest}`)).toBe(true);
    expect(holdsImage(lines, 'podman', `registry.example.com/ops/kube-nginx:1.22.1@sha256:${'b'.repeat(64)}`)).toBe(false);
    expect(holdsImage(lines, 'docker', 'registry.example.com/ops/kube-nginx:1.22.1')).toBe(false);
  });

  it('is pulled by the runtime while the run stages, checked, and never removed by k8s-ha', () => {
    const ref = 'registry.example.com/ops/kube-nginx:1.22.1';
    const artifacts = { 'kube-nginx-image': { content: Buffer.alloc(0), sha256: '', ref, pull: true, describe: 'site' } };
    const args = { source: 'artifact:kube-nginx-image', repository: 'registry.example.com/ops/kube-nginx', runtime: 'podman' as const, archive: '/var/lib/k8s-ha/images/kube-nginx.tar', container: 'kube-nginx', validate: 'CHECK' };
    const p = image.plan(args, { tools: ['podman'], images: {}, containers: {} } as unknown as HostFacts, { notified: new Set(), artifacts, render: () => '' });
    expect(p.changes).toEqual([
      { kind: 'run', when: 'staging', label: `pull ${ref}`, command: `timeout 600 /usr/bin/podman pull -q ${ref}` },
      { kind: 'run', when: 'validate', label: `check the config in ${ref}`, command: 'CHECK' },
    ]);
  });
});

describe("verify's view of the container", () => {
  const c = { runtime: 'podman' as const, name: 'kube-nginx', image: `${IMAGE_REPOSITORY}:1.22.1-0123456789ab` };
  it('reads the runtime: running, its PID and image', () => {
    expect(parseContainerState(`x\n@@container true 1583 ${c.image}\n`)).toEqual({ running: true, pid: 1583, image: c.image });
    expect(parseContainerState('@@container missing')).toBeUndefined();
  });
  it('says what is wrong: no container, not running, another image', () => {
    expect(containerProblem('@@container missing', c)).toBe('podman has no container kube-nginx');
    expect(containerProblem(`@@container false 0 ${c.image}`, c)).toBe('podman shows container kube-nginx not running');
    expect(containerProblem(`@@container true 9 ${IMAGE_REPOSITORY}:old`, c)).toBe(`container kube-nginx runs ${IMAGE_REPOSITORY}:old, not ${c.image}`);
    expect(containerProblem(`@@container true 9 ${c.image}`, c)).toBeUndefined();
  });
  it('the port owner check looks only at listeners that overlap the balancer\'s address: one on another address of the same port is none of its business', async () => {
    // A process of this host (not the container's) on 127.0.0.2:PORT, and on 127.0.0.1:PORT.
    const listen = async (host: string, port = 0) => {
      const server = net.createServer().listen(port, host);
      await new Promise((r) => server.once('listening', r));
      return server;
    };
    const other = await listen('127.0.0.2');
    const port = (other.address() as net.AddressInfo).port;
    const run = () => spawnSync('sh', ['-c', containerOwnerScript(c, `127.0.0.1:${port}`)], { encoding: 'utf8' }).stdout;
    try {
      expect(run()).toMatch(/^@@owner ours$/m);
      const same = await listen('127.0.0.1', port);
      try {
        expect(run()).toMatch(new RegExp(`^@@owner other ${process.pid} `, 'm'));
      } finally {
        same.close();
      }
    } finally {
      other.close();
    }
  });
});
