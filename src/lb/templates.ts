/** The templates a playbook may name, each a typed renderer of the inventory; and each balancer's unit. */
import type { Impl, Inventory } from '../inventory/schema.js';
import { KUBE_LB_SERVICE, renderKubeLbConf, renderKubeLbUnit } from './kube-lb.js';
import { renderClientPem } from './client-cert.js';
import { NGINX_SERVICE, renderNginxConf, renderNginxUnit } from './nginx.js';
import { KUBE_HAPROXY_SERVICE, renderHaproxyCa, renderKubeHaproxyConf, renderKubeHaproxyUnit } from './haproxy.js';

/** The systemd service each balancer implementation runs as. */
export const IMPL_UNITS: Record<Exclude<Impl, 'auto'>, string> = { nginx: NGINX_SERVICE, 'kube-lb': KUBE_LB_SERVICE, haproxy: KUBE_HAPROXY_SERVICE };

/** The implementation a service belongs to. */
export function implOfUnit(unit: string): Exclude<Impl, 'auto'> | undefined {
  return (Object.keys(IMPL_UNITS) as Exclude<Impl, 'auto'>[]).find((i) => IMPL_UNITS[i] === unit);
}

export const TEMPLATES: Record<string, (inv: Inventory) => string> = {
  'kube-nginx.conf': renderNginxConf,
  'kube-nginx.service': renderNginxUnit,
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
