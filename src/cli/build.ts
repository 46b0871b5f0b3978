/** `k8s-ha build -i inventory.yaml`: build (or find in the cache) what the inventory's nodes install, touching no node. */
import { Command } from 'commander';
import { table } from './ui.js';
import { printable } from '../util/printable.js';
import { EXIT_CODES, inventoryOption, JSON_SCHEMA_VERSION, privateKeyOption, traceIf, userOption, verboseOption } from './flags.js';

export interface ArtifactLine {
  /** nginx, kube-lb, kube-nginx-image */
  kind: string;
  /** The CPU architecture it is for, as uname -m says it. */
  arch: string | null;
  /** Where the controller keeps it; null for what exists only in memory (the image, made from nginx on each run). */
  path: string | null;
  sha256: string;
  /** What it was meant to be: a hash of its inputs and toolchain (`sha256:...`); null for an image. */
  identity: string | null;
  /** Where it is in the shared store (build.store); null without one. */
  stored: string | null;
  /** An image's name:tag. */
  ref?: string;
  describe: string;
}

export function buildCommand(): Command {
  return new Command('build')
    .description("build the artifacts the inventory's nodes install (nginx, kube-lb, the nginx image) into the cache and the store (build.store), or find them there, and print each one's kind, architecture, path and sha256; no node is touched (a build.host node is only built on)")
    .addOption(inventoryOption())
    .addOption(userOption())
    .addOption(privateKeyOption())
    .addOption(verboseOption())
    .option('--json', 'JSON on stdout: {"artifacts": [{"kind", "arch", "path", "sha256", "identity", "stored"}]}')
    .addHelpText(
      'after',
      `
Examples:
  k8s-ha build -i inventory.yaml                       build (or find) what the nodes install; touches no node
  k8s-ha build -i inventory.yaml --json | jq -r '.artifacts[] | "\\(.kind) \\(.arch) \\(.sha256)"'
${EXIT_CODES}`,
    )
    .action(async (o: { inventory: string; json?: boolean; user?: string; privateKey?: string; verbose?: boolean }) => {
      await traceIf(o.verbose);
      // Loaded only when the command runs, so `k8s-ha --help` stays quick.
      const { loadSetup, buildArtifacts } = await import('../engine/deploy.js');
      const setup = await loadSetup({ inventoryFile: o.inventory, concurrency: 1, acceptNewHostKeys: false, sshUser: o.user, identityFile: o.privateKey });
      const say = (line: string) => process.stderr.write(`${printable(line)}\n`);
      const builds = await buildArtifacts(setup, o.json ? () => undefined : say);
      const keys = Object.keys(builds.artifacts);
      // One line per artifact and architecture: `kube-lb` is also the plain name of the first `kube-lb@ARCH`.
      const artifacts: ArtifactLine[] = Object.entries(builds.artifacts)
        .filter(([key, a]) => !a.pull && !keys.some((k) => k.startsWith(`${key}@`)))
        .map(([key, a]) => ({ kind: key.split('@')[0]!, arch: a.arch ?? null, path: a.path ?? null, sha256: a.sha256, identity: a.identity ?? null, stored: a.stored ?? null, ...(a.ref ? { ref: a.ref } : {}), describe: a.describe }));
      if (o.json) return void process.stdout.write(JSON.stringify({ schemaVersion: JSON_SCHEMA_VERSION, ok: true, artifacts, summary: builds.summary }) + '\n');
      process.stdout.write(
        table([
          ['KIND', 'ARCH', 'SHA256', 'PATH'],
          ...artifacts.map((a) => [a.kind, a.arch ?? '-', a.sha256, a.stored ?? a.path ?? (a.ref ? `(image ${a.ref}, made on each run)` : '-')]),
        ]) + '\n',
      );
    });
}
