/**
 * YAML validated by a zod schema, every issue placed at file:line:col with its
 * path. Shared by the inventory and the playbooks.
 */
import { Composer, Lexer, YAMLParseError, isMap, isPair, isScalar, isSeq, LineCounter, Parser, visit, type Alias, type CST, type Document, type Node as YamlNode, type Pair, type YAMLMap } from 'yaml';
import { z } from 'zod';
import { formatPath, orList, unknownKeyMessage, type Diagnostic, type InventoryPath } from './diagnostics.js';

export interface Validated<T> {
  value?: T;
  diagnostics: Diagnostic[];
  /** Line and column of a path in the document (the closest existing parent when it is missing). */
  position: (p: InventoryPath) => { line?: number; col?: number };
  /**
   * A diagnostic about the validated value, placed in the file: with `expand`, a path of the
   * expanded value becomes the line that made it, and the host it concerns is named.
   */
  place: (d: Diagnostic) => Diagnostic;
}

/** What `expand` gives validateYaml: the value to validate, its own problems, and where each of its paths came from. */
export interface Expansion {
  value: unknown;
  diagnostics: Diagnostic[];
  source: (p: InventoryPath) => { path: InventoryPath; host?: string };
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

export function validateYaml<S extends z.ZodType>(text: string, schema: S, what = 'document', expand?: (js: unknown) => Expansion): Validated<z.infer<S>> {
  const nowhere = { position: () => ({}), place: (d: Diagnostic) => d };
  if (Buffer.byteLength(text, 'utf8') > MAX_YAML_BYTES) return { ...nowhere, diagnostics: [tooLarge(what)] };
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
    return { ...nowhere, diagnostics: [{ severity: 'error', path: [], message, ...lineCounter.linePos(deep) }] };
  }
  // uniqueKeys compares every key with every earlier one (quadratic: a 600 KB map takes half a
  // minute); duplicateKeys below does the same with a Set.
  const doc = compose(tokens, text.length);
  const spot = (p: InventoryPath, key?: string) => locate(doc, lineCounter, p, key);
  let source: Expansion['source'] = (p) => ({ path: p });
  // Paths of the validated value, placed in the file: the same before any expansion.
  const position = (p: InventoryPath, key?: string) => spot(source(p).path, key);
  const place = (d: Diagnostic): Diagnostic => {
    const from = source(d.path);
    return { ...d, path: from.path, message: from.host ? `${from.host}: ${d.message}` : d.message, ...spot(from.path) };
  };
  const syntax: Diagnostic[] = doc.errors.map((e) => ({
    severity: 'error',
    path: [],
    message: `YAML: ${e.message.split('\n')[0]}`,
    ...lineCounter.linePos(e.pos[0]),
  }));
  const dupes = duplicateKeys(doc, lineCounter);
  if (syntax.length || dupes.length) return { position, place, diagnostics: [...syntax, ...dupes] };
  let js: unknown;
  try {
    js = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (e) {
    const alias = aliasProblem(doc, e);
    if (!alias) throw e;
    const where = alias.at === undefined ? {} : lineCounter.linePos(alias.at);
    return { position, place, diagnostics: [{ severity: 'error', path: [], message: alias.message, ...where }] };
  }
  if (expand) {
    const e = expand(js);
    if (e.diagnostics.length) return { position, place, diagnostics: e.diagnostics.map((d) => ({ ...d, ...spot(d.path) })) };
    js = e.value;
    source = e.source;
  }
  // The keys each mapping that refused some allows, taken from the object schema itself as it
  // reports them: a suggestion can only name a key that would have been accepted there.
  const allowedAt = new Map<string, string[]>();
  const result = schema.safeParse(js ?? {}, {
    error: (issue) => {
      if (issue.code === 'unrecognized_keys') allowedAt.set(JSON.stringify(issue.path ?? []), shapeKeys(issue.inst));
      return inOurWords(issue, { value: issue.input });
    },
  });
  if (result.success) return { value: result.data, diagnostics: [], position, place };
  // Read first: zod words its issues (calling the map above) when they are first asked for.
  const issues = result.error.issues;
  const diagnostics: Diagnostic[] = [];
  for (const issue of issues) {
    const p = issue.path as InventoryPath;
    if (issue.code === 'unrecognized_keys') {
      const allowed = allowedAt.get(JSON.stringify(p));
      for (const key of issue.keys) diagnostics.push({ ...place({ severity: 'error', path: [...p, key], message: unknownKeyMessage(key, allowed) }), ...position(p, key) });
      continue;
    }
    // A value that fits none of a field's forms, but one of them down to an element: placed there.
    const branch = issue.code === 'invalid_union' ? unionBranch(issue as unknown as Wordable) : undefined;
    if (branch?.path?.length) {
      const at = [...p, ...(branch.path as InventoryPath)];
      diagnostics.push(place({ severity: 'error', path: at, message: describeIssue({ ...branch, path: at } as unknown as ZodIssue, js ?? {}) }));
      continue;
    }
    diagnostics.push(place({ severity: 'error', path: p, message: describeIssue(issue, js ?? {}) }));
  }
  return { diagnostics, position, place };
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
 * from a missing one (`masters: 5` must be a list, it is not missing). An issue a schema left to
 * zod's own text (parsed without inOurWords as its map) is worded here too.
 */
export function describeIssue(issue: ZodIssue, root?: unknown): string {
  if (issue.code === 'unrecognized_keys') return `unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.join(', ')}`;
  // An empty value (`masters:`) is null in YAML: missing too.
  const received = root === undefined ? (issue as { input?: unknown }).input : (valueAt(root, issue.path) ?? undefined);
  if (received === undefined && (issue.code === 'invalid_type' || /received undefined/.test(issue.message))) return 'is required';
  if (!zodsOwnWords(issue)) return issue.message;
  return inOurWords(issue as Wordable, root === undefined ? undefined : { value: received });
}

/** English as zod writes it by default: what a message is compared with to know it is zod's, not a schema's. */
const zodEnglish = z.locales.en().localeError;

function zodsOwnWords(issue: ZodIssue): boolean {
  // Its wrong-type text names the value's type, which a finished issue no longer carries.
  if (issue.code === 'invalid_type') return issue.message.startsWith(`Invalid input: expected ${issue.expected}, received `);
  const english = zodEnglish(issue as Parameters<typeof zodEnglish>[0]);
  return issue.message === 'Invalid input' || issue.message === (typeof english === 'string' ? english : english?.message);
}

/** An issue as zod raises it or as it reports it: the fields the wording needs. */
type Wordable = { code: string; path?: PropertyKey[]; message?: string } & Record<string, unknown>;

const TYPE_WORDS: Record<string, string> = {
  string: 'a string',
  number: 'a number',
  int: 'a whole number',
  bigint: 'a whole number',
  boolean: 'true or false',
  array: 'a list',
  tuple: 'a list',
  object: 'a mapping of keys to values',
  record: 'a mapping of keys to values',
  map: 'a mapping of keys to values',
  set: 'a list',
  date: 'a date',
  null: 'empty',
};

const FORMAT_WORDS: Record<string, string> = {
  url: 'a URL',
  email: 'an email address',
  uuid: 'a UUID',
  ipv4: 'an IPv4 address',
  ipv6: 'an IPv6 address',
  cidrv4: 'an IPv4 range such as 10.0.0.0/8',
  cidrv6: 'an IPv6 range such as fd00::/8',
  hostname: 'a host name',
  datetime: 'a date and time such as 2024-01-31T12:00:00Z',
  date: 'a date such as 2024-01-31',
  time: 'a time such as 12:00:00',
  duration: 'an ISO 8601 duration such as PT30S',
  base64: 'base64 text',
  base64url: 'base64url text',
};

/** What kind of value a place holds, as a reader of YAML names it. */
function kindOf(v: unknown): string {
  if (v === null || v === undefined) return 'nothing';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'boolean') return String(v);
  if (typeof v === 'number' || typeof v === 'bigint') return 'a number';
  return `a ${typeof v}`;
}

/** A value as the file writes it: strings quoted (cut short), numbers and booleans as they are, collections by kind. */
function shown(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v);
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  return kindOf(v);
}

/** An allowed value in a list of choices: strings plain (`yes, accept-new or no`), the rest as written. */
const choice = (v: unknown) => (typeof v === 'string' ? v : shown(v));

/** The keys an object schema takes, from its shape; none for anything else. */
function shapeKeys(inst: unknown): string[] {
  const shape = (inst as { _zod?: { def?: { shape?: unknown } } } | undefined)?._zod?.def?.shape;
  return shape && typeof shape === 'object' ? Object.keys(shape) : [];
}

/**
 * Every kind of zod issue in the project's words: what the value must be, and what was found when
 * it is known (`got`). Given to safeParse as its error map, it words only the issues a schema left
 * without a message of its own: a field's own message always wins.
 */
export function inOurWords(issue: Wordable | z.core.$ZodRawIssue, got?: { value: unknown }): string {
  const i = issue as Wordable;
  const has = got !== undefined && got.value !== undefined;
  const saw = (text: string) => (has ? ` (got ${text})` : '');
  switch (i.code) {
    case 'invalid_type': {
      if (got !== undefined && (got.value === undefined || got.value === null)) return 'is required';
      const expected = String(i.expected);
      const want = TYPE_WORDS[expected] ?? `a ${expected}`;
      const v = got?.value;
      // YAML reads 1.22 or true as a number or a boolean: text wanted there needs quotes.
      if (expected === 'string' && (typeof v === 'number' || typeof v === 'boolean')) return `must be a string${saw(`${kindOf(v)}: put the value in quotes`)}`;
      // A string or a number that is not whole shows itself; otherwise the kind found says enough.
      return `must be ${want}${saw(typeof v === 'string' || (expected === 'int' && typeof v === 'number') ? shown(v) : kindOf(v))}`;
    }
    case 'invalid_value': {
      const values = (i.values as unknown[]) ?? [];
      const want = values.length === 1 ? shown(values[0]) : `one of ${orList(values.map(choice))}`;
      return `must be ${want}${saw(shown(got?.value))}`;
    }
    case 'too_small':
    case 'too_big': {
      const small = i.code === 'too_small';
      const n = Number(small ? i.minimum : i.maximum);
      const inclusive = i.inclusive !== false;
      switch (i.origin) {
        case 'array':
        case 'set':
        case 'map': {
          const items = (k: number) => `${k === 1 ? 'one item' : `${k} items`}`;
          if (i.exact) return `needs exactly ${items(n)}`;
          if (small) return `needs at least ${items(inclusive ? n : n + 1)}`;
          return `has too many items: list at most ${items(inclusive ? n : n - 1)}`;
        }
        case 'string': {
          const chars = (k: number) => `${k} character${k === 1 ? '' : 's'}`;
          if (i.exact) return `must be exactly ${chars(n)} long`;
          if (small) return (inclusive ? n : n + 1) <= 1 ? 'must not be empty' : `must be at least ${chars(inclusive ? n : n + 1)} long`;
          return `must be at most ${chars(inclusive ? n : n - 1)} long`;
        }
        default: {
          const bound = small ? (inclusive ? `at least ${n}` : `more than ${n}`) : inclusive ? `at most ${n}` : `less than ${n}`;
          return `must be ${bound}${saw(shown(got?.value))}`;
        }
      }
    }
    case 'invalid_format': {
      if (i.format === 'starts_with') return `must start with ${JSON.stringify(i.prefix)}`;
      if (i.format === 'ends_with') return `must end with ${JSON.stringify(i.suffix)}`;
      if (i.format === 'includes') return `must contain ${JSON.stringify(i.includes)}`;
      if (i.format === 'regex') return `is not in the expected form (it must match ${String(i.pattern)})`;
      const format = String(i.format);
      return `must be ${FORMAT_WORDS[format] ?? `in the ${format} format`}`;
    }
    case 'not_multiple_of':
      return `must be a multiple of ${String(i.divisor)}${saw(shown(got?.value))}`;
    case 'unrecognized_keys':
      return `unknown key${(i.keys as string[]).length > 1 ? 's' : ''} ${(i.keys as string[]).join(', ')}`;
    case 'invalid_key':
      return 'has a key that is not allowed here';
    case 'invalid_element':
      return 'holds a value that is not allowed here';
    case 'invalid_union':
      return unionWords(i, got);
    default:
      return i.message && !/^Invalid input/.test(i.message) ? i.message : 'is not valid here';
  }
}

const unionOptions = (i: Wordable) => ((i.errors as Wordable[][] | undefined) ?? []).filter((o) => o.length);
const typeOnly = (o: Wordable[]) => o.length === 1 && o[0]!.code === 'invalid_type' && !o[0]!.path?.length;

/** The first issue of the first form that took the value's type (a list, say) and refused something inside it. */
function unionBranch(i: Wordable): Wordable | undefined {
  if (Array.isArray(i.options) && i.options.length) return undefined;
  return unionOptions(i).find((o) => !typeOnly(o))?.[0];
}

/**
 * A value that fits none of a field's forms. When each form refused it for its type alone, the
 * forms are named (`must be a string or a list`); otherwise the form it came closest to speaks.
 */
function unionWords(i: Wordable, got?: { value: unknown }): string {
  if (Array.isArray(i.options) && i.options.length) {
    const which = typeof i.discriminator === 'string' ? `its ${i.discriminator} ` : '';
    return `${which}must be one of ${orList(i.options.map(choice))}`;
  }
  if (i.inclusive === false) return 'fits more than one of the accepted forms: write it so that it fits one';
  const options = unionOptions(i);
  if (options.length && options.every(typeOnly)) {
    const wants = [...new Set(options.map((o) => TYPE_WORDS[String(o[0]!.expected)] ?? `a ${String(o[0]!.expected)}`))];
    return `must be ${orList(wants)}${got !== undefined && got.value !== undefined ? ` (got ${kindOf(got.value)})` : ''}`;
  }
  const first = unionBranch(i);
  if (!first) return 'is not valid here';
  // Issues inside a union are finished before the union's: worded by the map when there was one.
  const text = first.message !== undefined && !zodsOwnWords(first as unknown as ZodIssue) ? first.message : inOurWords(first);
  return first.path?.length ? `${formatPath(first.path as InventoryPath)}: ${text}` : text;
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
