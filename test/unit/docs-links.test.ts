import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

// README.md is the front door and docs/*.md the pages behind it: every link between them, and to the
// repository's files, must lead somewhere. Run from the repository root.

const ROOT = process.cwd();
const PAGES = ['README.md', ...readdirSync(path.join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).sort().map((f) => `docs/${f}`)];

/** Each line with whether it lies in a fenced code block (the fence lines themselves count as inside). */
function lines(text: string): { line: string; n: number; fenced: boolean }[] {
  const out: { line: string; n: number; fenced: boolean }[] = [];
  let fence: { char: string; len: number } | undefined;
  text.split('\n').forEach((line, i) => {
    const m = /^ {0,3}(?:[-*+] +|\d+[.)] +)*\s*(`{3,}|~{3,})/.exec(line);
    if (!fence && m?.[1]) {
      fence = { char: m[1][0]!, len: m[1].length };
      out.push({ line, n: i + 1, fenced: true });
      return;
    }
    if (fence) {
      const close = /^\s*(`{3,}|~{3,})\s*$/.exec(line);
      if (close?.[1] && close[1][0] === fence.char && close[1].length >= fence.len) fence = undefined;
      out.push({ line, n: i + 1, fenced: true });
      return;
    }
    out.push({ line, n: i + 1, fenced: false });
  });
  return out;
}

/** GitHub's rule: the heading's text, lowercased, punctuation but '-' and '_' dropped, each space a '-'. */
export function slug(heading: string): string {
  const text = heading
    .replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1') // a link in a heading: its text
    .replace(/<[^>]+>/g, '') // inline HTML
    .trim()
    .toLowerCase();
  return text.replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, '').replace(/ /g, '-');
}

/** The anchors a page has: one per ATX heading (repeats get -1, -2, ...), plus HTML name/id anchors. */
export function anchors(text: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const { line, fenced } of lines(text)) {
    if (fenced) continue;
    const h = /^ {0,3}#{1,6}(?:\s+(.*?))?(?:\s+#+)?\s*$/.exec(line);
    if (h) {
      const base = slug(h[1] ?? '');
      let id = base;
      const count = seen.get(base) ?? 0;
      if (count > 0) id = `${base}-${count}`;
      seen.set(base, count + 1);
      out.add(id);
    }
    for (const a of line.matchAll(/<a\s+(?:name|id)="([^"]+)"/g)) out.add(a[1]!);
  }
  return out;
}

/** Every markdown link `[text](target)` (and image) outside fenced code and inline code spans. */
export function links(text: string): { target: string; line: number }[] {
  const out: { target: string; line: number }[] = [];
  for (const { line, n, fenced } of lines(text)) {
    if (fenced) continue;
    // A code span's contents are not markdown: `[a](b)` there is no link, but [`code`](target) is one.
    const plain = line.replace(/(`+)(?!`)(.+?)(?<!`)\1(?!`)/g, 'code');
    for (const m of plain.matchAll(/\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)/g)) out.push({ target: m[1]!, line: n });
  }
  return out;
}

const anchorCache = new Map<string, Set<string>>();
function anchorsOf(file: string): Set<string> {
  let a = anchorCache.get(file);
  if (!a) anchorCache.set(file, (a = anchors(readFileSync(file, 'utf8'))));
  return a;
}

/** What is wrong with one link of a page, or undefined. `page` is relative to the repository root. */
export function brokenLink(page: string, target: string, root = ROOT): string | undefined {
  if (/^(https?:|mailto:)/i.test(target)) return undefined;
  if (target === '') return 'an empty target';
  const hash = target.indexOf('#');
  const filePart = hash < 0 ? target : target.slice(0, hash);
  const anchor = hash < 0 ? undefined : decodeURIComponent(target.slice(hash + 1));
  const pageFile = path.join(root, page);
  let file = pageFile;
  if (filePart !== '') {
    file = filePart.startsWith('/') ? path.join(root, filePart) : path.resolve(path.dirname(pageFile), decodeURIComponent(filePart));
    if (!existsSync(file)) return `${path.relative(root, file)} does not exist`;
  }
  if (anchor === undefined) return undefined;
  if (!file.endsWith('.md') || statSync(file).isDirectory()) return undefined;
  if (!anchorsOf(file).has(anchor)) return `${path.relative(root, file)} has no heading for #${anchor}`;
  return undefined;
}

describe('documentation links', () => {
  it('finds the pages', () => {
    expect(PAGES).toContain('README.md');
    expect(PAGES.length).toBeGreaterThan(1);
  });

  for (const page of PAGES) {
    it(`${page}: every link leads to a file, and every anchor to a heading`, () => {
      const text = readFileSync(path.join(ROOT, page), 'utf8');
      const broken = links(text)
        .map(({ target, line }) => {
          const why = brokenLink(page, target);
          return why && `${page}:${line}: (${target}): ${why}`;
        })
        .filter((b): b is string => b !== undefined);
      expect(broken).toEqual([]);
    });
  }

  it('README.md is a front door: at most 220 lines', () => {
    const n = readFileSync(path.join(ROOT, 'README.md'), 'utf8').replace(/\n$/, '').split('\n').length;
    expect(n).toBeLessThanOrEqual(220);
  });

  it("README.md's quick start still runs exactly the demo and the tests (CI runs them)", () => {
    const all = lines(readFileSync(path.join(ROOT, 'README.md'), 'utf8'));
    const start = all.findIndex((l) => !l.fenced && /^##\s+Quick start\s*$/.test(l.line));
    expect(start).toBeGreaterThanOrEqual(0);
    const open = all.findIndex((l, i) => i > start && l.fenced);
    const nextHeading = all.findIndex((l, i) => i > start && !l.fenced && /^#{1,2}\s/.test(l.line));
    expect(open).toBeGreaterThan(start);
    if (nextHeading >= 0) expect(open).toBeLessThan(nextHeading);
    const block: string[] = [];
    for (let i = open + 1; i < all.length && all[i]!.fenced && !/^\s*(`{3,}|~{3,})\s*$/.test(all[i]!.line); i++) block.push(all[i]!.line);
    const commands = block.filter((l) => l.trim() !== '');
    expect(commands).toHaveLength(2);
    expect(commands[0]).toMatch(/^npm ci && npm run demo(\s|$)/);
    expect(commands[1]).toMatch(/^npm ci && npm test(\s|$)/);
  });

  it('reads anchors and links as GitHub does', () => {
    expect(slug("nginx's own status port (`nginx.statusListen`)")).toBe('nginxs-own-status-port-nginxstatuslisten');
    expect(slug('SSH: bastions, ssh_config, host keys and keys')).toBe('ssh-bastions-ssh_config-host-keys-and-keys');
    expect(slug("Rolling reconfigure (a master's IP changed, a master added or retired)")).toBe(
      'rolling-reconfigure-a-masters-ip-changed-a-master-added-or-retired',
    );
    expect([...anchors('# A\n## B\n## B\n```\n## B\n```\n### B\n')]).toEqual(['a', 'b', 'b-1', 'b-2']);
    expect(links('[a](x.md) `[b](y.md)` [`c`](#z)\n```\n[d](w.md)\n```\n  ```sh\n  [e](v.md)\n  ```\n').map((l) => l.target)).toEqual([
      'x.md',
      '#z',
    ]);
    expect(brokenLink('README.md', 'docs/no-such-page.md')).toMatch(/does not exist/);
    expect(brokenLink('README.md', '#no-such-heading')).toMatch(/no heading/);
    expect(brokenLink('README.md', 'https://example.invalid/x')).toBeUndefined();
  });
});
