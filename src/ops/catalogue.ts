/** Every step type a playbook may use. Adding an operation means adding it here. */
import { z } from 'zod';
import { command } from './command.js';
import { directory, file, systemdUnit, template } from './files.js';
import { packages } from './packages.js';
import { image } from './image.js';
import { staticPod } from './static-pod.js';
import { addressPort, service, unitName } from './service.js';
import type { Operation } from './types.js';

/** Build nginx on the controller or a node (see build/nginx.ts); its output is `artifact:nginx`. */
export const nginxBuildArgs = z.strictObject({
  configure: z.array(z.string().regex(/^--[a-z0-9_-]+(=\S+)?$/, 'must be a ./configure option such as --with-stream or --with-stream_realip_module')).min(1),
});

/** Build kube-lb as one executable on the controller (see build/kube-lb.ts); its output is `artifact:kube-lb`. */
export const kubeLbBuildArgs = z.strictObject({});

/** Build steps, by type, and the artifact each produces. */
export const BUILD_STEPS = { nginxBuild: 'nginx', kubeLbBuild: 'kube-lb' } as const;
export type BuildStepType = keyof typeof BUILD_STEPS;

/** Prove the balancer works: the unit is active (running) and an apiserver answers through the local port. */
export const verifyArgs = z.strictObject({
  unit: unitName,
  listen: addressPort,
  /** Sent as the request line's path: RFC 3986 characters only, so nothing can end the line or add a header. */
  path: z
    .string()
    .regex(/^\/[A-Za-z0-9._~!$&'()*+,;=:@/%?-]*$/, 'must be an HTTP path such as /readyz (no spaces or control characters)')
    .default('/readyz'),
  /**
   * The balancer's own health endpoint (kube-lb's admin port): it must answer 200 too, which
   * proves its active checks pass. Without it a balancer whose checks all fail would still be
   * verified, since it then tries every apiserver anyway.
   */
  healthz: addressPort.optional(),
  /** Other units that must be active (running) too (the VIP hosts' keepalived beside haproxy). */
  also: z.array(unitName).optional(),
  /**
   * The balancer runs in this container (lb.impl container): the runtime must show it running the
   * image named here, and the listeners on the port must be its processes (its PID namespace).
   */
  container: z
    .strictObject({
      runtime: z.enum(['podman', 'docker']),
      name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'must be a container name such as kube-nginx'),
      image: z.string().regex(/^[a-z0-9][a-z0-9._/:-]*$/, 'must be an image name:tag'),
    })
    .optional(),
  /**
   * The balancer is a static pod (lb.impl static-pod; `unit` is kubelet): the listeners on the port
   * must be the pod's nginx, running the binary of this sha256 when given (the image k8s-ha built).
   */
  staticPod: z
    .strictObject({
      sha256: z.union([z.literal(''), z.string().regex(/^[a-f0-9]{64}$/, 'must be a sha256 in hex')]).optional(),
      /** The runtime kubelet runs pods with: its own view must show the pod's nginx as a running container's first process. */
      runtime: z.enum(['containerd', 'podman', 'docker']).optional(),
    })
    .optional(),
});

export const OPERATIONS: Record<string, Operation<any>> = {
  directory,
  file,
  template,
  systemdUnit,
  service,
  command,
  packages,
  image,
  staticPod,
};

/**
 * The arguments of each step type that are shell commands run on the node: a `{{ }}` in them is
 * replaced by its value quoted for POSIX sh (one word), anywhere else by the value as it is.
 */
export const SHELL_ARGS: Readonly<Record<string, readonly string[]>> = { command: ['run', 'unless'], file: ['validate'], template: ['validate'], image: ['validate'] };

export const STEP_TYPES = ['nginxBuild', 'kubeLbBuild', 'verify', ...Object.keys(OPERATIONS)] as const;
