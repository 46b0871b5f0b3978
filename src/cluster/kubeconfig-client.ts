/**
 * A kubeconfig read for its credentials, to ask the cluster itself (its control plane's endpoints):
 * the current context's cluster (its CA, tls-server-name) and user (a client certificate and key, or
 * a bearer token), each inline (`*-data`) or from a file relative to the kubeconfig's folder, as
 * kubectl reads them. Its `server` is not dialed: a node's kubeconfig often names 127.0.0.1:8443, so
 * the caller dials the inventory's masters in turn with these credentials. What cannot be used here
 * (an exec plugin, an auth provider, no credentials at all) is refused with the path that says so.
 */
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { UsageError } from '../errors.js';

export interface ClusterCredentials {
  /** The kubeconfig the credentials come from (for errors). */
  file: string;
  server: string;
  /** PEM of the CA the apiservers' certificates chain to; undefined: the system's CAs. */
  ca?: string;
  /** The name their certificates must be valid for, when the kubeconfig sets one. */
  tlsServerName?: string;
  cert?: string;
  key?: string;
  token?: string;
}

type Json = Record<string, unknown>;
const obj = (v: unknown): Json => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Json) : {});

/** The named entry of a kubeconfig list (`clusters`, `users`, `contexts`), or undefined. */
function named(doc: Json, list: string, name: string): Json | undefined {
  const found = (Array.isArray(doc[list]) ? (doc[list] as unknown[]) : []).map(obj).find((e) => e.name === name);
  return found ? obj(found[list.slice(0, -1)]) : undefined;
}

/** Pure: the credentials of `text`, the kubeconfig at `file` (relative paths in it are read from its folder by `read`). */
export function credentialsOf(text: string, file: string, read: (p: string) => string = (p) => fs.readFileSync(p, 'utf8')): ClusterCredentials {
  const bad = (where: string, what: string, fix: string) => new UsageError(`${file}: ${where}: ${what}`, { hint: fix });
  let doc: Json;
  try {
    doc = obj(YAML.parse(text));
  } catch (e) {
    throw bad('', `not YAML (${(e as Error).message.split('\n')[0]})`, 'give a kubeconfig as kubectl reads it');
  }
  const current = doc['current-context'];
  if (typeof current !== 'string' || !current) throw bad('current-context', 'is not set', 'set it (kubectl config use-context NAME --kubeconfig FILE)');
  const ctx = named(doc, 'contexts', current);
  if (!ctx) throw bad('contexts', `has no context named ${current} (current-context)`, 'name an existing context in current-context');
  const clusterName = String(ctx.cluster ?? '');
  const userName = String(ctx.user ?? '');
  const cluster = named(doc, 'clusters', clusterName);
  if (!cluster) throw bad('clusters', `has no cluster named ${clusterName} (context ${current})`, 'add the cluster, or point the context at one');
  const user = named(doc, 'users', userName);
  if (!user) throw bad('users', `has no user named ${userName} (context ${current})`, 'add the user, or point the context at one');
  const dir = path.dirname(path.resolve(file));
  const fromFile = (where: string, p: unknown): string => {
    const full = path.resolve(dir, String(p));
    try {
      return read(full);
    } catch (e) {
      throw bad(where, `cannot read ${full} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, 'fix the path, or put the content inline (the -data form)');
    }
  };
  const pem = (where: string, inline: unknown, p: unknown): string | undefined => {
    if (typeof inline === 'string' && inline) return Buffer.from(inline, 'base64').toString('utf8');
    if (typeof p === 'string' && p) return fromFile(where, p);
    return undefined;
  };
  if (cluster['insecure-skip-tls-verify'] === true) {
    throw bad(`clusters[${clusterName}].insecure-skip-tls-verify`, 'is true: the apiservers would not be authenticated', 'set certificate-authority (or -data) to the cluster CA instead');
  }
  if (user.exec || user['auth-provider']) {
    throw bad(`users[${userName}]`, `uses ${user.exec ? 'an exec plugin' : 'an auth provider'}, which k8s-ha does not run`, 'use a kubeconfig with a client certificate or a token (e.g. the node\'s kube-proxy kubeconfig)');
  }
  const cert = pem(`users[${userName}].client-certificate`, user['client-certificate-data'], user['client-certificate']);
  const key = pem(`users[${userName}].client-key`, user['client-key-data'], user['client-key']);
  const token = typeof user.token === 'string' && user.token ? user.token : typeof user.tokenFile === 'string' ? fromFile(`users[${userName}].tokenFile`, user.tokenFile).trim() : undefined;
  if (!!cert !== !!key) throw bad(`users[${userName}]`, `has a client ${cert ? 'certificate without its key' : 'key without its certificate'}`, 'give both, or a token');
  if (!cert && !token) throw bad(`users[${userName}]`, 'has no client certificate and no token', 'use a kubeconfig with credentials (the apiservers refuse anonymous lists)');
  return {
    file,
    server: String(cluster.server ?? ''),
    ca: pem(`clusters[${clusterName}].certificate-authority`, cluster['certificate-authority-data'], cluster['certificate-authority']),
    ...(typeof cluster['tls-server-name'] === 'string' ? { tlsServerName: cluster['tls-server-name'] } : {}),
    ...(cert ? { cert, key } : {}),
    ...(token ? { token } : {}),
  };
}

/** Pure: what the current context's cluster and user take from files rather than inline (`users[u].client-certificate`...). */
export function fileReferences(text: string): string[] {
  const doc = obj(YAML.parse(text));
  const ctx = named(doc, 'contexts', String(doc['current-context'] ?? '')) ?? {};
  const cluster = named(doc, 'clusters', String(ctx.cluster ?? '')) ?? {};
  const user = named(doc, 'users', String(ctx.user ?? '')) ?? {};
  return [
    ...(cluster['certificate-authority'] && !cluster['certificate-authority-data'] ? [`clusters[${String(ctx.cluster)}].certificate-authority`] : []),
    ...(['client-certificate', 'client-key', 'tokenFile'] as const).filter((k) => user[k] && !user[`${k}-data`] && !(k === 'tokenFile' && user.token)).map((k) => `users[${String(ctx.user)}].${k}`),
  ];
}
