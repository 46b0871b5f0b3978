/**
 * Point kubelet and kube-proxy at the node-local balancer: rewrite `server:` in
 * their kubeconfigs to https://LISTEN, keeping the original as *.k8s-ha-orig,
 * and restart each service that exists. Pure plan from facts; one script to apply.
 */
import type { HostFacts } from '../facts/host.js';
import { quote } from '../util/quote.js';

export interface Kubeconfig {
  path: string;
  service?: string;
}

export interface Repoint {
  path: string;
  from: string;
  to: string;
  /** Restarted afterwards, when the unit exists on the node. */
  service?: string;
}

export const ORIGINAL_SUFFIX = '.k8s-ha-orig';

const SERVER = /^(\s*server:\s*)(\S+)\s*$/gm;

export function serverUrl(listen: string): string {
  return `https://${listen}`;
}

/** The server: URLs a kubeconfig names. */
export function serversIn(text: string): string[] {
  return [...text.matchAll(SERVER)].map((m) => m[2]!.replace(/^["']|["']$/g, ''));
}

export function planRepoint(kubeconfigs: Kubeconfig[], listen: string, facts: HostFacts): Repoint[] {
  const to = serverUrl(listen);
  const out: Repoint[] = [];
  for (const k of kubeconfigs) {
    const text = facts.texts[k.path];
    if (text === undefined) continue; // no such file on this node: nothing to point
    const servers = serversIn(text);
    const other = servers.find((s) => s !== to);
    if (!other) continue;
    const unit = k.service ? `${k.service}.service` : undefined;
    const exists = unit ? facts.units[unit] && facts.units[unit]!.loadState !== 'not-found' : false;
    out.push({ path: k.path, from: other, to, service: exists ? k.service : undefined });
  }
  return out;
}

export function units(kubeconfigs: Kubeconfig[]): string[] {
  return kubeconfigs.filter((k) => k.service).map((k) => `${k.service}.service`);
}

/** Back up once, rewrite every server: line atomically, restart the services that exist. */
export function repointScript(changes: Repoint[]): string {
  const lines = ['set -eu'];
  for (const c of changes) {
    const f = quote(c.path);
    const orig = quote(c.path + ORIGINAL_SUFFIX);
    lines.push(
      `[ -e ${orig} ] || cp -p ${f} ${orig}`,
      `cp -p ${f} ${f}.k8s-ha-new`,
      `sed -E 's#^([[:space:]]*server:[[:space:]]*).*$#\\1${c.to}#' ${f} > ${f}.k8s-ha-new`,
      `mv -f ${f}.k8s-ha-new ${f}`,
    );
  }
  for (const s of new Set(changes.map((c) => c.service).filter(Boolean))) lines.push(`systemctl restart ${quote(s!)}`);
  lines.push('echo "@@repointed"');
  return lines.join('\n') + '\n';
}
