// `npm pack` and `npm publish`: the package carries the lock as npm-shrinkwrap.json (which npm honours
// when it installs a package, unlike package-lock.json), so an installed copy runs the dependency
// versions this one was tested with, and bundles the same kube-lb: the same bytes, the same identity,
// nothing to change on kube-lb nodes whichever copy deploys. Before: the lock copied, and dist checked
// to be there (prepare built it); after: the copy removed.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const shrinkwrap = path.join(root, 'npm-shrinkwrap.json');
if (process.argv[2] === 'before') {
  for (const f of ['dist/cli/main.js', 'dist/proxy/cli.js', 'dist/build/runtime-pins.json']) {
    if (!fs.existsSync(path.join(root, f))) {
      console.error(`pack: ${f} is missing: run npm run build first`);
      process.exit(1);
    }
  }
  fs.copyFileSync(path.join(root, 'package-lock.json'), shrinkwrap);
} else {
  fs.rmSync(shrinkwrap, { force: true });
}
