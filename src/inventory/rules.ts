/** Cross-field checks on a schema-valid inventory: small pure rules, each naming its path. */
import { nameList, type Diagnostic } from './diagnostics.js';
import net from 'node:net';
import { buildHostNames, vipHosts, wantedImpl, type Inventory } from './schema.js';
import { canonicalHost, formatHostPort, hostPortOf, hostPortsOverlap, isLoopback, isWildcard } from '../util/hostport.js';

type Rule = (inv: Inventory) => Diagnostic[];

/** Whether a node runs the nginx image k8s-ha builds or lb.image names: as a container under systemd, or as a static pod. */
const imaged = (inv: Inventory) => inv.nodes.some((n) => ['container', 'static-pod'].includes(wantedImpl(inv, n)));

/** Whether some node may run kube-lb (kube-lb or auto), nginx (nginx or auto), or haproxy. */
const mayRun = (inv: Inventory, which: 'nginx' | 'kube-lb' | 'haproxy') =>
  inv.nodes.some((n) => {
    const w = wantedImpl(inv, n);
    return w === which || (w === 'auto' && which !== 'haproxy');
  });

function duplicates(list: 'nodes' | 'masters', field: 'name' | 'address'): Rule {
  return (inv) => {
    const seen = new Map<string, number>();
    const out: Diagnostic[] = [];
    inv[list].forEach((item, i) => {
      const value = item[field];
      if (value === undefined) return;
      // One address written two ways (fd00::1, FD00:0::1) is still one host.
      const canonical = field === 'address' ? canonicalHost(value) : value;
      const key = field === 'address' && list === 'masters' ? `${canonical} ${(item as { port: number }).port}` : canonical;
      const first = seen.get(key);
      if (first === undefined) seen.set(key, i);
      else
        out.push({
          severity: 'error',
          path: [list, i, field],
          message: `duplicate ${field} "${value}" (also ${list}[${first}].${field})`,
        });
    });
    return out;
  };
}

const loopbackListen: Rule = (inv) => {
  if (isLoopback(hostPortOf(inv.lb.listen).host)) return [];
  return [
    {
      severity: 'warning',
      path: ['lb', 'listen'],
      message: `${inv.lb.listen} is not a loopback address: the node-local balancer will be reachable from the network`,
    },
  ];
};

/** kube-lb's admin listener serves /metrics and /healthz to anyone who can connect. */
const loopbackAdmin: Rule = (inv) => {
  if (!mayRun(inv, 'kube-lb')) return [];
  const admin = hostPortOf(inv.kubeLb.admin);
  if (isLoopback(admin.host)) return [];
  return [
    {
      severity: 'warning',
      path: ['kubeLb', 'admin'],
      message: `${inv.kubeLb.admin} is not a loopback address: kube-lb's /metrics and /healthz have no authentication, so anyone who can reach port ${admin.port} can read them; keep it on 127.0.0.1 (or [::1]), or firewall the port`,
    },
  ];
};

/** The first port from `from` up (then from 1024) that is none of `taken`, for a suggestion. */
function freePort(taken: number[], from: number): number {
  for (let p = from; p <= 65535; p++) if (!taken.includes(p)) return p;
  for (let p = 1024; p < from; p++) if (!taken.includes(p)) return p;
  return from;
}

/** kube-lb binds lb.listen and kubeLb.admin side by side: they cannot want one socket. */
const adminApartFromListen: Rule = (inv) => {
  if (!mayRun(inv, 'kube-lb')) return [];
  const admin = hostPortOf(inv.kubeLb.admin);
  const listen = hostPortOf(inv.lb.listen);
  if (!hostPortsOverlap(admin, listen)) return [];
  const fix = `use another port, e.g. ${formatHostPort(admin.host, freePort([listen.port], admin.port + 1))}`;
  const every = isWildcard(admin.host) ? admin.host : listen.host;
  return [
    {
      severity: 'error',
      path: ['kubeLb', 'admin'],
      message:
        canonicalHost(admin.host) === canonicalHost(listen.host)
          ? `${inv.kubeLb.admin} is also lb.listen: kube-lb cannot listen twice on one address and port; ${fix}`
          : `${inv.kubeLb.admin} and lb.listen ${inv.lb.listen} both take port ${listen.port} (${every} is every address): kube-lb cannot listen on both; ${fix}`,
    },
  ];
};

/**
 * A node that is also a master already has kube-apiserver on the master's port, on every address
 * unless its --bind-address says otherwise: no listener of the balancer can take that port there,
 * whatever its address. A master on a loopback address is on every node.
 */
function apartFromApiserver(field: 'lb.listen' | 'kubeLb.admin'): Rule {
  return (inv) => {
    const [section, key] = field === 'lb.listen' ? (['lb', 'listen'] as const) : (['kubeLb', 'admin'] as const);
    if (field === 'kubeLb.admin' && !mayRun(inv, 'kube-lb')) return [];
    const text = section === 'lb' ? inv.lb.listen : inv.kubeLb.admin;
    const { host, port } = hostPortOf(text);
    const out: Diagnostic[] = [];
    const taken = [...inv.masters.map((m) => m.port), hostPortOf(field === 'lb.listen' ? inv.kubeLb.admin : inv.lb.listen).port];
    const fix = `give ${field === 'lb.listen' ? 'the balancer' : "kube-lb's admin listener"} another port, e.g. ${formatHostPort(host, freePort(taken, field === 'lb.listen' ? 8443 : 8444))}`;
    for (const m of inv.masters) {
      if (m.port !== port) continue;
      const master = `master ${m.name} (${formatHostPort(m.address, m.port)})`;
      if (isLoopback(m.address)) {
        out.push({
          severity: 'error',
          path: [section, key],
          message: `${text} takes port ${port} on every node, where ${master} is too (a loopback address): the balancer would take the apiserver's port or forward to itself; ${fix}`,
        });
        continue;
      }
      for (const n of inv.nodes) {
        if (n.address === undefined || canonicalHost(n.address) !== canonicalHost(m.address)) continue;
        out.push({
          severity: 'error',
          path: [section, key],
          message: `${text} takes port ${port} on node ${n.name}, which is also ${master}: kube-apiserver listens on that port there (on every address unless --bind-address says otherwise); ${fix}`,
        });
      }
    }
    return out;
  };
}

/**
 * Both units run with PrivateTmp=true (a /tmp of their own, so a prefix under /tmp is not there
 * for them) and kube-lb.service with ProtectHome=true (no /home, /root): the binary would not start.
 */
const prefixVisibleToUnit: Rule = (inv) => {
  const out: Diagnostic[] = [];
  const check = (which: 'nginx' | 'kube-lb', section: 'lb' | 'kubeLb', example: string, hidden: [string, string][]) => {
    if (!mayRun(inv, which)) return;
    const prefix = inv[section].prefix;
    const hit = hidden.find(([root]) => prefix.startsWith(root + '/'));
    if (!hit) return;
    const unit = which === 'nginx' ? 'kube-nginx.service' : 'kube-lb.service';
    out.push({
      severity: 'error',
      path: [section, 'prefix'],
      message: `is under ${hit[0]}, which ${unit} cannot see (it runs with ${hit[1]}=true): use a directory of its own, like ${example}`,
    });
  };
  const tmp: [string, string][] = [
    ['/tmp', 'PrivateTmp'],
    ['/var/tmp', 'PrivateTmp'],
  ];
  check('nginx', 'lb', '/opt/k8s/kube-nginx', tmp);
  check('kube-lb', 'kubeLb', '/opt/k8s/kube-lb', [...tmp, ['/home', 'ProtectHome'], ['/root', 'ProtectHome']]);
  return out;
};

const hashBalance: Rule = (inv) =>
  inv.lb.balance === 'hash' && (mayRun(inv, 'nginx') || mayRun(inv, 'haproxy') || imaged(inv))
    ? [
        {
          severity: 'warning',
          path: ['lb', 'balance'],
          message:
            'with nginx or haproxy, hash on a node-local balancer keys on 127.0.0.1 for every client, so every node sends all its traffic to one apiserver; least_conn spreads it (kube-lb hashes the client port too)',
        },
      ]
    : [];

const buildHost: Rule = (inv) => {
  const names = buildHostNames(inv.build);
  const at = (i: number) => (Array.isArray(inv.build.host) ? ['build', 'host', i] : ['build', 'host']);
  return names.flatMap((h, i) => [
    ...(h === 'controller' || inv.nodes.some((n) => n.name === h) ? [] : [{ severity: 'error' as const, path: at(i), message: `"${h}" is neither "controller" nor the name of a node` }]),
    ...(names.indexOf(h) < i ? [{ severity: 'error' as const, path: at(i), message: `"${h}" is listed twice: list one build host per CPU architecture` }] : []),
  ]);
};

/** nginx must be described wherever it may be built. */
const nginxNeeded: Rule = (inv) => {
  if (inv.nginx) return [];
  // A container runs the nginx k8s-ha builds, unless lb.image names the site's own image.
  const who = inv.nodes.filter((n) => ['nginx', 'auto', ...(inv.lb.image ? [] : ['container', 'static-pod'])].includes(wantedImpl(inv, n)));
  if (!who.length) return [];
  return [
    {
      severity: 'error',
      path: ['nginx'],
      message: `is required: ${who.length === inv.nodes.length ? 'every node' : nameList(who.map((n) => n.name))} may run nginx (lb.impl ${inv.lb.impl}); add nginx: { version, sources, sha256 }, or set lb.impl: kube-lb`,
    },
  ];
};

/** The image holds nginx and nothing else, no C library: only a static build runs in it. */
const containerStatic: Rule = (inv) =>
  inv.build.link === 'native' && !inv.lb.image && imaged(inv)
    ? [{ severity: 'error', path: ['build', 'link'], message: 'is native, but lb.impl container and static-pod run nginx in an image with no C library: only a static build runs there; remove build.link (static is the default)' }]
    : [];

/** kube-lb's and haproxy's active checks verify each apiserver's certificate: they need the cluster CA. */
const kubeLbTrust: Rule = (inv) => {
  if (inv.tls.caFile || inv.tls.insecureSkipVerify) return [];
  const who = mayRun(inv, 'kube-lb') ? 'kube-lb' : mayRun(inv, 'haproxy') ? 'haproxy' : undefined;
  if (!who) return [];
  return [
    {
      severity: 'error',
      path: ['tls', 'caFile'],
      message: `is required where ${who} may run: its health checks verify every apiserver with the cluster CA (e.g. /etc/kubernetes/pki/ca.crt); set tls.insecureSkipVerify: true only to check without verifying`,
    },
  ];
};

/**
 * The VIP layer: every host named once and found, with an IP address keepalived can use as its
 * VRRP source and peer; the VIP an address of its own; haproxy's ports free on each host.
 */
const vipLayer: Rule = (inv) => {
  const v = inv.vip;
  if (!v) return [];
  const out: Diagnostic[] = [];
  const err = (path: (string | number)[], message: string) => out.push({ severity: 'error', path, message });
  const known = [...inv.masters.map((m) => m.name), ...inv.nodes.map((n) => n.name)];
  const seen = new Set<string>();
  v.hosts.forEach((h, i) => {
    if (seen.has(h)) err(['vip', 'hosts', i], `names ${h} twice`);
    seen.add(h);
    const isMaster = inv.masters.some((m) => m.name === h);
    const isNode = inv.nodes.some((n) => n.name === h);
    if (!isMaster && !isNode) err(['vip', 'hosts', i], `"${h}" is neither a master nor a node of this inventory; use one of: ${known.join(', ')}`);
    else if (isMaster && isNode) err(['vip', 'hosts', i], `"${h}" is both a master and a node: give the two entries different names so it is clear which one carries the VIP`);
  });
  for (const h of vipHosts(inv)) {
    const at = ['vip', 'hosts', v.hosts.indexOf(h.name)];
    if (net.isIP(h.address) === 0) {
      err(at, `${h.name} has no IP address in the inventory (${h.address === h.name ? 'none given' : h.address}): keepalived's unicast VRRP needs each host's IP address; write it as ${h.role === 'master' ? 'masters' : 'nodes'}[].address`);
      continue;
    }
    if (net.isIP(h.address) !== net.isIP(v.address)) err(at, `${h.name}'s address ${h.address} and the VIP ${v.address} are not of one IP version: VRRP runs over one`);
    const master = inv.masters.find((m) => m.name === h.name);
    if (master && master.port === v.port) {
      err(['vip', 'port'], `${v.port} is the apiserver's port on ${h.name}: haproxy cannot take it there; use another port, e.g. ${freePort(inv.masters.map((m) => m.port), 8443)}`);
    }
    const node = inv.nodes.find((n) => n.name === h.name);
    if (node) {
      const mine = [
        { what: 'lb.listen', hp: hostPortOf(inv.lb.listen) },
        ...(mayRun(inv, 'kube-lb') ? [{ what: 'kubeLb.admin', hp: hostPortOf(inv.kubeLb.admin) }] : []),
      ];
      const theirs = [
        { what: 'vip.port', hp: { host: h.address, port: v.port } },
        { what: 'vip.port', hp: { host: v.address, port: v.port } },
        { what: 'vip.statsListen', hp: hostPortOf(v.statsListen) },
      ];
      for (const a of mine) {
        const b = theirs.find((t) => hostPortsOverlap(a.hp, t.hp));
        if (b) err(['vip', b.what === 'vip.port' ? 'port' : 'statsListen'], `${h.name} is a node whose ${a.what} (${formatHostPort(a.hp.host, a.hp.port)}) takes the port haproxy needs for ${b.what}; use another port`);
      }
    }
  }
  for (const m of inv.masters) if (canonicalHost(m.address) === canonicalHost(v.address)) err(['vip', 'address'], `${v.address} is master ${m.name}'s address: the VIP must be an address no host has`);
  for (const n of inv.nodes) if (n.address && canonicalHost(n.address) === canonicalHost(v.address)) err(['vip', 'address'], `${v.address} is node ${n.name}'s address: the VIP must be an address no host has`);
  if (!inv.tls.caFile && !inv.tls.insecureSkipVerify) {
    err(['tls', 'caFile'], "is required with vip: haproxy's /readyz checks verify every apiserver with the cluster CA (e.g. /etc/kubernetes/pki/ca.crt); set tls.insecureSkipVerify: true only to check without verifying");
  }
  if (!isLoopback(hostPortOf(v.statsListen).host)) {
    out.push({ severity: 'warning', path: ['vip', 'statsListen'], message: `${v.statsListen} is not a loopback address: haproxy's stats and /metrics have no authentication; keep them on 127.0.0.1` });
  }
  return out;
};

/**
 * nginx.statusListen: nginx's own HTTP port (/healthz, /stub_status), beside the balancer's
 * listener on the same node. It cannot take a socket another listener there wants; and
 * stub_status has no authentication, so off loopback it is a warning.
 */
const nginxStatusListen: Rule = (inv) => {
  const text = inv.nginx?.statusListen;
  if (!text) return [];
  const out: Diagnostic[] = [];
  const path = ['nginx', 'statusListen'];
  const status = hostPortOf(text);
  const others: { what: string; text: string }[] = [
    { what: 'lb.listen', text: inv.lb.listen },
    { what: 'kubeLb.admin', text: inv.kubeLb.admin },
  ];
  const vipNode = inv.vip && inv.vip.hosts.some((h) => inv.nodes.some((n) => n.name === h));
  if (inv.vip && vipNode) others.push({ what: 'vip.statsListen', text: inv.vip.statsListen });
  const taken = others.map((o) => hostPortOf(o.text).port);
  for (const o of others) {
    const hp = hostPortOf(o.text);
    if (!hostPortsOverlap(status, hp)) continue;
    const where = canonicalHost(status.host) === canonicalHost(hp.host) ? `is also ${o.what}` : `and ${o.what} ${o.text} both take port ${hp.port} (${isWildcard(status.host) ? status.host : hp.host} is every address)`;
    out.push({
      severity: 'error',
      path,
      message: `${text} ${where}: nginx's status port needs a socket of its own on the node; use another port, e.g. ${formatHostPort(status.host, freePort(taken, 8081))}`,
    });
  }
  if (!isLoopback(status.host)) {
    out.push({
      severity: 'warning',
      path,
      message: `${text} is not a loopback address: nginx's /stub_status and /healthz have no authentication, so anyone who can reach port ${status.port} can read them; keep it on 127.0.0.1 (or [::1]), or firewall the port`,
    });
  }
  if (!mayRun(inv, 'nginx') && !imaged(inv)) {
    out.push({ severity: 'warning', path, message: 'no node runs nginx (lb.impl nginx, container, static-pod or auto): nginx.statusListen has no effect' });
  }
  return out;
};

/** A static pod's probes ask nginx's own /healthz: it needs nginx.statusListen. */
const staticPodProbes: Rule = (inv) => {
  const who = inv.nodes.filter((n) => wantedImpl(inv, n) === 'static-pod');
  if (!who.length || inv.nginx?.statusListen) return [];
  return [
    {
      severity: 'error',
      path: ['nginx', 'statusListen'],
      message: `is required: ${who.length === inv.nodes.length ? 'every node' : who.map((n) => n.name).join(', ')} runs lb.impl static-pod, whose liveness and readiness probes ask nginx's own /healthz; set nginx.statusListen: 127.0.0.1:8081 (a loopback port nothing else takes)`,
    },
  ];
};

/** containerd runs kubelet's pods; a container under systemd is podman's or Docker's. */
const containerdForPods: Rule = (inv) => {
  if (inv.lb.runtime !== 'containerd') return [];
  const who = inv.nodes.filter((n) => wantedImpl(inv, n) === 'container');
  if (!who.length) return [];
  return [
    {
      severity: 'error',
      path: ['lb', 'runtime'],
      message: `is containerd, which k8s-ha loads images into for kubelet's static pods only, but ${who.length === inv.nodes.length ? 'every node' : who.map((n) => n.name).join(', ')} runs lb.impl container (a container under systemd): set lb.runtime to podman, docker or auto there, or lb.impl to static-pod`,
    },
  ];
};

/** nodes[].repointTo: the local balancer, or a master of the inventory (a control-plane host's own). */
const repointTargets: Rule = (inv) =>
  inv.nodes.flatMap((n, i): Diagnostic[] => {
    const to = n.repointTo;
    if (to === undefined || to === 'balancer') return [];
    const path = ['nodes', i, 'repointTo'];
    const m = inv.masters.find((x) => x.name === to);
    if (!m) return [{ severity: 'error', path, message: `"${to}" is not a master of this inventory: write balancer, or one of ${inv.masters.map((x) => x.name).join(', ')}` }];
    if (net.isIP(m.address) === 0) {
      return [{ severity: 'error', path, message: `${to}'s address is the name ${m.address}: repointing checks the kubelet's connection to an IP address; give masters[].address as an IP` }];
    }
    if (n.address !== undefined && canonicalHost(n.address) !== canonicalHost(m.address)) {
      return [
        {
          severity: 'warning',
          path,
          message: `points ${n.name}'s kubeconfigs at ${to} (${m.address}), another host's apiserver: when it goes, so does ${n.name}'s kubelet; it is meant for a control-plane host's own apiserver, other nodes use their balancer`,
        },
      ];
    }
    return [];
  });

export const RULES: Rule[] = [
  staticPodProbes,
  containerdForPods,
  repointTargets,
  nginxNeeded,
  containerStatic,
  kubeLbTrust,
  buildHost,
  duplicates('nodes', 'name'),
  duplicates('nodes', 'address'),
  duplicates('masters', 'name'),
  duplicates('masters', 'address'),
  apartFromApiserver('lb.listen'),
  apartFromApiserver('kubeLb.admin'),
  adminApartFromListen,
  prefixVisibleToUnit,
  loopbackListen,
  loopbackAdmin,
  nginxStatusListen,
  hashBalance,
  vipLayer,
];

export function checkRules(inv: Inventory): Diagnostic[] {
  return RULES.flatMap((rule) => rule(inv));
}
