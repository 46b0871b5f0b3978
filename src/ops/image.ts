/**
 * A container image in the node's runtime, loaded from a build output with no registry: the archive
 * is uploaded with the run's other files and loaded while they are staged (`podman load`,
 * `docker load`), before any live file moves, so a config check inside the image can run then and
 * an image that does not load stops the host with nothing changed. Loading an image changes
 * nothing that runs. An image the runtime already has (by name and tag, which carry its digest)
 * is not sent again.
 */
import { z } from 'zod';
import { resolveRuntime, type Runtime } from '../lb/container.js';
import { nodePath, RUNTIMES } from '../inventory/schema.js';
import { quote } from '../util/quote.js';
import { containerImage } from '../facts/host.js';
import { noop, type Change, type Operation } from './types.js';

type ImageArgs = { source: string; repository: string; runtime: (typeof RUNTIMES)[number]; archive: string; container?: string; manifest?: string; validate?: string };

/** Pure: the image a static pod manifest names (its first container's `image:`), or undefined. */
export function manifestImage(text: string | undefined): string | undefined {
  const m = /^\s*(?:-\s+)?image:\s*"?([^"\s]+)"?\s*$/m.exec(text ?? '');
  return m?.[1];
}

/** What the runtime lacks, in words, with the fix. `kubelet`: a static pod's, as the node's facts give it. */
export function noRuntime(want: ImageArgs['runtime'], kubelet?: { endpoint: string }): string {
  if (want !== 'auto') return `lb.runtime is ${want}, but this node has no ${want === 'containerd' ? 'ctr (containerd)' : want} on its PATH: install it, or set lb.runtime to the runtime the node has`;
  if (kubelet?.endpoint) return `kubelet runs pods through ${kubelet.endpoint}, which k8s-ha cannot load an image into (it can: containerd, CRI-O through podman, cri-dockerd through docker): set lb.runtime, or lb.image to an image kubelet can pull`;
  if (kubelet) return 'no container runtime on this node for kubelet\'s static pod: no CRI endpoint named in its command line or config, and no ctr (containerd), podman or docker on the PATH';
  return 'no container runtime on this node: lb.impl container needs podman or docker (install one from the package manager, e.g. apt-get install podman)';
}

/**
 * Whether the runtime holds the image: its `RUNTIME REPO:TAG REPO@DIGEST` lines (facts.images) name
 * the reference's tag and its digest, each that the reference gives.
 */
export function holdsImage(lines: readonly string[], runtime: string, ref: string): boolean {
  const at = ref.indexOf('@');
  const named = at < 0 ? ref : ref.slice(0, at);
  const digest = at < 0 ? undefined : ref.slice(at + 1);
  const colon = named.lastIndexOf(':');
  const repo = colon > named.lastIndexOf('/') ? named.slice(0, colon) : named;
  const tagged = colon > named.lastIndexOf('/') ? named : undefined;
  return lines.some((l) => {
    const [rt, byTag, byDigest] = l.split(' ');
    return rt === runtime && (!tagged || byTag === tagged) && (!digest || byDigest === `${repo}@${digest}`);
  });
}

/**
 * Shell put before a command of the runtime's: Docker's daemon running (its unit, which the balancer's
 * unit requires anyway, started if it is not); podman has none.
 */
function daemonUp(runtime: Runtime): string {
  if (runtime === 'podman') return '';
  return `{ systemctl is-active -q ${runtime} || systemctl start ${runtime}; } && `;
}

/** kubelet's images in containerd live in its namespace, k8s.io: the CRI plugin sees no other. */
const CTR = 'ctr -n k8s.io';

/** Shell, per runtime: load an archive; pull a reference; list the repository's references; remove one (`"$old"`). */
function runtimeCommands(runtime: Runtime, snapshotter: string) {
  if (runtime === 'containerd') {
    return {
      // Unpacked into the snapshotter the CRI plugin uses, as a pull by kubelet would be.
      load: (archive: string) => `timeout 600 ${CTR} images import --snapshotter ${quote(snapshotter)} ${quote(archive)} >/dev/null`,
      pull: (ref: string) => `timeout 600 ${CTR} images pull --snapshotter ${quote(snapshotter)} ${quote(ref)} >/dev/null`,
      list: (repo: string) => `timeout 60 ${CTR} images ls -q | grep -F ${quote(`${repo}:`)}`,
      remove: `timeout 60 ${CTR} images rm "$old"`,
    };
  }
  const bin = `/usr/bin/${runtime}`;
  return {
    load: (archive: string) => `${bin} load -q -i ${quote(archive)}`,
    pull: (ref: string) => `timeout 600 ${bin} pull -q ${quote(ref)}`,
    list: (repo: string) => `timeout 60 ${bin} images --format '{{.Repository}}:{{.Tag}}' ${quote(repo)}`,
    remove: `timeout 60 ${bin} rmi "$old"`,
  };
}

export const image: Operation<ImageArgs> = {
  type: 'image',
  args: z.strictObject({
    source: z.string().regex(/^artifact:[a-z0-9-]+$/, 'must name a build output, e.g. artifact:kube-nginx-image'),
    /** The repository the build names its image in: what the node's runtimes are asked about. */
    repository: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._:-]*(\/[a-z0-9]+([._-]+[a-z0-9]+)*)+$/, 'must be an image repository such as localhost/k8s-ha/kube-nginx'),
    runtime: z.enum(RUNTIMES),
    /** Where the archive is kept on the node (root's alone): loaded from there. */
    archive: z.string().regex(/^\/[A-Za-z0-9._/-]+$/, 'must be an absolute path'),
    /** The container that runs the image: whether it runs this build's tag already is read from the runtime. */
    container: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'must be a container name such as kube-nginx').optional(),
    /** A static pod's manifest (lb.impl static-pod): the image kubelet runs is the one it names. */
    manifest: nodePath('/etc/kubernetes/manifests/kube-nginx.yaml').optional(),
    /**
     * Run whenever the container is to run another image, once every file is staged and before
     * anything live moves: the config checked inside the new image (the staged config when it
     * changes too, else the live one, which the new image must run as it stands).
     */
    validate: z.string().optional(),
  }),
  facts: (a) => ({ images: [a.repository], ...(a.container ? { containers: [a.container] } : {}), ...(a.manifest ? { texts: [a.manifest], kubelet: true } : {}) }),
  plan(a, facts, ctx) {
    const name = a.source.slice('artifact:'.length);
    const artifact = ctx.artifacts[name];
    if (!artifact?.ref) throw new Error(`no image built as ${name}: a build step must come first`);
    if (!artifact.ref.startsWith(`${a.repository}:`) && !artifact.ref.startsWith(`${a.repository}@`)) throw new Error(`the image ${artifact.ref} is not in ${a.repository}`);
    // A static pod's runtime is kubelet's: its CRI endpoint, from the node's facts.
    const kubelet = a.manifest ? (facts.kubelet ?? { endpoint: '' }) : undefined;
    const found: Runtime | undefined = resolveRuntime(a.runtime, facts.tools, kubelet);
    const runtime = found && facts.tools.includes(found === 'containerd' ? 'ctr' : found) ? found : undefined;
    if (!runtime) {
      // Stops the host while it stages: nothing live has moved.
      const why = noRuntime(a.runtime, kubelet);
      return { changes: [{ kind: 'run', command: `echo ${quote(why)} >&2; exit 1`, label: 'find a container runtime', when: 'staging' }], notify: [], summary: why };
    }
    const rt = runtimeCommands(runtime, facts.kubelet?.snapshotter || 'overlayfs');
    const loaded = holdsImage(facts.images?.[a.repository] ?? [], runtime, artifact.ref);
    // The image the container runs now, as its runtime says: a loaded image it does not run yet is still checked.
    const runs = a.manifest ? manifestImage(facts.texts[a.manifest]) : a.container ? containerImage(facts, a.container, runtime) : artifact.ref;
    const check: Change[] = a.validate && runs !== artifact.ref ? [{ kind: 'run', when: 'validate', label: `check the config in ${artifact.ref}`, command: `${daemonUp(runtime)}${a.validate}` }] : [];
    if (loaded) {
      if (!check.length) return noop(`${artifact.ref} is in ${runtime}`);
      return { changes: check, notify: [], summary: `${artifact.ref} is in ${runtime}; check the config in it` };
    }
    if (artifact.pull) {
      // The site's own image (lb.image): its registry is the runtime's to reach, while the run stages.
      // Never removed by k8s-ha: the site manages its images.
      return {
        changes: [{ kind: 'run', when: 'staging', label: `pull ${artifact.ref}`, command: `${daemonUp(runtime)}${rt.pull(artifact.ref)}` }, ...check],
        notify: [],
        summary: `pull ${artifact.ref} into ${runtime} (lb.image, from the site's registry)`,
      };
    }
    return {
      changes: [
        {
          kind: 'put',
          path: a.archive,
          content: artifact.content,
          sha256: artifact.sha256,
          mode: '0600',
          // Read from the staged copy, before any config is checked in the image.
          validate: `${daemonUp(runtime)}${rt.load(a.archive)}`,
        },
        ...check,
        {
          // Once the new image is verified, the repository's other tags go (an older build, a failed
          // one): a node keeps one image of the balancer. One still in use stays; it never fails the run.
          kind: 'run',
          when: 'verified',
          label: 'remove older images',
          command:
            `{ ${rt.list(a.repository)} | grep -vxF ${quote(artifact.ref)} | ` +
            `while read -r old; do ${rt.remove} >/dev/null 2>&1; done; true; }`,
        },
      ],
      notify: [],
      summary: `load ${artifact.ref} into ${runtime} (${(artifact.content.length / 1e6).toFixed(1)} MB, no registry)`,
    };
  },
};
