// npm run docs:reference: the table of keys in docs/inventory.md made again from the schema
// (src/inventory/reference.ts); a unit test fails until it is, whenever the schema changes.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { inventoryReference, REFERENCE_BEGIN, REFERENCE_END } = await import(path.join(root, 'dist', 'inventory', 'reference.js'));
const version = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).version;
const page = path.join(root, 'docs', 'inventory.md');
const text = fs.readFileSync(page, 'utf8');
const begin = text.indexOf(REFERENCE_BEGIN);
const end = text.indexOf(REFERENCE_END);
if (begin < 0 || end < begin) {
  console.error(`${page} has no generated block: put ${REFERENCE_BEGIN} and ${REFERENCE_END} where the table goes`);
  process.exit(1);
}
fs.writeFileSync(page, text.slice(0, begin) + inventoryReference(version) + text.slice(end + REFERENCE_END.length));
console.log(`${path.relative(process.cwd(), page)}: the table of keys made from the schema`);
