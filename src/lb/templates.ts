/** The templates a playbook may name, each a typed renderer of the inventory; and each balancer's unit. */
import type { Impl, Inventory } from '../inventory/schema.js';
import type { HostFacts } from '../facts/host.js';
import type { PlanContext } from '../ops/types.js';
import { KUBELET_UNIT, renderStaticPod } from './static-pod.js';
import { CONTAINER_SERVICE, renderContainerConf, renderContainerUnit, resolveRuntime } from './container.js';
import { KUBE_LB_SERVICE, renderKubeLbConf, renderKubeLbUnit } from './kube-lb.js';
import { renderClientPem } from './client-cert.js';
import { NGINX_SERVICE, renderNginxConf, renderNginxUnit } from './nginx.js';
import { KUBE_HAPROXY_SERVICE, renderHaproxyCa, renderKubeHaproxyConf, renderKubeHaproxyUnit } from './haproxy.js';

/** The systemd service each balancer implementation runs as (a static pod: the kubelet that runs it). */
export const IMPL_UNITS: Record<Exclude<Impl, 'auto'>, string> = {
  nginx: NGINX_SERVICE,
  'kube-lb': KUBE_LB_SERVICE,
  haproxy: KUBE_HAPROXY_SERVICE,
  container: CONTAINER_SERVICE,
  'static-pod': KUBELET_UNIT,
};

/** The implementation a service belongs to. */
export function implOfUnit(unit: string): Exclude<Impl, 'auto'> | undefined {
  return (Object.keys(IMPL_UNITS) as Exclude<Impl, 'auto'>[]).find((i) => IMPL_UNITS[i] === unit);
}

/** What a template may read besides the inventory: the host's facts and the run's builds. */
export interface TemplateContext {
  facts?: HostFacts;
  artifacts?: PlanContext['artifacts'];
}

/** The build output that is the balancer's image. */
export const IMAGE_ARTIFACT = 'kube-nginx-image';

/** Templates that name a build output: with that output unknown (--check, status, nothing built) their text is too. */
export const TEMPLATE_ARTIFACTS: Readonly<Record<string, string>> = { 'kube-nginx-container.service': IMAGE_ARTIFACT, 'kube-nginx.pod.yaml': IMAGE_ARTIFACT };

/** The container unit names its runtime (the node's, from its facts) and the image (the build's). */
function containerUnit(inv: Inventory, ctx: TemplateContext = {}): string {
  // containerd is a static pod's runtime only (refused at load for lb.impl container).
  const runtime = resolveRuntime(inv.lb.runtime, ctx.facts?.tools ?? []) === 'docker' ? 'docker' : 'podman';
  const image = ctx.artifacts?.[IMAGE_ARTIFACT]?.ref;
  if (!image) throw new Error(`the ${IMAGE_ARTIFACT} build must come before the unit that runs it`);
  return renderContainerUnit(inv, runtime, image);
}

export const TEMPLATES: Record<string, (inv: Inventory, ctx?: TemplateContext) => string> = {
  'kube-nginx.conf': (inv) => renderNginxConf(inv),
  'kube-nginx.service': renderNginxUnit,
  'kube-nginx-container.conf': (inv) => renderContainerConf(inv),
  'kube-nginx-container.service': containerUnit,
  'kube-nginx.pod.yaml': (inv, ctx = {}) => {
    const image = ctx.artifacts?.[IMAGE_ARTIFACT]?.ref;
    if (!image) throw new Error(`the ${IMAGE_ARTIFACT} build must come before the static pod that runs it`);
    return renderStaticPod(inv, image);
  },
  'kube-lb.yaml': renderKubeLbConf,
  'kube-lb.service': renderKubeLbUnit,
  'kube-haproxy.cfg': renderKubeHaproxyConf,
  'kube-haproxy.service': renderKubeHaproxyUnit,
  'kube-haproxy-ca.crt': renderHaproxyCa,
  // The health checks' client certificate and key: playbooks install these with `secret: true`.
  'kube-haproxy-client.pem': renderClientPem,
  'kube-lb-client.pem': (inv) =>
    inv.kubeLb.check.clientCertFile || inv.kubeLb.check.clientKeyFile ? '# kubeLb.check names the client certificate on the node\n' : renderClientPem(inv),
};
