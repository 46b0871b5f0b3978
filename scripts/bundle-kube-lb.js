// Part of `npm run build`: kube-lb's code as one CommonJS file with its dependencies
// (dist/proxy/kube-lb.cjs), from the compiled dist/proxy/cli.js. Made here, where the package is
// built, and shipped in it: a copy installed anywhere (its dependencies laid out by npm in another
// way, no tsconfig.json beside it) compiles the very same bytes onto the pinned Bun, so it makes
// the same kube-lb, with the same identity, as this checkout. Paths in the bundle are relative to
// the package; the target is fixed, not this machine's Node.js.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = await esbuild.build({
  entryPoints: [path.join(root, 'dist', 'proxy', 'cli.js')],
  absWorkingDir: root,
  bundle: true,
  platform: 'node',
  target: 'es2022',
  format: 'cjs',
  write: false,
  logLevel: 'silent',
  legalComments: 'none',
});
fs.writeFileSync(path.join(root, 'dist', 'proxy', 'kube-lb.cjs'), out.outputFiles[0].contents);
