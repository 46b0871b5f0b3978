/**
 * Read an inventory file: YAML with positions, the schema, then the rules.
 * Every problem comes back at once with file:line:col and its path.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { isMap, isSeq, LineCounter, parseDocument, type Document, type Node as YamlNode } from 'yaml';
import type { z } from 'zod';
import { UsageError } from '../errors.js';
import { expandHome } from '../connect/ssh.js';
import { formatDiagnostic, InventoryError, type Diagnostic, type InventoryPath } from './diagnostics.js';
import { checkRules } from './rules.js';
import { inventorySchema, type Inventory } from './schema.js';

export interface ParsedInventory {
  inventory?: Inventory;
  diagnostics: Diagnostic[];
}

/** Pure: text in, inventory and diagnostics out (paths not yet resolved). */
export function parseInventory(text: string): ParsedInventory {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length) {
    return {
      diagnostics: doc.errors.map((e) => ({
        severity: 'error',
        path: [],
        message: `YAML: ${e.message.split('\n')[0]}`,
        ...lineCounter.linePos(e.pos[0]),
      })),
    };
  }
  const position = (p: InventoryPath, key?: string) => locate(doc, lineCounter, p, key);
  const result = inventorySchema.safeParse(doc.toJS() ?? {});
  if (!result.success) {
    const diagnostics: Diagnostic[] = [];
    for (const issue of result.error.issues) {
      const p = issue.path as InventoryPath;
      if (issue.code === 'unrecognized_keys') {
        for (const key of issue.keys) {
          diagnostics.push({ severity: 'error', path: [...p, key], message: 'unknown key', ...position(p, key) });
        }
        continue;
      }
      diagnostics.push({ severity: 'error', path: p, message: describe(issue), ...position(p) });
    }
    return { diagnostics };
  }
  const diagnostics = checkRules(result.data).map((d) => ({ ...d, ...position(d.path) }));
  return { inventory: result.data, diagnostics };
}

type ZodIssue = z.core.$ZodIssue;

function describe(issue: ZodIssue): string {
  const received = (issue as { input?: unknown }).input;
  if (received === undefined && (issue.code === 'invalid_type' || /received undefined/.test(issue.message))) {
    return 'is required';
  }
  return issue.message;
}

/** Line and column of a path in the YAML document: the value if present, else the closest parent. */
function locate(doc: Document, lc: LineCounter, p: InventoryPath, key?: string): { line?: number; col?: number } {
  let node: unknown = doc.contents;
  let best: YamlNode | undefined = node as YamlNode;
  const steps = key === undefined ? p : [...p, key];
  for (let i = 0; i < steps.length; i++) {
    const step = steps[i]!;
    if (isMap(node)) {
      const pair = node.items.find((it) => (it.key as { value?: unknown })?.value === step);
      if (!pair) break;
      // For an unknown key, point at the key itself.
      const target = key !== undefined && i === steps.length - 1 ? pair.key : (pair.value ?? pair.key);
      node = target;
    } else if (isSeq(node) && typeof step === 'number') {
      node = node.items[step];
    } else break;
    if (node && (node as YamlNode).range) best = node as YamlNode;
    else break;
  }
  const offset = best?.range?.[0];
  if (offset === undefined) return {};
  const pos = lc.linePos(offset);
  return { line: pos.line, col: pos.col };
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
