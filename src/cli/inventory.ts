/** `k8s-ha inventory import`: read, convert, check the result as a deploy would read it, print or write it. */
import fs from 'node:fs/promises';
import { UsageError } from '../errors.js';
import { AnsibleImportError, importAnsible } from '../inventory/ansible.js';
import { formatDiagnostic } from '../inventory/diagnostics.js';
import { parseInventory } from '../inventory/load.js';
import { printable } from '../util/printable.js';

export async function importInventory(file: string, out: string | undefined): Promise<void> {
  const text = await fs.readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => {
    throw new UsageError(`cannot read ${file}: ${e.code === 'ENOENT' ? 'no such file' : e.code}`, { hint: "name the Ansible inventory (kubespray's inventory/CLUSTER/hosts.yaml or hosts.ini)" });
  });
  let imported;
  try {
    imported = importAnsible(text, file);
  } catch (e) {
    if (e instanceof AnsibleImportError) throw new UsageError(e.message, { hint: 'an Ansible inventory in INI or YAML, with a group of masters (kube_control_plane) and one of nodes (kube_node)' });
    throw e;
  }
  // What it made must load: every host checked as a deploy would, before it is handed over.
  const problems = parseInventory(imported.text).diagnostics.filter((d) => d.severity === 'error');
  if (problems.length) {
    throw new UsageError(`the inventory made from ${file} does not load:\n${problems.map((d) => `  ${formatDiagnostic(out ?? 'the result', d)}`).join('\n')}`, { hint: 'fix those hosts in the Ansible inventory (or in the result by hand)' });
  }
  if (out) {
    await fs.writeFile(out, imported.text, { flag: 'wx', mode: 0o644 }).catch((e: NodeJS.ErrnoException) => {
      throw new UsageError(`cannot write ${out}: ${e.code === 'EEXIST' ? 'it exists' : e.code}`, { hint: e.code === 'EEXIST' ? 'name a new file, or remove that one' : undefined });
    });
  } else process.stdout.write(imported.text);
  for (const n of imported.notes) process.stderr.write(`${printable(n)}\n`);
  if (out) process.stderr.write(`written to ${out}; next: k8s-ha deploy --check -i ${out}\n`);
}
