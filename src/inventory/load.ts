/**
 * Read an inventory file: YAML with positions, the schema, then the rules.
 * Every problem comes back at once with file:line:col and its path.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { UsageError } from '../errors.js';
import { expandHome } from '../connect/ssh.js';
import { formatDiagnostic, InventoryError, type Diagnostic } from './diagnostics.js';
import { validateYaml } from './yaml-schema.js';
import { checkRules } from './rules.js';
import { inventorySchema, type Inventory } from './schema.js';

export interface ParsedInventory {
  inventory?: Inventory;
  diagnostics: Diagnostic[];
}

/** Pure: text in, inventory and diagnostics out (paths not yet resolved). */
export function parseInventory(text: string): ParsedInventory {
  const v = validateYaml(text, inventorySchema);
  if (!v.value) return { diagnostics: v.diagnostics };
  const diagnostics = checkRules(v.value).map((d) => ({ ...d, ...v.position(d.path) }));
  return { inventory: v.value, diagnostics };
}

const PATH_FIELDS = [
  ['ssh', 'identityFile'],
  ['ssh', 'knownHostsFile'],
  ['tls', 'caFile'],
  ['tls', 'clientCertFile'],
  ['tls', 'clientKeyFile'],
] as const;

/** Relative paths in an inventory are relative to the inventory file; `~` is the home directory. */
export function resolvePaths(inv: Inventory, baseDir: string): Inventory {
  const abs = (p: string | undefined) => (p === undefined ? undefined : path.resolve(baseDir, expandHome(p)));
  const out = structuredClone(inv);
  for (const [section, field] of PATH_FIELDS) {
    const obj = out[section] as Record<string, string | undefined>;
    if (obj[field] !== undefined) obj[field] = abs(obj[field]);
  }
  for (const n of out.nodes) {
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

export async function loadInventory(file: string): Promise<LoadedInventory> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UsageError(`cannot read inventory ${file}: ${code === 'ENOENT' ? 'no such file' : code}`, {
      hint: 'pass an inventory with -i FILE (see inventory/inventory.example.yaml)',
    });
  }
  const parsed = parseInventory(text);
  if (!parsed.inventory || parsed.diagnostics.some((d) => d.severity === 'error')) {
    throw new InventoryError(file, parsed.diagnostics);
  }
  return {
    file,
    inventory: resolvePaths(parsed.inventory, path.dirname(path.resolve(file))),
    warnings: parsed.diagnostics.filter((d) => d.severity === 'warning').map((d) => formatDiagnostic(file, d)),
  };
}
