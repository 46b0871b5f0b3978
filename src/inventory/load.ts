/**
 * Read an inventory file: YAML with positions, the schema, then the rules.
 * Every problem comes back at once with file:line:col and its path.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { UsageError } from '../errors.js';
import { expandHome } from '../connect/ssh.js';
import { isExecutable, packageDoc } from '../util/paths.js';
import { formatDiagnostic, InventoryError, type Diagnostic } from './diagnostics.js';
import { MAX_YAML_BYTES, tooLarge, validateYaml } from './yaml-schema.js';
import { checkRules } from './rules.js';
import { expandHosts } from './expand.js';
import { checkLocalFiles } from './local-files.js';
import { inventorySchema, parseStore, type Inventory } from './schema.js';

export interface ParsedInventory {
  inventory?: Inventory;
  diagnostics: Diagnostic[];
  /** Line and column of a path in the text, for problems found later (the files it names). */
  position: (p: Diagnostic['path']) => { line?: number; col?: number };
  /** A problem found later, placed at the line that made it (a host range, a group), naming its host. */
  place: (d: Diagnostic) => Diagnostic;
}

/** Pure: text in, inventory and diagnostics out (paths not yet resolved). */
export function parseInventory(text: string): ParsedInventory {
  // Host ranges and groups are written out first: every host is then checked as if written by hand.
  const v = validateYaml(text, inventorySchema, 'inventory', expandHosts);
  if (!v.value) return { diagnostics: v.diagnostics, position: v.position, place: v.place };
  const diagnostics = checkRules(v.value).map(v.place);
  return { inventory: v.value, diagnostics, position: v.position, place: v.place };
}

const PATH_FIELDS = [
  ['ssh', 'identityFile'],
  ['ssh', 'knownHostsFile'],
  ['tls', 'caFile'],
  ['tls', 'clientCertFile'],
  ['tls', 'clientKeyFile'],
  ['cluster', 'kubeconfig'],
  ['build', 'store'],
] as const;

/** Relative paths in an inventory are relative to the inventory file; `~` is the home directory. */
export function resolvePaths(inv: Inventory, baseDir: string): Inventory {
  const abs = (p: string | undefined) => (p === undefined ? undefined : path.resolve(baseDir, expandHome(p)));
  const out = structuredClone(inv);
  for (const [section, field] of PATH_FIELDS) {
    const obj = out[section] as Record<string, string | undefined> | undefined;
    // build.store on a build node (HOST:PATH) is that host's path, not this machine's.
    if (section === 'build' && field === 'store' && obj?.[field] !== undefined && parseStore(obj[field]).host) continue;
    if (obj && obj[field] !== undefined) obj[field] = abs(obj[field]);
  }
  // A master's ssh: (a VIP host) is read like a node's.
  for (const n of [...out.nodes, ...out.masters]) {
    if (n.ssh?.identityFile) n.ssh.identityFile = abs(n.ssh.identityFile);
    if (n.ssh?.knownHostsFile) n.ssh.knownHostsFile = abs(n.ssh.knownHostsFile);
  }
  return out;
}

export interface LoadedInventory {
  file: string;
  inventory: Inventory;
  warnings: string[];
}

/**
 * The file's text, or undefined when it is over MAX_YAML_BYTES. Reads no more than that plus one
 * byte, so `-i /dev/zero` or a disk image is refused at once instead of filling memory.
 */
export async function readCapped(file: string): Promise<string | undefined> {
  // A playbook inside the single executable (its own, small and fixed) is read whole: Bun's embedded
  // files can be read, not opened for reading in pieces.
  if (isExecutable() && file.startsWith('/$bunfs/')) return (await fs.readFile(file)).toString('utf8');
  const fh = await fs.open(file, 'r');
  try {
    const buf = Buffer.alloc(MAX_YAML_BYTES + 1);
    let size = 0;
    while (size < buf.length) {
      const { bytesRead } = await fh.read(buf, size, buf.length - size, null);
      if (bytesRead === 0) break;
      size += bytesRead;
    }
    return size > MAX_YAML_BYTES ? undefined : buf.subarray(0, size).toString('utf8');
  } finally {
    await fh.close();
  }
}

export async function loadInventory(file: string): Promise<LoadedInventory> {
  let text: string | undefined;
  try {
    text = await readCapped(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UsageError(`cannot read inventory ${file}: ${code === 'ENOENT' ? 'no such file' : code}`, {
      hint: `pass an inventory with -i FILE (an example: ${packageDoc('inventory', 'inventory.example.yaml')})`,
    });
  }
  if (text === undefined) throw new InventoryError(file, [tooLarge('inventory')]);
  const parsed = parseInventory(text);
  if (!parsed.inventory || parsed.diagnostics.some((d) => d.severity === 'error')) {
    throw new InventoryError(file, parsed.diagnostics);
  }
  const inventory = resolvePaths(parsed.inventory, path.dirname(path.resolve(file)));
  // The files it names, now: not at verify (after the change is live) or at each node's login.
  const files = (await checkLocalFiles(inventory)).map((d) => parsed.place(d));
  const diagnostics = [...parsed.diagnostics, ...files];
  if (diagnostics.some((d) => d.severity === 'error')) throw new InventoryError(file, diagnostics);
  return {
    file,
    inventory,
    warnings: diagnostics.filter((d) => d.severity === 'warning').map((d) => formatDiagnostic(file, d)),
  };
}
