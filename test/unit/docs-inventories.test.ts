/**
 * Every whole inventory the README and docs/ show (a YAML block with masters: and nodes:) is one
 * k8s-ha accepts as written, and so is the shipped example: what an operator copies works.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { formatDiagnostic } from '../../src/inventory/diagnostics.js';
import { parseInventory } from '../../src/inventory/load.js';

const pages = ['README.md', ...fs.readdirSync('docs').filter((f) => f.endsWith('.md')).map((f) => path.join('docs', f))];
const blocks = pages.flatMap((page) =>
  [...fs.readFileSync(page, 'utf8').matchAll(/^```yaml\n([\s\S]*?)^```$/gm)].map((m) => ({ page, text: m[1]! })).filter((b) => /^masters:/m.test(b.text) && /^nodes:/m.test(b.text)),
);

describe('inventories in the documentation', () => {
  it('there are some: the README and the inventory reference each show one', () => {
    expect(blocks.map((b) => b.page)).toEqual(expect.arrayContaining(['README.md', path.join('docs', 'inventory.md')]));
  });

  // A fragment that shows the hosts only (no lb:, nginx: or tls:) is read with kube-lb and no CA check, the least it needs.
  const whole = (text: string) => (/^(lb|nginx|tls):/m.test(text) ? text : `lb: { impl: kube-lb }\ntls: { insecureSkipVerify: true }\n${text}`);

  it.each(blocks.map((b, i) => [`${b.page} #${i + 1}`, b] as const))('%s is accepted as written', (_name, b) => {
    const errors = parseInventory(whole(b.text)).diagnostics.filter((d) => d.severity === 'error');
    expect(errors.map((d) => formatDiagnostic(b.page, d))).toEqual([]);
  });

  it('inventory/inventory.example.yaml is accepted as written', () => {
    const errors = parseInventory(fs.readFileSync('inventory/inventory.example.yaml', 'utf8')).diagnostics.filter((d) => d.severity === 'error');
    expect(errors.map((d) => formatDiagnostic('inventory.example.yaml', d))).toEqual([]);
  });
});
