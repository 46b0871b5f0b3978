/** Cross-field checks on a schema-valid inventory: small pure rules, each naming its path. */
import type { Diagnostic } from './diagnostics.js';
import { wantedImpl, type Inventory } from './schema.js';

type Rule = (inv: Inventory) => Diagnostic[];

function duplicates(list: 'nodes' | 'masters', field: 'name' | 'address'): Rule {
  return (inv) => {
    const seen = new Map<string, number>();
    const out: Diagnostic[] = [];
    inv[list].forEach((item, i) => {
      const key = field === 'address' && list === 'masters' ? `${item.address}:${(item as { port: number }).port}` : item[field];
      const first = seen.get(key);
      if (first === undefined) seen.set(key, i);
      else
        out.push({
          severity: 'error',
          path: [list, i, field],
          message: `duplicate ${field} "${item[field]}" (also ${list}[${first}].${field})`,
        });
    });
    return out;
  };
}

const loopbackListen: Rule = (inv) => {
  const host = inv.lb.listen.replace(/:\d+$/, '').replace(/^\[(.*)\]$/, '$1');
  if (host.startsWith('127.') || host === '::1') return [];
  return [
    {
      severity: 'warning',
      path: ['lb', 'listen'],
      message: `${inv.lb.listen} is not a loopback address: the node-local balancer will be reachable from the network`,
    },
  ];
};

const hashBalance: Rule = (inv) =>
  inv.lb.balance === 'hash' && inv.nodes.some((n) => wantedImpl(inv, n) !== 'kube-lb')
    ? [
        {
          severity: 'warning',
          path: ['lb', 'balance'],
          message:
            'with nginx, hash on a node-local balancer keys on 127.0.0.1 for every client, so every node sends all its traffic to one apiserver; least_conn spreads it (kube-lb hashes the client port too)',
        },
      ]
    : [];

const buildHost: Rule = (inv) =>
  inv.build.host === 'controller' || inv.nodes.some((n) => n.name === inv.build.host)
    ? []
    : [{ severity: 'error', path: ['build', 'host'], message: `"${inv.build.host}" is neither "controller" nor the name of a node` }];

/** nginx must be described wherever it may be built. */
const nginxNeeded: Rule = (inv) => {
  if (inv.nginx) return [];
  const who = inv.nodes.filter((n) => wantedImpl(inv, n) !== 'kube-lb');
  if (!who.length) return [];
  return [
    {
      severity: 'error',
      path: ['nginx'],
      message: `is required: ${who.length === inv.nodes.length ? 'every node' : who.map((n) => n.name).join(', ')} may run nginx (lb.impl ${inv.lb.impl}); add nginx: { version, sources, sha256 }, or set lb.impl: kube-lb`,
    },
  ];
};

/** kube-lb's active checks verify each apiserver's certificate: they need the cluster CA. */
const kubeLbTrust: Rule = (inv) => {
  if (inv.tls.caFile || inv.tls.insecureSkipVerify) return [];
  if (!inv.nodes.some((n) => wantedImpl(inv, n) !== 'nginx')) return [];
  return [
    {
      severity: 'error',
      path: ['tls', 'caFile'],
      message:
        'is required where kube-lb may run: its health checks verify every apiserver with the cluster CA (e.g. /etc/kubernetes/pki/ca.crt); set tls.insecureSkipVerify: true only to check without verifying',
    },
  ];
};

export const RULES: Rule[] = [
  nginxNeeded,
  kubeLbTrust,
  buildHost,
  duplicates('nodes', 'name'),
  duplicates('nodes', 'address'),
  duplicates('masters', 'name'),
  duplicates('masters', 'address'),
  loopbackListen,
  hashBalance,
];

export function checkRules(inv: Inventory): Diagnostic[] {
  return RULES.flatMap((rule) => rule(inv));
}
