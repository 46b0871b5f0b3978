import { UsageError } from '../errors.js';
import { packageDoc } from '../util/paths.js';

export type InventoryPath = (string | number)[];

export interface Diagnostic {
  severity: 'error' | 'warning';
  path: InventoryPath;
  message: string;
  line?: number;
  col?: number;
}

/** `nodes[2].address`, the way a reader names a place in the file. */
export function formatPath(path: InventoryPath): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${p}` : p;
  return out || '(top level)';
}

export function formatDiagnostic(file: string, d: Diagnostic): string {
  const where = d.line ? `${file}:${d.line}:${d.col ?? 1}` : file;
  return `${where}: ${d.severity === 'warning' ? 'warning: ' : ''}${formatPath(d.path)}: ${d.message}`;
}

/** Hosts named in a message: all of them up to `most`, then how many more (a range makes forty). */
export function nameList(names: readonly string[], most = 8): string {
  return names.length <= most ? names.join(', ') : `${names.slice(0, most).join(', ')} and ${names.length - most} more`;
}

/** `a`, `a or b`, `a, b or c`: choices the way a sentence lists them. */
export function orList(words: readonly string[], last = 'or'): string {
  if (words.length <= 1) return words.join('');
  return `${words.slice(0, -1).join(', ')} ${last} ${words.at(-1)}`;
}

/** Beyond this many, a list of allowed keys names the first ones and counts the rest. */
export const LISTED_KEYS = 12;

/**
 * Names people reach for from other tools (ssh_config, Ansible, other balancers) and the key this
 * project calls it. Offered only where that key is allowed: `host` is build.host's own name there.
 */
const KEY_ALIASES: Record<string, string> = {
  hostname: 'address',
  host: 'address',
  ip: 'address',
  addr: 'address',
  ansiblehost: 'address',
  username: 'user',
  login: 'user',
  remoteuser: 'user',
  key: 'identityFile',
  keyfile: 'identityFile',
  privatekey: 'identityFile',
  privatekeyfile: 'identityFile',
  jumphost: 'proxyJump',
  bastion: 'proxyJump',
  apiservers: 'masters',
  controlplane: 'masters',
  workers: 'nodes',
  hosts: 'nodes',
};

/** A key as people vary it: case, `_` and `-` aside (identity_file, IdentityFile and identityFile are one). */
const loose = (k: string) => k.toLowerCase().replace(/[-_\s]/g, '');

/** Edits between two words, a swap of neighbours counting as one (Damerau-Levenshtein, restricted); above `limit` it stops counting. */
export function editDistance(a: string, b: string, limit = Infinity): number {
  if (Math.abs(a.length - b.length) > limit) return limit + 1;
  let before: number[] = [];
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    let best = i;
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d = Math.min(d, before[j - 2]! + 1);
      cur.push(d);
      best = Math.min(best, d);
    }
    if (best > limit) return limit + 1;
    before = prev;
    prev = cur;
  }
  return prev[b.length]!;
}

/**
 * The allowed keys an unknown one most likely meant: the same key written another way, a known
 * alias, else the nearest by a typo or two (one for a short key, where two would match anything).
 */
export function closestKeys(key: string, allowed: readonly string[]): string[] {
  const k = loose(key);
  const same = allowed.filter((a) => loose(a) === k);
  if (same.length) return same;
  const alias = KEY_ALIASES[k];
  if (alias && allowed.includes(alias)) return [alias];
  const limit = k.length <= 4 ? 1 : 2;
  let best = limit + 1;
  let near: string[] = [];
  for (const a of allowed) {
    const d = editDistance(k, loose(a), limit);
    if (d < best) [best, near] = [d, [a]];
    else if (d === best) near.push(a);
  }
  return best <= limit ? near.slice(0, 3) : [];
}

/** `unknown key`, with the key it was likely meant to be, or else the keys allowed there. */
export function unknownKeyMessage(key: string, allowed?: readonly string[]): string {
  if (!allowed?.length) return 'unknown key';
  const near = closestKeys(key, allowed);
  if (near.length) return `unknown key; did you mean ${orList(near)}?`;
  const shown = allowed.slice(0, LISTED_KEYS);
  const more = allowed.length - shown.length;
  return `unknown key; the keys here are ${more > 0 ? `${shown.join(', ')} and ${more} more` : orList(shown, 'and')}`;
}

/** Errors listed in full; a file with more (a wrong file, most likely) gets a count of the rest. */
export const SHOWN_ERRORS = 50;

/** Every error in an inventory at once, each with file:line:col and its path. */
export class InventoryError extends UsageError {
  constructor(
    readonly file: string,
    readonly diagnostics: Diagnostic[],
    what: 'inventory' | 'playbook' = 'inventory',
  ) {
    const errors = diagnostics.filter((d) => d.severity === 'error');
    const more = errors.length - SHOWN_ERRORS;
    super(
      `${file}: ${errors.length} error${errors.length === 1 ? '' : 's'} in the ${what}\n` +
        errors
          .slice(0, SHOWN_ERRORS)
          .map((d) => '  ' + formatDiagnostic(file, d))
          .join('\n') +
        (more > 0 ? `\n  ... and ${more} more` : ''),
      // The page beside this copy of k8s-ha: a clone's, or the installed package's.
      { hint: `fix the lines above; the ${what} format is in ${packageDoc('docs', what === 'inventory' ? 'inventory.md' : 'playbooks.md')}` },
    );
  }
}
