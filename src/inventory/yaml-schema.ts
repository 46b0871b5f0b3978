/**
 * YAML validated by a zod schema, every issue placed at file:line:col with its
 * path. Shared by the inventory and the playbooks.
 */
import { isMap, isSeq, LineCounter, parseDocument, type Document, type Node as YamlNode } from 'yaml';
import type { z } from 'zod';
import type { Diagnostic, InventoryPath } from './diagnostics.js';

export interface Validated<T> {
  value?: T;
  diagnostics: Diagnostic[];
  /** Line and column of a path in the document (the closest existing parent when it is missing). */
  position: (p: InventoryPath) => { line?: number; col?: number };
}

type ZodIssue = z.core.$ZodIssue;

export function validateYaml<S extends z.ZodType>(text: string, schema: S): Validated<z.infer<S>> {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const position = (p: InventoryPath, key?: string) => locate(doc, lineCounter, p, key);
  if (doc.errors.length) {
    return {
      position,
      diagnostics: doc.errors.map((e) => ({
        severity: 'error',
        path: [],
        message: `YAML: ${e.message.split('\n')[0]}`,
        ...lineCounter.linePos(e.pos[0]),
      })),
    };
  }
  const result = schema.safeParse(doc.toJS() ?? {});
  if (result.success) return { value: result.data, diagnostics: [], position };
  const diagnostics: Diagnostic[] = [];
  for (const issue of result.error.issues) {
    const p = issue.path as InventoryPath;
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) diagnostics.push({ severity: 'error', path: [...p, key], message: 'unknown key', ...position(p, key) });
      continue;
    }
    diagnostics.push({ severity: 'error', path: p, message: describeIssue(issue), ...position(p) });
  }
  return { diagnostics, position };
}

/** A zod issue in our words: a missing value "is required"; unknown keys are named. */
export function describeIssue(issue: ZodIssue): string {
  if (issue.code === 'unrecognized_keys') return `unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.join(', ')}`;
  const received = (issue as { input?: unknown }).input;
  if (received === undefined && (issue.code === 'invalid_type' || /received undefined/.test(issue.message))) return 'is required';
  return issue.message;
}

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
      node = key !== undefined && i === steps.length - 1 ? pair.key : (pair.value ?? pair.key);
    } else if (isSeq(node) && typeof step === 'number') {
      node = node.items[step];
    } else break;
    if (node && (node as YamlNode).range) best = node as YamlNode;
    else break;
  }
  const offset = best?.range?.[0];
  if (offset === undefined) return {};
  return lc.linePos(offset);
}
