/**
 * `k8s-ha inventory import`: the Ansible inventory an operator already keeps (INI or YAML, as
 * kubespray writes it) read into a k8s-ha inventory, so the hosts are written once.
 *
 * Groups, as kubespray names them: kube_control_plane (kube-master, masters in older ones) are the
 * masters; kube_node (kube-node, nodes, workers) the nodes; a host in both is both. Children groups
 * and `:vars` are followed as Ansible does (a child's vars over its parent's, a host's own over
 * all). Per host: ansible_host (else access_ip, else ip) is the address, ansible_user /
 * ansible_port / ansible_ssh_private_key_file its SSH, a ProxyJump in ansible_ssh_common_args its
 * bastion; kube_apiserver_port the masters' port. Settings every host shares go to the inventory's
 * `ssh:`; the rest stay on the host. Host ranges (`node[01:40]`) are kept: k8s-ha reads them too.
 */
import YAML from 'yaml';
import { expandRange } from './expand.js';

type Vars = Record<string, unknown>;

interface AnsibleInventory {
  /** Host names in the order first met, with their own vars. */
  hosts: Map<string, Vars>;
  groups: Map<string, { hosts: Set<string>; children: Set<string>; vars: Vars }>;
}

export class AnsibleImportError extends Error {}

const group = (inv: AnsibleInventory, name: string) => {
  let g = inv.groups.get(name);
  if (!g) inv.groups.set(name, (g = { hosts: new Set(), children: new Set(), vars: {} }));
  return g;
};

/** An INI value as Ansible reads it: quotes taken off; true/false and numbers left as text (k8s-ha reads them as needed). */
function iniValue(v: string): string {
  const t = v.trim();
  return /^(['"]).*\1$/.test(t) ? t.slice(1, -1) : t;
}

/** `name k=v k="v w"` on one line: the host and its vars. */
function iniHostLine(line: string, where: string): { name: string; vars: Vars } {
  const tokens = [...line.matchAll(/(?:[^\s"']+|"[^"]*"|'[^']*')+/g)].map((m) => m[0]);
  const [name, ...rest] = tokens;
  const vars: Vars = {};
  for (const t of rest) {
    const eq = t.indexOf('=');
    if (eq < 1) throw new AnsibleImportError(`${where}: "${t}" is not key=value`);
    vars[t.slice(0, eq)] = iniValue(t.slice(eq + 1));
  }
  return { name: name!, vars };
}

export function parseAnsibleIni(text: string, file: string): AnsibleInventory {
  const inv: AnsibleInventory = { hosts: new Map(), groups: new Map() };
  let section = { name: 'ungrouped', kind: 'hosts' as 'hosts' | 'children' | 'vars' };
  text.split('\n').forEach((raw, i) => {
    const where = `${file}:${i + 1}`;
    const line = raw.replace(/(^|\s)[#;].*$/, '').trim();
    if (!line) return;
    const head = /^\[([^\]:]+)(?::(children|vars))?\]$/.exec(line);
    if (head) {
      section = { name: head[1]!, kind: (head[2] as 'children' | 'vars' | undefined) ?? 'hosts' };
      group(inv, section.name);
      return;
    }
    const g = group(inv, section.name);
    if (section.kind === 'children') g.children.add(line.split(/\s+/)[0]!);
    else if (section.kind === 'vars') {
      const eq = line.indexOf('=');
      if (eq < 1) throw new AnsibleImportError(`${where}: "${line}" is not key=value`);
      g.vars[line.slice(0, eq).trim()] = iniValue(line.slice(eq + 1));
    } else {
      const { name, vars } = iniHostLine(line, where);
      g.hosts.add(name);
      inv.hosts.set(name, { ...(inv.hosts.get(name) ?? {}), ...vars });
    }
  });
  return inv;
}

export function parseAnsibleYaml(text: string, file: string): AnsibleInventory {
  const inv: AnsibleInventory = { hosts: new Map(), groups: new Map() };
  let doc: unknown;
  try {
    doc = YAML.parse(text);
  } catch (e) {
    throw new AnsibleImportError(`${file}: not YAML: ${(e as Error).message.split('\n')[0]}`);
  }
  const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!isObj(doc)) throw new AnsibleImportError(`${file}: an Ansible YAML inventory is a mapping of groups (all: { children: ... })`);
  const walk = (name: string, body: unknown) => {
    const g = group(inv, name);
    if (!isObj(body)) return;
    if (isObj(body.hosts)) {
      for (const [h, vars] of Object.entries(body.hosts)) {
        g.hosts.add(h);
        inv.hosts.set(h, { ...(inv.hosts.get(h) ?? {}), ...(isObj(vars) ? vars : {}) });
      }
    }
    if (isObj(body.vars)) Object.assign(g.vars, body.vars);
    if (isObj(body.children)) {
      for (const [child, childBody] of Object.entries(body.children)) {
        g.children.add(child);
        walk(child, childBody);
      }
    }
  };
  for (const [name, body] of Object.entries(doc)) walk(name, body);
  return inv;
}

/** Every host of a group, its children's included. */
function membersOf(inv: AnsibleInventory, name: string, seen = new Set<string>()): Set<string> {
  const out = new Set<string>();
  const g = inv.groups.get(name);
  if (!g || seen.has(name)) return out;
  seen.add(name);
  for (const h of g.hosts) out.add(h);
  for (const c of g.children) for (const h of membersOf(inv, c, seen)) out.add(h);
  return out;
}

/** Each group's depth under `all` (a parent before its children), for the order vars apply in. */
function depths(inv: AnsibleInventory): Map<string, number> {
  const d = new Map<string, number>([['all', 0]]);
  const visit = (name: string, depth: number, seen: Set<string>) => {
    if (seen.has(name)) return;
    seen.add(name);
    d.set(name, Math.max(d.get(name) ?? 0, depth));
    for (const c of inv.groups.get(name)?.children ?? []) visit(c, depth + 1, seen);
  };
  for (const name of inv.groups.keys()) if (![...inv.groups.values()].some((g) => g.children.has(name))) visit(name, name === 'all' ? 0 : 1, new Set());
  return d;
}

/** A host's vars as Ansible resolves them: all's, then each group's from parent to child, then its own. */
function varsOf(inv: AnsibleInventory, host: string, order: Map<string, number>): Vars {
  const groups = [...inv.groups.entries()].filter(([name]) => name === 'all' || membersOf(inv, name).has(host));
  groups.sort(([a], [b]) => (order.get(a) ?? 1) - (order.get(b) ?? 1) || a.localeCompare(b));
  return Object.assign({}, ...groups.map(([, g]) => g.vars), inv.hosts.get(host));
}

const MASTER_GROUPS = ['kube_control_plane', 'kube-master', 'kube_master', 'masters'];
const NODE_GROUPS = ['kube_node', 'kube-node', 'nodes', 'workers'];

export interface Imported {
  /** The k8s-ha inventory, as YAML text with comments. */
  text: string;
  /** What was read, for the operator: groups used, hosts, vars not carried over. */
  notes: string[];
}

const str = (v: unknown) => (v === undefined || v === null || v === '' ? undefined : String(v));

/** A ProxyJump from ansible_ssh_common_args (`-o ProxyJump=x`, `-J x`), if that is what they say. */
function proxyJumpOf(args: string | undefined): string | undefined {
  if (!args) return undefined;
  const m = /(?:-o\s*['"]?ProxyJump=|-J\s+)([^\s'"]+)/.exec(args);
  return m?.[1];
}

export function importAnsible(text: string, file: string): Imported {
  const yamlLike = /^\s*[\w.-]+:\s*$/m.test(text) && !/^\s*\[/m.test(text);
  const inv = yamlLike ? parseAnsibleYaml(text, file) : parseAnsibleIni(text, file);
  const order = depths(inv);
  const notes: string[] = [];
  const pick = (names: string[], what: string) => {
    const found = names.find((n) => inv.groups.get(n) && membersOf(inv, n).size);
    if (!found) throw new AnsibleImportError(`${file}: no ${what} group with hosts (looked for ${names.join(', ')})`);
    notes.push(`${what}: the hosts of [${found}]`);
    return [...membersOf(inv, found)];
  };
  const masters = pick(MASTER_GROUPS, 'masters');
  const nodes = pick(NODE_GROUPS, 'nodes');
  const hostVars = new Map([...new Set([...masters, ...nodes])].map((h) => [h, varsOf(inv, h, order)]));
  const ssh = (v: Vars) => ({
    user: str(v.ansible_user ?? v.ansible_ssh_user),
    port: str(v.ansible_port ?? v.ansible_ssh_port),
    identityFile: str(v.ansible_ssh_private_key_file ?? v.ansible_private_key_file),
    proxyJump: proxyJumpOf(str(v.ansible_ssh_common_args)),
  });
  const address = (h: string, v: Vars) => str(v.ansible_host ?? v.access_ip ?? v.ip) ?? (h.includes('[') ? undefined : h);
  // What every host shares goes to the inventory's ssh:, the rest stays on each host.
  const all = [...hostVars.values()].map(ssh);
  const shared: Record<string, string> = {};
  for (const k of ['user', 'port', 'identityFile', 'proxyJump'] as const) {
    const values = new Set(all.map((s) => s[k]));
    if (values.size === 1 && all[0]![k] !== undefined) shared[k] = all[0]![k]!;
  }
  const own = (h: string) => {
    const s = ssh(hostVars.get(h)!);
    const mine = Object.fromEntries(Object.entries(s).filter(([k, v]) => v !== undefined && shared[k] === undefined).map(([k, v]) => [k, k === 'port' ? Number(v) : v]));
    return Object.keys(mine).length ? mine : undefined;
  };
  const port = str([...hostVars.values()].map((v) => v.kube_apiserver_port).find((p) => p !== undefined));
  const out = {
    ...(Object.keys(shared).length ? { ssh: Object.fromEntries(Object.entries(shared).map(([k, v]) => [k, k === 'port' ? Number(v) : v])) } : {}),
    // A host in both groups is one entry: a master that is also a node.
    masters: masters.map((h) => ({ name: h, address: address(h, hostVars.get(h)!) ?? h, ...(port ? { port: Number(port) } : {}), ...(own(h) ? { ssh: own(h) } : {}), ...(nodes.includes(h) ? { node: true } : {}) })),
    nodes: nodes.filter((h) => !masters.includes(h)).map((h) => {
      const a = address(h, hostVars.get(h)!);
      return { name: h, ...(a ? { address: a } : {}), ...(own(h) ? { ssh: own(h) } : {}) };
    }),
  };
  const known = new Set(['ansible_host', 'access_ip', 'ip', 'ansible_user', 'ansible_ssh_user', 'ansible_port', 'ansible_ssh_port', 'ansible_ssh_private_key_file', 'ansible_private_key_file', 'ansible_ssh_common_args', 'kube_apiserver_port']);
  const left = [...new Set([...hostVars.values()].flatMap((v) => Object.keys(v)).filter((k) => k.startsWith('ansible_') && !known.has(k)))];
  if (left.length) notes.push(`not carried over (no k8s-ha equivalent, or set it in ssh_config): ${left.sort().join(', ')}`);
  // Counted as hosts: a range (node[01:40]) is forty.
  const hostsIn = (h: string) => {
    const r = expandRange(h);
    return 'values' in r ? r.values.length : 1;
  };
  const count = (names: string[]) => names.reduce((n, h) => n + hostsIn(h), 0);
  notes.push(`${count(masters)} masters, ${count(nodes)} nodes${masters.some((m) => nodes.includes(m)) ? ` (${masters.filter((m) => nodes.includes(m)).join(', ')} both)` : ''}`);
  // One line per host, as an inventory is written by hand.
  const doc = new YAML.Document(out);
  for (const list of ['masters', 'nodes']) for (const item of (doc.get(list) as YAML.YAMLSeq<YAML.YAMLMap>).items) item.flow = true;
  const body = doc.toString({ flowCollectionPadding: true, lineWidth: 0 });
  const text2 = `# Imported from ${file} by k8s-ha inventory import: the hosts and how to reach them.
# Check it with: k8s-ha deploy --check -i THIS_FILE
${body}lb:
  impl: auto                           # nginx where it can be built and run, else kube-lb
nginx:
  version: 1.22.1
  sources: [https://nginx.org/download/nginx-1.22.1.tar.gz]
  sha256: 9ebb333a9e82b952acd3e2b4aeb1d4ff6406f72491bab6cd9fe69f0dea737f31
tls:
  caFile: ca.crt                       # a copy of the cluster CA on this machine, beside this file (kubespray: /etc/kubernetes/ssl/ca.crt on a master)
  serverName: kubernetes
`;
  return { text: text2, notes };
}
