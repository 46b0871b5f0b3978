// npm run build:kube-lb: kube-lb as one executable with no Node.js needed on the host.
// Bundles src/proxy with esbuild, then makes a Node single executable application: a copy of
// this Node binary with the bundle injected (postject). Prints the path, size and sha256.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.join(root, 'dist', 'kube-lb');
fs.mkdirSync(out, { recursive: true });
const bundle = path.join(out, 'kube-lb.cjs');
const blob = path.join(out, 'kube-lb.blob');
const exe = path.join(out, 'kube-lb');

await esbuild.build({
  entryPoints: [path.join(root, 'src', 'proxy', 'cli.ts')],
  bundle: true,
  platform: 'node',
  target: `node${process.versions.node.split('.')[0]}`,
  format: 'cjs',
  outfile: bundle,
  logLevel: 'warning',
});
fs.writeFileSync(path.join(out, 'sea-config.json'), JSON.stringify({ main: bundle, output: blob, disableExperimentalSEAWarning: true }));
execFileSync(process.execPath, ['--experimental-sea-config', path.join(out, 'sea-config.json')], { stdio: 'inherit' });
fs.rmSync(exe, { force: true });
fs.copyFileSync(fs.realpathSync(process.execPath), exe);
execFileSync(
  process.execPath,
  [path.join(root, 'node_modules', 'postject', 'dist', 'cli.js'), exe, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2'],
  { stdio: ['ignore', 'ignore', 'inherit'] },
);
fs.chmodSync(exe, 0o755);
const sha256 = createHash('sha256').update(fs.readFileSync(exe)).digest('hex');
const version = execFileSync(exe, ['--version'], { encoding: 'utf8' }).trim();
console.log(JSON.stringify({ path: path.relative(process.cwd(), exe), bytes: fs.statSync(exe).size, sha256, version }));
