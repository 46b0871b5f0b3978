/**
 * kube-lb's runtime is pinned by this package, not taken from the controller: one exact Bun version for
 * every architecture, each package locked with its integrity, so `npm ci` installs the same bytes on
 * any controller and a bump moves every architecture at once.
 */
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { BUN_PACKAGES, pinnedBun } from '../../src/build/kube-lb.js';

const pkg = JSON.parse(fs.readFileSync('package.json', 'utf8')) as { optionalDependencies: Record<string, string>; dependencies: Record<string, string> };
const lock = JSON.parse(fs.readFileSync('package-lock.json', 'utf8')) as { packages: Record<string, { version?: string; integrity?: string; resolved?: string }> };

describe("kube-lb's Bun", () => {
  it('is one exact version for every architecture, each locked with its sha512', () => {
    const pins = Object.values(BUN_PACKAGES).map((p) => pkg.optionalDependencies[p.pkg]);
    expect(pins.every((v) => v !== undefined && /^\d+\.\d+\.\d+$/.test(v)), JSON.stringify(pins)).toBe(true);
    expect(new Set(pins).size).toBe(1);
    for (const p of Object.values(BUN_PACKAGES)) {
      const locked = lock.packages[`node_modules/${p.pkg}`];
      expect(locked?.version, p.pkg).toBe(pins[0]);
      expect(locked?.integrity, p.pkg).toMatch(/^sha512-/);
    }
  });

  it("is this machine's installed package, whatever Node.js runs the controller", () => {
    const bun = pinnedBun();
    expect(bun.version).toBe(pkg.optionalDependencies[BUN_PACKAGES[process.arch]!.pkg]);
    expect(fs.statSync(bun.binary).mode & 0o111).not.toBe(0);
    expect(bun.arch).toBe(process.arch === 'arm64' ? 'aarch64' : 'x86_64');
  });
});

describe("kube-lb's bundle", () => {
  it('is read from the package (made by npm run build), and a missing one is a build failure naming the file and the fix', async () => {
    const { kubeLbBundle } = await import('../../src/build/kube-lb.js');
    const err = await kubeLbBundle('x86_64', '/nonexistent/kube-lb.cjs').catch((e: Error & { hint?: string; exitCode?: number }) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/^cannot build kube-lb: reading its bundle \/nonexistent\/kube-lb\.cjs failed: ENOENT/);
    expect((err as { hint?: string }).hint).toMatch(/^run npm run build/);
    expect((err as { exitCode?: number }).exitCode).toBe(4);
  });
});
