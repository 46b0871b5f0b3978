// npm run build:kube-lb: kube-lb as one executable with no Node.js needed on the host (the same
// build deploy makes when a node runs kube-lb). Copies it to dist/kube-lb/kube-lb and prints
// its path, size and sha256 as JSON.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { ensureKubeLb } = await import(path.join(root, 'dist', 'build', 'kube-lb.js'));
const built = await ensureKubeLb((line) => process.stderr.write(`${line}\n`));
const out = path.join(root, 'dist', 'kube-lb');
fs.mkdirSync(out, { recursive: true });
const exe = path.join(out, 'kube-lb');
fs.rmSync(exe, { force: true });
fs.copyFileSync(built.path, exe);
fs.chmodSync(exe, 0o755);
console.log(JSON.stringify({ path: path.relative(process.cwd(), exe), bytes: built.size, sha256: built.sha256, version: built.version, cached: built.cached }));
