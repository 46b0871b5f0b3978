/** Cross-field checks on a schema-valid inventory: small pure rules, each naming its path. */
import type { Diagnostic } from './diagnostics.js';
import type { Inventory } from './schema.js';

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
  inv.lb.balance === 'hash'
    ? [
        {
          severity: 'warning',
          path: ['lb', 'balance'],
          message:
            'hash on a node-local balancer keys on 127.0.0.1 for every client, so every node sends all its traffic to one apiserver; least_conn spreads it',
        },
      ]
    : [];

const buildHost: Rule = (inv) =>
  inv.build.host === 'controller' || inv.nodes.some((n) => n.name === inv.build.host)
    ? []
    : [{ severity: 'error', path: ['build', 'host'], message: `"${inv.build.host}" is neither "controller" nor the name of a node` }];

export const RULES: Rule[] = [
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
