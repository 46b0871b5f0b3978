/**
 * The inventory's files on this machine, checked when it is loaded rather than when first used: a
 * CA read only by verify would be found missing after the change is live, an identity file only
 * at each node's login (exit 3, once per node). Each problem is a diagnostic at the field's path.
 *
 * - tls.caFile: a readable regular file of PEM certificates, each one parsing;
 * - tls.clientCertFile: the same; tls.clientKeyFile: a private key Node can read (a warning when
 *   others may read it);
 * - build.store, when a folder here: one this user may write to and others may not (build/store.ts);
 * - ssh.identityFile (top level, nodes[], masters[]): a readable regular file, not readable by
 *   others when it is ours (OpenSSH's rule, which the key loader applies too: such a key is refused).
 *   A path with ssh_config tokens (%h, %r...) is checked once it is expanded, per host (deploy.ts).
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import fs from 'node:fs/promises';
import { storeProblem } from '../build/store.js';
import { credentialsOf } from '../cluster/kubeconfig-client.js';
import type { UsageError } from '../errors.js';
import type { Diagnostic, InventoryPath } from './diagnostics.js';
import { parseStore, type Inventory } from './schema.js';

/** Far above any CA bundle or key: a larger file is not the one meant. */
const MAX_FILE_BYTES = 1024 * 1024;

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

type Read = { text: string; mode: number; uid: number } | { problem: string };

/** The file's text, or why it cannot be used (missing, unreadable, not a regular file, too large). */
async function readLocal(file: string): Promise<Read> {
  let st;
  try {
    st = await fs.stat(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return { problem: code === 'ENOENT' ? `${file} does not exist` : `${file} cannot be read (${code})` };
  }
  if (!st.isFile()) return { problem: `${file} is not a regular file${st.isDirectory() ? ' (a directory)' : ''}` };
  if (st.size > MAX_FILE_BYTES) return { problem: `${file} is over ${MAX_FILE_BYTES / 1024 / 1024} MiB: is this the right file?` };
  try {
    return { text: await fs.readFile(file, 'utf8'), mode: st.mode, uid: st.uid };
  } catch (e) {
    return { problem: `${file} cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})` };
  }
}

/** Why a PEM file of certificates is not one: none in it, or one that does not parse. */
export function certificatesProblem(text: string): string | undefined {
  const blocks = text.match(PEM_CERT) ?? [];
  if (!blocks.length) return 'holds no PEM certificate (-----BEGIN CERTIFICATE-----)';
  for (const [i, pem] of blocks.entries()) {
    try {
      new X509Certificate(pem);
    } catch (e) {
      return `certificate ${i + 1} of ${blocks.length} does not parse: ${(e as Error).message}`;
    }
  }
  return undefined;
}

const tooOpen = (r: { mode: number; uid: number }) => {
  const uid = process.getuid?.();
  return uid !== undefined && r.uid === uid && (r.mode & 0o077) !== 0;
};
const modeText = (mode: number) => (mode & 0o777).toString(8).padStart(4, '0');

/** Every problem with the inventory's local files; paths already resolved (load.ts resolvePaths). */
export async function checkLocalFiles(inv: Inventory): Promise<Diagnostic[]> {
  const out: Diagnostic[] = [];
  const err = (path: InventoryPath, message: string) => out.push({ severity: 'error', path, message });
  const warn = (path: InventoryPath, message: string) => out.push({ severity: 'warning', path, message });

  const certs = async (path: InventoryPath, file: string | undefined, what: string) => {
    if (!file) return;
    const r = await readLocal(file);
    if ('problem' in r) return err(path, `${r.problem}: point it at ${what}, relative to the inventory file`);
    const problem = certificatesProblem(r.text);
    if (problem) err(path, `${file} ${problem}: use the PEM file of ${what}`);
  };
  await certs(['tls', 'caFile'], inv.tls.caFile, "the cluster CA (the apiservers' issuer, e.g. /etc/kubernetes/pki/ca.crt)");
  await certs(['tls', 'clientCertFile'], inv.tls.clientCertFile, 'a client certificate the apiservers accept');

  if (inv.tls.clientKeyFile) {
    const path = ['tls', 'clientKeyFile'];
    const r = await readLocal(inv.tls.clientKeyFile);
    if ('problem' in r) err(path, `${r.problem}: point it at the private key of tls.clientCertFile, relative to the inventory file`);
    else {
      try {
        createPrivateKey(r.text);
        if (tooOpen(r)) warn(path, `${inv.tls.clientKeyFile} is readable by others (mode ${modeText(r.mode)}): chmod 600 ${inv.tls.clientKeyFile}`);
      } catch (e) {
        err(path, `${inv.tls.clientKeyFile} is not a private key k8s-ha can read (${(e as Error).message}): use the unencrypted PEM key of tls.clientCertFile`);
      }
    }
  }

  // A build node's folder (HOST:PATH) is checked once the run reaches it.
  if (inv.build.store && !parseStore(inv.build.store).host) {
    const problem = await storeProblem(inv.build.store);
    if (problem) err(['build', 'store'], problem);
  }

  if (inv.cluster) {
    const problem = await kubeconfigProblem(inv.cluster.kubeconfig);
    if (problem) err(['cluster', 'kubeconfig'], problem);
  }

  const identities: [InventoryPath, string | undefined][] = [
    [['ssh', 'identityFile'], inv.ssh.identityFile],
    ...inv.nodes.map((n, i): [InventoryPath, string | undefined] => [['nodes', i, 'ssh', 'identityFile'], n.ssh?.identityFile]),
    ...inv.masters.map((m, i): [InventoryPath, string | undefined] => [['masters', i, 'ssh', 'identityFile'], m.ssh?.identityFile]),
  ];
  for (const [path, file] of identities) {
    if (!file || file.includes('%')) continue;
    const problem = await identityFileProblem(file);
    if (problem) err(path, problem);
  }
  return out;
}

/** Why a kubeconfig cannot be used to ask the cluster: unreadable, or no credentials k8s-ha can use (kubeconfig-client.ts). */
export async function kubeconfigProblem(file: string): Promise<string | undefined> {
  const r = await readLocal(file);
  if ('problem' in r) return `${r.problem}: point it at a kubeconfig allowed to list endpointslices in default (kube-proxy's, or an admin's)`;
  try {
    credentialsOf(r.text, file);
    return undefined;
  } catch (e) {
    return `${(e as Error).message}${(e as UsageError).hint ? `: ${(e as UsageError).hint}` : ''}`;
  }
}

/** Why an identity file cannot be logged in with: missing, unreadable, or open to others (OpenSSH refuses it). */
export async function identityFileProblem(file: string, from: 'inventory' | 'flag' = 'inventory'): Promise<string | undefined> {
  const r = await readLocal(file);
  if ('problem' in r) return `${r.problem}: point it at the private key to log in with${from === 'inventory' ? ' (relative to the inventory file, ~ for your home)' : ''}, or leave it out to use ssh-agent and ~/.ssh/id_*`;
  if (tooOpen(r)) return `${file} is readable by others (mode ${modeText(r.mode)}): OpenSSH and k8s-ha refuse such a key; chmod 600 ${file}`;
  return undefined;
}
