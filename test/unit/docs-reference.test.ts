/**
 * docs/inventory.md's table of keys is the schema's: made from it (src/inventory/reference.ts), and
 * this fails whenever the two differ, so the reference cannot drift from what the loader takes.
 */
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { inventoryReference, REFERENCE_BEGIN, REFERENCE_END } from '../../src/inventory/reference.js';

describe("the inventory reference's table of keys", () => {
  it('is the one the schema makes (run npm run docs:reference after changing the schema)', () => {
    const page = fs.readFileSync('docs/inventory.md', 'utf8');
    const block = page.slice(page.indexOf(REFERENCE_BEGIN), page.indexOf(REFERENCE_END) + REFERENCE_END.length);
    const version = (JSON.parse(fs.readFileSync('package.json', 'utf8')) as { version: string }).version;
    expect(block).toBe(inventoryReference(version));
  });

  it('names every key of every section, groups and ranges included', () => {
    const table = inventoryReference('0');
    for (const key of ['ssh.proxyJump', 'masters[].node', 'nodes[].group', 'nodes[].hosts', 'lb.impl', 'kubeLb.check.interval', 'build.store', 'vip.hosts', 'timeouts.build']) {
      expect([key, table.includes(`| \`${key}\` |`)]).toEqual([key, true]);
    }
  });
});
