/**
 * The health checks' client certificate: tls.clientCertFile and tls.clientKeyFile, files on the
 * controller. verify and status present it from here; deploy ships it (certificate and key in one
 * PEM, as haproxy's `crt` reads it) to every node and VIP host whose balancer checks /readyz, so
 * the checks still pass on an apiserver run with --anonymous-auth=false.
 *
 * The key is a secret: the file is rendered only here, installed 0600 (0640 for kube-lb's group),
 * never diffed, never read back from a host, and no message quotes its content.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import { UsageError } from '../errors.js';
import type { Inventory } from '../inventory/schema.js';
import { packageDoc } from '../util/paths.js';

/**
 * Groups whose members pass every authorization check: a certificate of theirs copied to every node
 * would hand the whole cluster to anyone with root on one node. kubeadm's admin.conf is in one.
 */
export const ADMIN_GROUPS = ['system:masters', 'kubeadm:cluster-admins'] as const;

/** Where each balancer's copy goes on the host, beside its config. */
export const CLIENT_PEM = {
  kubeHaproxy: '/etc/haproxy/kube-haproxy-client.pem',
  vip: '/etc/haproxy/k8s-ha-client.pem',
  kubeLb: (prefix: string) => `${prefix}/conf/kube-lb-client.pem`,
} as const;

const read = (what: string, file: string): string => {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read ${what} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, {
      hint: `point ${what} at a PEM file on this machine, relative to the inventory file`,
    });
  }
};

/** The subject's organizations (the user's groups, to Kubernetes), from a certificate's subject text. */
export function subjectGroups(subject: string): string[] {
  return subject
    .split('\n')
    .filter((l) => l.startsWith('O='))
    .map((l) => l.slice(2));
}

// Read and checked once per inventory: every host gets the same file.
const pems = new WeakMap<Inventory, string | undefined>();

/**
 * Certificate then key, one PEM; undefined without tls.clientCertFile. Refused here (exit 2, before
 * any connection) when a file is unreadable, holds no PEM, the key is not the certificate's, or the
 * certificate is an administrator's. No message says what the files hold.
 */
export function clientPem(inv: Inventory): string | undefined {
  const t = inv.tls;
  if (!t.clientCertFile !== !t.clientKeyFile) {
    throw new UsageError(`tls.${t.clientCertFile ? 'clientCertFile' : 'clientKeyFile'} is set without tls.${t.clientCertFile ? 'clientKeyFile' : 'clientCertFile'}`, {
      hint: 'set both, the certificate and its key, or neither',
    });
  }
  if (!t.clientCertFile || !t.clientKeyFile) return undefined;
  if (pems.has(inv)) return pems.get(inv);
  const certText = read('tls.clientCertFile', t.clientCertFile);
  const keyText = read('tls.clientKeyFile', t.clientKeyFile);
  const certPem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(certText)?.[0];
  if (!certPem) throw new UsageError(`tls.clientCertFile ${t.clientCertFile} holds no PEM certificate`, { hint: 'use the PEM file of the health checks\' client certificate' });
  let cert: crypto.X509Certificate;
  let key: crypto.KeyObject;
  try {
    cert = new crypto.X509Certificate(certPem);
  } catch {
    throw new UsageError(`tls.clientCertFile ${t.clientCertFile}: its certificate cannot be parsed`, { hint: 'use a PEM X.509 certificate' });
  }
  try {
    key = crypto.createPrivateKey(keyText);
  } catch {
    // Not the library's message: it could quote what it failed to parse.
    throw new UsageError(`tls.clientKeyFile ${t.clientKeyFile} holds no unencrypted PEM private key`, { hint: 'use the PEM private key of tls.clientCertFile, without a passphrase' });
  }
  if (!cert.checkPrivateKey(key)) {
    throw new UsageError(`tls.clientKeyFile ${t.clientKeyFile} is not the key of the certificate in ${t.clientCertFile}`, { hint: 'name the key that belongs to tls.clientCertFile' });
  }
  const admin = subjectGroups(cert.subject).find((g) => (ADMIN_GROUPS as readonly string[]).includes(g));
  if (admin) {
    throw new UsageError(`tls.clientCertFile ${t.clientCertFile} is a certificate of the group ${admin} (an administrator's): k8s-ha copies it to every node and VIP host`, {
      hint: `use a certificate whose user may only get /readyz and /livez (${packageDoc('docs', 'health-checks.md')})`,
    });
  }
  const pem = certText.trim() + '\n' + key.export({ type: 'pkcs8', format: 'pem' }).toString().trim() + '\n';
  pems.set(inv, pem);
  return pem;
}

/** The file as a host gets it: the PEM, or a line saying there is none (the file is written either way). */
export function renderClientPem(inv: Inventory): string {
  return clientPem(inv) ?? '# no client certificate: tls.clientCertFile and tls.clientKeyFile are not set\n';
}

/**
 * A 401 from /readyz, in words a user can act on: the apiserver wants a client identity (anonymous
 * auth off) and has none, or does not accept the one it got.
 */
export function refusedReadyz(inv: Pick<Inventory, 'tls'>, status: number): string | undefined {
  if (status === 401) {
    return inv.tls.clientCertFile
      ? `/readyz refused the client certificate of tls.clientCertFile (401): it must be signed by the apiservers' client CA`
      : 'anonymous /readyz refused (401): set tls.clientCertFile/clientKeyFile';
  }
  if (status === 403) {
    return inv.tls.clientCertFile
      ? `/readyz forbidden (403): the user of tls.clientCertFile may not get /readyz (bind it to system:public-info-viewer)`
      : 'anonymous /readyz forbidden (403): set tls.clientCertFile/clientKeyFile';
  }
  return undefined;
}
