/**
 * The inventory's JSON Schema (k8s-ha schema), checked with a JSON Schema validator as an editor
 * would use it: every inventory the documentation shows, and the shipped example, is valid against
 * it (the schema never refuses what the loader accepts); an unknown key or a wrong type is not.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import YAML from 'yaml';
import { describe, expect, it } from 'vitest';
import { inventoryJsonSchema } from '../../src/inventory/json-schema.js';

const ajv = new Ajv2020({ allErrors: true, strict: false });
const validate = ajv.compile(inventoryJsonSchema('0.0.0'));
const pages = ['README.md', ...fs.readdirSync('docs').filter((f) => f.endsWith('.md')).map((f) => path.join('docs', f))];
const shown = pages.flatMap((page) =>
  [...fs.readFileSync(page, 'utf8').matchAll(/^```yaml\n([\s\S]*?)^```$/gm)].map((m) => m[1]!).filter((t) => /^masters:/m.test(t) && /^nodes:/m.test(t)).map((text) => ({ page, text })),
);

describe("the inventory's JSON Schema", () => {
  it('accepts every inventory the pages show, with ranges and groups, and the shipped example', () => {
    expect(shown.length).toBeGreaterThan(2);
    for (const { page, text } of [...shown, { page: 'inventory.example.yaml', text: fs.readFileSync('inventory/inventory.example.yaml', 'utf8') }]) {
      const ok = validate(YAML.parse(text));
      expect([page, ok, validate.errors ?? null]).toEqual([page, true, null]);
    }
  });

  it('refuses an unknown key, a wrong type and a bad enum, as an editor underlines them', () => {
    const base = { masters: [{ name: 'm1', address: '192.0.2.1' }], nodes: [{ name: 'node-[1:3]', address: '10.0.0.[1:3]' }] };
    expect(validate(base)).toBe(true);
    expect(validate({ ...base, lb: { listne: '127.0.0.1:8443' } })).toBe(false);
    expect(validate({ ...base, masters: 'm1' })).toBe(false);
    expect(validate({ ...base, ssh: { strictHostKeyChecking: 'maybe' } })).toBe(false);
    expect(validate({ ...base, nodes: [{ group: 'g', hosts: [{ name: 'a' }], ssh: { user: 'ops' }, bogus: 1 }] })).toBe(false);
    expect(validate({ ...base, nodes: [{ group: 'g', hosts: [{ name: 'a' }], ssh: { user: 'ops' } }] })).toBe(true);
    // Masters that are also nodes need no nodes list.
    expect(validate({ masters: [{ name: 'cp-[1:3]', address: '192.0.2.[11:13]', node: true }] })).toBe(true);
  });
});
