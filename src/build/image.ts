/**
 * The balancer as a container image, made on the controller with no container engine and no
 * registry: one layer holding the static nginx k8s-ha builds, the passwd and group lines of the
 * user its workers run as, and an empty /tmp (nothing else: no shell, no libc, no package
 * manager). Written as a `docker save` archive, which `podman load`, `docker load` and
 * `ctr images import` all read. Byte for byte a function of the binary: every timestamp is 0,
 * every owner root, so the same binary gives the same image on any machine, and the image's name
 * carries the digest of its config, so a new binary is a new tag and rolls like a binary change.
 */
import { createHash } from 'node:crypto';
import { Header } from 'tar';

/** Where every image k8s-ha builds is named: `localhost/` keeps runtimes from asking a registry for it. */
export const IMAGE_REPOSITORY = 'localhost/k8s-ha/kube-nginx';
/** Where nginx lives in the image. */
export const IMAGE_BINARY = '/usr/sbin/kube-nginx';
/**
 * The workers' user inside the image. Containers here share the host's user namespace, so this is
 * a host uid too: 65532, far above what distributions hand out, owns nothing on the host.
 */
export const IMAGE_UID = 65532;
export const IMAGE_USER = 'kube-nginx';

const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

interface Entry {
  path: string;
  mode: number;
  content?: Buffer;
  dir?: boolean;
}

/** A tar of the entries, in order: owner root, mtime 0. */
function tarOf(entries: Entry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const size = e.content?.length ?? 0;
    const h = new Header({ path: e.dir ? `${e.path}/` : e.path, mode: e.mode, uid: 0, gid: 0, uname: 'root', gname: 'root', size, mtime: new Date(0), type: e.dir ? 'Directory' : 'File' });
    h.encode();
    parts.push(h.block!);
    if (e.content) parts.push(e.content, Buffer.alloc((512 - (size % 512)) % 512));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

/** Docker's and the OCI's name for a CPU architecture, from `uname -m`'s. */
export function ociArch(machine: string): string {
  const m: Record<string, string> = { x86_64: 'amd64', amd64: 'amd64', aarch64: 'arm64', arm64: 'arm64' };
  const a = m[machine];
  if (!a) throw new Error(`no container image architecture for ${machine}: k8s-ha builds images for x86_64 and aarch64`);
  return a;
}

export interface NginxImage {
  /** `localhost/k8s-ha/kube-nginx:1.22.1-<12 hex of the config digest>`. */
  ref: string;
  /** The image ID runtimes show: sha256 of the config. */
  id: string;
  /** The `docker save` archive. */
  archive: Buffer;
  sha256: string;
  /** The nginx binary's sha256 (also the image's io.k8s-ha.binary.sha256 label). */
  binarySha256: string;
}

/** The image of a static nginx binary: pure, the same bytes for the same input. */
export function nginxImage(binary: Buffer, version: string, machine: string): NginxImage {
  const passwd = `root:x:0:0:root:/:/sbin/nologin\n${IMAGE_USER}:x:${IMAGE_UID}:${IMAGE_UID}:${IMAGE_USER}:/nonexistent:/sbin/nologin\n`;
  const group = `root:x:0:\n${IMAGE_USER}:x:${IMAGE_UID}:\n`;
  const layer = tarOf([
    { path: 'etc', mode: 0o755, dir: true },
    { path: 'etc/group', mode: 0o644, content: Buffer.from(group) },
    { path: 'etc/passwd', mode: 0o644, content: Buffer.from(passwd) },
    { path: 'tmp', mode: 0o1777, dir: true },
    { path: 'usr', mode: 0o755, dir: true },
    { path: 'usr/sbin', mode: 0o755, dir: true },
    { path: 'usr/sbin/kube-nginx', mode: 0o755, content: binary },
  ]);
  const diffId = sha256(layer);
  const config = Buffer.from(
    JSON.stringify({
      architecture: ociArch(machine),
      os: 'linux',
      created: '1970-01-01T00:00:00Z',
      config: {
        Entrypoint: [IMAGE_BINARY],
        // nginx in the foreground (the runtime is its parent), its early messages on stderr.
        Cmd: ['-e', 'stderr', '-g', 'daemon off;', '-c', '/etc/kube-nginx/kube-nginx.conf'],
        StopSignal: 'SIGTERM',
        Labels: { 'org.opencontainers.image.title': 'kube-nginx', 'org.opencontainers.image.version': version, 'io.k8s-ha.binary.sha256': sha256(binary) },
      },
      rootfs: { type: 'layers', diff_ids: [`sha256:${diffId}`] },
      history: [{ created: '1970-01-01T00:00:00Z', created_by: `k8s-ha: static nginx ${version}` }],
    }),
  );
  const id = sha256(config);
  const ref = `${IMAGE_REPOSITORY}:${version}-${id.slice(0, 12)}`;
  const manifest = Buffer.from(JSON.stringify([{ Config: `${id}.json`, RepoTags: [ref], Layers: [`${diffId}/layer.tar`] }]));
  const archive = tarOf([
    { path: diffId, mode: 0o755, dir: true },
    { path: `${diffId}/layer.tar`, mode: 0o644, content: layer },
    { path: `${id}.json`, mode: 0o644, content: config },
    { path: 'manifest.json', mode: 0o644, content: manifest },
  ]);
  return { ref, id, archive, sha256: sha256(archive), binarySha256: sha256(binary) };
}
