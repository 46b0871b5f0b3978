/**
 * YAML validated by a zod schema, every issue placed at file:line:col with its
 * path. Shared by the inventory and the playbooks.
 */
import { Composer, Lexer, YAMLParseError, isMap, isPair, isScalar, isSeq, LineCounter, Parser, visit, type Alias, type CST, type Document, type Node as YamlNode, type Pair, type YAMLMap } from 'yaml';
import type { z } from 'zod';
import type { Diagnostic, InventoryPath } from './diagnostics.js';

export interface Validated<T> {
  value?: T;
  diagnostics: Diagnostic[];
  /** Line and column of a path in the document (the closest existing parent when it is missing). */
  position: (p: InventoryPath) => { line?: number; col?: number };
}

type ZodIssue = z.core.$ZodIssue;

/** Far above any real inventory (20,000 nodes fit) and small enough to read in a few seconds at worst. */
export const MAX_YAML_BYTES = 1024 * 1024;
/**
 * How many nodes aliases may expand to (yaml's own default, stated): a "billion laughs" document
 * of a few lines expands to gigabytes. An inventory has no need for more.
 */
export const MAX_ALIAS_COUNT = 100;
/**
 * Collections inside collections. An inventory needs five or so; yaml composes (and zod checks)
 * by recursion, and a few thousand levels (`[[[[...`, `- - - -...`) overflow the stack.
 */
export const MAX_DEPTH = 64;

/** The diagnostic for a document over MAX_YAML_BYTES, whoever measured it. */
export function tooLarge(what: string): Diagnostic {
  return { severity: 'error', path: [], message: `the ${what} is over the ${MAX_YAML_BYTES / 1024 / 1024} MiB limit: is this the right file?` };
}

export function validateYaml<S extends z.ZodType>(text: string, schema: S, what = 'document'): Validated<z.infer<S>> {
  if (Buffer.byteLength(text, 'utf8') > MAX_YAML_BYTES) return { position: () => ({}), diagnostics: [tooLarge(what)] };
  const lineCounter = new LineCounter();
  lineCounter.addNewLine(0);
  for (const m of text.matchAll(/\n/g)) lineCounter.addNewLine(m.index + 1);
  // Measured before anything recurses: flow brackets on the lexer's tokens (the parser itself slows
  // down on thousands of them), then every collection on the parser's, which is a loop.
  const flowDeep = flowDeeperThan(text, MAX_DEPTH);
  const tokens = flowDeep === undefined ? [...new Parser().parse(text)] : [];
  const deep = flowDeep ?? deeperThan(tokens, MAX_DEPTH);
  if (deep !== undefined) {
    const message = `YAML: nested more than ${MAX_DEPTH} levels deep: is this the right file?`;
    return { position: () => ({}), diagnostics: [{ severity: 'error', path: [], message, ...lineCounter.linePos(deep) }] };
  }
  // uniqueKeys compares every key with every earlier one (quadratic: a 600 KB map takes half a
  // minute); duplicateKeys below does the same with a Set.
  const doc = compose(tokens, text.length);
  const position = (p: InventoryPath, key?: string) => locate(doc, lineCounter, p, key);
  const syntax: Diagnostic[] = doc.errors.map((e) => ({
    severity: 'error',
    path: [],
    message: `YAML: ${e.message.split('\n')[0]}`,
    ...lineCounter.linePos(e.pos[0]),
  }));
  const dupes = duplicateKeys(doc, lineCounter);
  if (syntax.length || dupes.length) return { position, diagnostics: [...syntax, ...dupes] };
  let js: unknown;
  try {
    js = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (e) {
    const alias = aliasProblem(doc, e);
    if (!alias) throw e;
    const where = alias.at === undefined ? {} : lineCounter.linePos(alias.at);
    return { position, diagnostics: [{ severity: 'error', path: [], message: alias.message, ...where }] };
  }
  const result = schema.safeParse(js ?? {});
  if (result.success) return { value: result.data, diagnostics: [], position };
  const diagnostics: Diagnostic[] = [];
  for (const issue of result.error.issues) {
    const p = issue.path as InventoryPath;
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) diagnostics.push({ severity: 'error', path: [...p, key], message: 'unknown key', ...position(p, key) });
      continue;
    }
    diagnostics.push({ severity: 'error', path: p, message: describeIssue(issue, js ?? {}), ...position(p) });
  }
  return { diagnostics, position };
}

/** The one document of the tokens, as parseDocument makes it; a second one is an error. */
function compose(tokens: CST.Token[], length: number): Document.Parsed {
  let doc: Document.Parsed | undefined;
  for (const d of new Composer({ uniqueKeys: false }).compose(tokens, true, length)) {
    if (!doc) doc = d;
    else {
      doc.errors.push(new YAMLParseError(d.range.slice(0, 2) as [number, number], 'MULTIPLE_DOCS', 'a file holds one document: remove the "---" and what follows it, or merge them'));
      break;
    }
  }
  return doc!;
}

/** The offset of the first `[` or `{` nested deeper than max; stops there. */
function flowDeeperThan(text: string, max: number): number | undefined {
  let depth = 0;
  let offset = 0;
  for (const token of new Lexer().lex(text)) {
    if (token === '[' || token === '{') {
      if (++depth > max) return offset;
    } else if (token === ']' || token === '}') depth--;
    // Control tokens (document, scalar starts) are single characters that the source does not hold.
    if (!/^[\x00-\x1f]$/.test(token)) offset += token.length;
  }
  return undefined;
}

/** The offset of the first collection nested deeper than max, walked without recursion. */
function deeperThan(tokens: CST.Token[], max: number): number | undefined {
  const stack: [CST.Token | null | undefined, number][] = tokens.map((t) => [t, 0]);
  while (stack.length) {
    const [t, depth] = stack.pop()!;
    if (!t) continue;
    if (t.type === 'document') stack.push([t.value, depth]);
    else if (t.type === 'block-map' || t.type === 'block-seq' || t.type === 'flow-collection') {
      if (depth + 1 > max) return t.offset;
      for (const it of t.items as CST.CollectionItem[]) stack.push([it.key, depth + 1], [it.value, depth + 1]);
    }
  }
  return undefined;
}

/** What toJS threw about aliases, in our words, at the alias concerned; undefined for anything else (a bug). */
function aliasProblem(doc: Document, e: unknown): { message: string; at?: number } | undefined {
  if (!(e instanceof ReferenceError)) return undefined;
  const aliases: Alias[] = [];
  visit(doc, { Alias: (_, a) => void aliases.push(a) });
  if (/Excessive alias count/.test(e.message)) {
    return {
      message: `YAML: aliases expand to more than ${MAX_ALIAS_COUNT} copies, as in a "billion laughs" document: write the values out instead of *aliases`,
      at: aliases[0]?.range?.[0],
    };
  }
  const name = /Unresolved alias.*: (.*)$/.exec(e.message)?.[1];
  if (name === undefined) return undefined;
  return {
    message: `YAML: alias *${name} has no anchor &${name} before it: define &${name} first, or write the value out`,
    at: aliases.find((a) => a.source === name)?.range?.[0],
  };
}

/** Every key a mapping repeats (JS would keep only the last), at the repeat, with its path. */
function duplicateKeys(doc: Document, lc: LineCounter): Diagnostic[] {
  const out: Diagnostic[] = [];
  visit(doc, {
    Map(_, map, ancestors) {
      const seen = new Map<string, number | undefined>();
      for (const pair of map.items) {
        if (!isScalar(pair.key)) continue;
        // Keys become strings in JS: 1 and "1" are the same key there.
        const key = String(pair.key.value);
        const at = pair.key.range?.[0];
        if (!seen.has(key)) {
          seen.set(key, at);
          continue;
        }
        const first = seen.get(key);
        out.push({
          severity: 'error',
          path: [...pathOf([...ancestors, map]), key],
          message: `duplicate key${first === undefined ? '' : ` (also on line ${lc.linePos(first).line})`}: keep one`,
          ...(at === undefined ? {} : lc.linePos(at)),
        });
      }
    },
  });
  return out;
}

/** The inventory path of the last of a chain of YAML ancestors (document, collections, pairs). */
function pathOf(chain: readonly unknown[]): InventoryPath {
  const out: InventoryPath = [];
  for (let i = 0; i < chain.length - 1; i++) {
    const here = chain[i];
    const next = chain[i + 1];
    if (isPair(here) && next === here.value) out.push(isScalar(here.key) ? String(here.key.value) : '?');
    else if (isSeq(here)) out.push(here.items.indexOf(next as YamlNode));
  }
  return out;
}

/**
 * A zod issue in our words: a missing value "is required"; unknown keys are named. zod leaves the
 * input out of its issues: with `root`, the value parsed, a value of the wrong type is told apart
 * from a missing one (`masters: 5` must be a list, it is not missing).
 */
export function describeIssue(issue: ZodIssue, root?: unknown): string {
  if (issue.code === 'unrecognized_keys') return `unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.join(', ')}`;
  // An empty value (`masters:`) is null in YAML: missing too.
  const received = root === undefined ? (issue as { input?: unknown }).input : (valueAt(root, issue.path) ?? undefined);
  if (received === undefined && (issue.code === 'invalid_type' || /received undefined/.test(issue.message))) return 'is required';
  return issue.message;
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let v = root;
  for (const step of path) v = v !== null && typeof v === 'object' ? (v as Record<PropertyKey, unknown>)[step] : undefined;
  return v;
}

// Each mapping's pairs by key, built once: a document of many unknown keys is located in linear time.
const pairsByKey = new WeakMap<YAMLMap, Map<unknown, Pair>>();

function pairOf(map: YAMLMap, key: string | number): Pair | undefined {
  let byKey = pairsByKey.get(map);
  if (!byKey) {
    byKey = new Map();
    for (const it of map.items) {
      const k = (it.key as { value?: unknown } | null)?.value;
      if (!byKey.has(k)) byKey.set(k, it);
    }
    pairsByKey.set(map, byKey);
  }
  return byKey.get(key);
}

function locate(doc: Document, lc: LineCounter, p: InventoryPath, key?: string): { line?: number; col?: number } {
  let node: unknown = doc.contents;
  let best: YamlNode | undefined = node as YamlNode;
  const steps = key === undefined ? p : [...p, key];
  for (let i = 0; i < steps.length; i++) {
    const step = steps[i]!;
    if (isMap(node)) {
      const pair = pairOf(node, step);
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
