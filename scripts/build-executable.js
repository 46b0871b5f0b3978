// npm run build:executable [-- --arch x86_64,aarch64]: k8s-ha as one file per CPU architecture,
// needing no Node.js: the CLI compiled onto the Bun this package pins (as kube-lb is), with the
// files it reads (package.json, the playbooks, kube-lb's bundle and the runtime pins) inside it.
// Writes dist/executable/k8s-ha-linux-ARCH and prints each one's path, size and sha256 as JSON.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = path.join(root, 'dist');
const { pinnedBun, runtimeFor, BUN_PACKAGES } = await import(path.join(dist, 'build', 'kube-lb.js'));
const archArg = process.argv.indexOf('--arch');
const own = pinnedBun();
const arches = archArg > 0 ? process.argv[archArg + 1].split(',') : [own.arch];

// What the CLI reads from its package, by the path it asks for (src/util/paths.ts packageFile).
const files = ['package.json', 'dist/build/runtime-pins.json', 'dist/proxy/kube-lb.cjs', ...fs.readdirSync(path.join(root, 'playbooks')).filter((f) => f.endsWith('.yaml')).map((f) => `playbooks/${f}`)];
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-executable-'));
try {
  const entry = path.join(work, 'entry.mjs');
  fs.writeFileSync(
    entry,
    [
      `import { registerEmbedded } from ${JSON.stringify(path.join(dist, 'util', 'paths.js'))};`,
      ...files.map((f, i) => `import f${i} from ${JSON.stringify(path.join(root, f))} with { type: 'file' };`),
      `registerEmbedded({ ${files.map((f, i) => `${JSON.stringify(f)}: f${i}`).join(', ')} });`,
      // Loaded once the files are known: main reads package.json as it loads.
      `const { main } = await import(${JSON.stringify(path.join(dist, 'cli', 'main.js'))});`,
      'process.exitCode = await main(process.argv.slice(2));',
      '',
    ].join('\n'),
  );
  const out = path.join(dist, 'executable');
  fs.mkdirSync(out, { recursive: true });
  const made = [];
  for (const arch of arches) {
    const pkg = Object.values(BUN_PACKAGES).find((p) => p.arch === arch);
    if (!pkg) throw new Error(`no Bun package for ${arch}: ${Object.values(BUN_PACKAGES).map((p) => p.arch).join(', ')}`);
    const runtime = await runtimeFor(arch, work, (line) => process.stderr.write(`${line}\n`));
    const exe = path.join(out, `k8s-ha-linux-${arch}`);
    fs.rmSync(exe, { force: true });
    const args = ['build', '--compile', `--target=${pkg.target}`, `--compile-executable-path=${runtime.binary}`, '--no-compile-autoload-dotenv', '--no-compile-autoload-bunfig', entry, '--outfile', exe];
    const r = spawnSync(own.binary, args, { cwd: work, encoding: 'utf8', env: { ...process.env, DO_NOT_TRACK: '1' } });
    if (r.status !== 0) throw new Error(`bun build --compile for ${arch} failed:\n${r.stderr || r.stdout}`);
    const bytes = fs.readFileSync(exe);
    made.push({ arch, path: path.relative(process.cwd(), exe), bytes: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex') });
  }
  console.log(JSON.stringify({ executables: made }));
} finally {
  fs.rmSync(work, { recursive: true, force: true });
}
