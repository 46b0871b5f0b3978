// Part of `npm run build`: kube-lb's runtime pins, from package.json and package-lock.json into
// dist/build/runtime-pins.json, so a k8s-ha run knows, for every architecture, which Bun package it
// compiles kube-lb onto, where npm serves it and its sha512 (a machine without that architecture's
// package installed downloads it, verified). Bumping Bun is one npm command; this follows the lock.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BUN_PACKAGES } from '../dist/build/kube-lb.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
const lock = JSON.parse(fs.readFileSync(path.join(root, 'package-lock.json'), 'utf8'));
const packages = {};
for (const p of Object.values(BUN_PACKAGES)) {
  const arch = p.arch;
  const version = pkg.optionalDependencies?.[p.pkg];
  const locked = lock.packages?.[`node_modules/${p.pkg}`];
  if (!version || !locked?.integrity || locked.version !== version) {
    console.error(`runtime-pins: ${p.pkg} must be pinned in package.json's optionalDependencies and locked in package-lock.json (found ${version ?? 'no pin'}, lock ${locked?.version ?? 'none'})`);
    process.exit(1);
  }
  const tarball = locked.resolved ?? `https://registry.npmjs.org/${p.pkg}/-/${p.pkg.split('/')[1]}-${version}.tgz`;
  packages[arch] = { ...p, version, integrity: locked.integrity, tarball };
}
const versions = new Set(Object.values(packages).map((p) => p.version));
if (versions.size !== 1) {
  console.error(`runtime-pins: every architecture's Bun must be the same version, found ${[...versions].join(', ')}`);
  process.exit(1);
}
fs.mkdirSync(path.join(root, 'dist', 'build'), { recursive: true });
fs.writeFileSync(path.join(root, 'dist', 'build', 'runtime-pins.json'), JSON.stringify({ version: [...versions][0], packages }, null, 2) + '\n');
