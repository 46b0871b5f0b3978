/**
 * Host ranges and groups, expanded before the inventory is validated, as Ansible's inventory reads
 * them: forty workers are one line, and hosts that share settings say them once.
 *
 *   nodes:
 *     - { name: "node-[01:40]", address: "10.0.1.[11:50]" }      # node-01 at 10.0.1.11 ... node-40 at 10.0.1.50
 *     - group: rocky                                             # a group: its settings, then its hosts
 *       ssh: { user: ops }
 *       lb: { impl: kube-lb }
 *       hosts:
 *         - { name: "rocky-[1:3]", address: "10.0.2.[1:3]" }
 *         - { name: rocky-9, address: 10.0.2.9, ssh: { port: 2222 } }   # its own ssh: keys win
 *   masters:
 *     - { name: cp-1, address: 192.0.2.11, node: true }          # also a node, its kubelet to its own apiserver
 *
 * A range is `[START:END]` or `[START:END:STEP]`, whole numbers; a START written with a leading zero
 * pads every number to its width (`[01:40]`: 01 ... 40). A name has at most one range; its address,
 * when given, has one of the same length (expanded in step) or none (then every host would dial
 * the same address: refused). Every host of the result is validated as if written out, and a
 * problem found in one is reported at the line that made it, naming the host.
 */
import type { Diagnostic, InventoryPath } from './diagnostics.js';
import type { Expansion } from './yaml-schema.js';

/** More hosts than this from one line is a typo (`[1:10000]`), not a cluster. */
export const MAX_RANGE = 5000;

const RANGE = /\[(\d+):(\d+)(?::(\d+))?\]/g;

/** Where an expanded host's settings came from in the file. */
interface Origin {
  /** The entry in the list: the host itself, or its group. */
  entry: InventoryPath;
  /** The host inside its group, when it is in one. */
  host?: InventoryPath;
  /** Keys (and `ssh.user`-style keys one level down) the host itself wrote: the rest came from its group. */
  own: Set<string>;
  /** The host's name, said beside a problem when its line makes more than one host. */
  name?: string;
  many: boolean;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The values a text's one range stands for, or the text alone; a problem as a sentence. */
export function expandRange(text: string): { values: string[] } | { problem: string } {
  const ranges = [...text.matchAll(RANGE)];
  if (!ranges.length) {
    if (/\[[^\]]*:[^\]]*\]/.test(text) && !/^\[[0-9A-Fa-f:.]+\]$/.test(text)) return { problem: `${JSON.stringify(text)} has a range that is not one: write [START:END] or [START:END:STEP] with whole numbers, e.g. node-[01:40]` };
    return { values: [text] };
  }
  if (ranges.length > 1) return { problem: `${JSON.stringify(text)} has ${ranges.length} ranges: give it one (node-[01:40]); list hosts that differ otherwise` };
  const m = ranges[0]!;
  const [start, end, step] = [m[1]!, m[2]!, m[3] ?? '1'];
  const from = Number(start);
  const to = Number(end);
  const by = Number(step);
  if (by < 1) return { problem: `${JSON.stringify(text)}: a range's step must be 1 or more` };
  if (from > to) return { problem: `${JSON.stringify(text)}: the range starts after it ends: write [${end}:${start}]` };
  const count = Math.floor((to - from) / by) + 1;
  if (count > MAX_RANGE) return { problem: `${JSON.stringify(text)} makes ${count} hosts, more than ${MAX_RANGE}: is the range right?` };
  const width = start.length > 1 && start.startsWith('0') ? Math.max(start.length, end.length) : 0;
  const values: string[] = [];
  for (let n = from; n <= to; n += by) values.push(text.slice(0, m.index) + String(n).padStart(width, '0') + text.slice(m.index! + m[0].length));
  return { values };
}

/** An address made a range of `n` from itself (10.0.1.5 -> 10.0.1.[5:7]), for a message's fix. */
function rangeLike(address: string, n: number): string {
  const m = /^(.*\D)(\d+)$/.exec(address);
  return m ? `${m[1]}[${m[2]}:${Number(m[2]) + n - 1}]` : `10.0.1.[11:${10 + n}]`;
}

/** The keys an entry writes, and one level down inside its mappings (`ssh.user`): what is its own, not its group's. */
function ownKeys(entry: Record<string, unknown>): Set<string> {
  return new Set(Object.entries(entry).flatMap(([k, v]) => [k, ...(isObject(v) ? Object.keys(v).map((sub) => `${k}.${sub}`) : [])]));
}

/** A host with its group's settings under its own: its keys win, and inside ssh: and lb:, key by key. */
function withGroup(group: Record<string, unknown>, host: Record<string, unknown>): { value: Record<string, unknown>; own: Set<string> } {
  const value: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(group)) if (k !== 'group' && k !== 'hosts') value[k] = v;
  for (const [k, v] of Object.entries(host)) value[k] = isObject(v) && isObject(value[k]) ? { ...(value[k] as Record<string, unknown>), ...v } : v;
  return { value, own: ownKeys(host) };
}

/** One list (nodes or masters): its ranges expanded, and its groups when `groups` allows them. */
function expandList(list: unknown[], at: string, groups: boolean, origins: Origin[], diagnostics: Diagnostic[]): unknown[] {
  const out: unknown[] = [];
  const one = (raw: unknown, entry: InventoryPath, host: InventoryPath | undefined, own: Set<string> | undefined) => {
    if (!isObject(raw)) {
      out.push(raw);
      origins.push({ entry: host ?? entry, own: new Set(), many: false });
      return;
    }
    const where = host ?? entry;
    const names = typeof raw.name === 'string' ? expandRange(raw.name) : { values: [raw.name] };
    if ('problem' in names) return void diagnostics.push({ severity: 'error', path: [...where, 'name'], message: names.problem });
    const addresses = typeof raw.address === 'string' ? expandRange(raw.address) : { values: [raw.address] };
    if ('problem' in addresses) return void diagnostics.push({ severity: 'error', path: [...where, 'address'], message: addresses.problem });
    const n = names.values.length;
    const a = addresses.values.length;
    if (a > 1 && n === 1) return void diagnostics.push({ severity: 'error', path: [...where, 'address'], message: `has a range but the name has none: give the name one of the same length (node-[1:${a}])` });
    if (n > 1 && raw.address !== undefined && a !== n) {
      return void diagnostics.push({
        severity: 'error',
        path: [...where, 'address'],
        message: a === 1 ? `is one address for the ${n} hosts of ${JSON.stringify(raw.name)}: give it a range of ${n} too (${rangeLike(String(raw.address), n)}), or leave it out to dial each name` : `makes ${a} addresses for ${n} names: the two ranges must be as long`,
      });
    }
    names.values.forEach((name, i) => {
      out.push({ ...raw, name, ...(raw.address !== undefined ? { address: addresses.values[n > 1 ? i : 0] } : {}) });
      origins.push({ entry, host, own: own ?? ownKeys(raw), name: typeof name === 'string' ? name : undefined, many: n > 1 });
    });
  };
  list.forEach((entry, k) => {
    if (groups && isObject(entry) && 'hosts' in entry) {
      if (!Array.isArray(entry.hosts)) return void diagnostics.push({ severity: 'error', path: [at, k, 'hosts'], message: "must be a list of this group's hosts" });
      if (entry.group !== undefined && typeof entry.group !== 'string') return void diagnostics.push({ severity: 'error', path: [at, k, 'group'], message: 'must be a name for the group' });
      for (const forbidden of ['name', 'address']) {
        if (forbidden in entry) return void diagnostics.push({ severity: 'error', path: [at, k, forbidden], message: `is a host's own: put it on each of the group's hosts` });
      }
      entry.hosts.forEach((h, j) => {
        const merged = isObject(h) ? withGroup(entry, h) : { value: h, own: new Set<string>() };
        one(merged.value, [at, k], [at, k, 'hosts', j], merged.own);
      });
      return;
    }
    one(entry, [at, k], undefined, undefined);
  });
  return out;
}

/** The inventory with its ranges and groups written out, or why not. */
export function expandHosts(js: unknown): Expansion {
  const diagnostics: Diagnostic[] = [];
  const origins: Record<string, Origin[]> = { nodes: [], masters: [] };
  if (!isObject(js)) return { value: js, diagnostics, source: (p) => ({ path: p }) };
  const value: Record<string, unknown> = { ...js };
  if (Array.isArray(js.nodes)) value.nodes = expandList(js.nodes, 'nodes', true, origins.nodes!, diagnostics);
  if (Array.isArray(js.masters)) value.masters = expandList(js.masters, 'masters', false, origins.masters!, diagnostics);
  // A master that says node: true is a node too, as if listed under nodes with its kubelet going to its own apiserver.
  if (Array.isArray(value.masters)) {
    const also = (value.masters as unknown[]).flatMap((m, i) => (isObject(m) && m.node === true ? [{ m, i }] : []));
    if (also.length) {
      value.nodes = [...(Array.isArray(value.nodes) ? value.nodes : []), ...also.map(({ m }) => ({ name: m.name, ...(m.address !== undefined ? { address: m.address } : {}), ...(m.ssh !== undefined ? { ssh: m.ssh } : {}), repointTo: m.name }))];
      for (const { i } of also) origins.nodes!.push({ ...origins.masters![i]!, own: new Set(['name', 'address', 'ssh', 'repointTo']) });
    }
  }
  const source = (p: InventoryPath): { path: InventoryPath; host?: string } => {
    const [list, i, ...rest] = p;
    const o = typeof list === 'string' && typeof i === 'number' ? origins[list]?.[i] : undefined;
    if (!o) return { path: p };
    const key = rest[0] === undefined ? undefined : String(rest[0]);
    const mine = !o.host || key === undefined || (o.own.has(key) && (rest[1] === undefined || typeof rest[1] === 'number' || !isObjectKey(o, key) || o.own.has(`${key}.${String(rest[1])}`)));
    return { path: [...(mine ? (o.host ?? o.entry) : o.entry), ...rest], host: o.many || o.host ? o.name : undefined };
  };
  return { value, diagnostics, source };
}

/** Whether the host wrote `key` as a mapping (ssh:, lb:), whose keys are then told apart one by one. */
function isObjectKey(o: Origin, key: string): boolean {
  for (const k of o.own) if (k.startsWith(`${key}.`)) return true;
  return false;
}
