import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { inject } from 'vitest';
import { SshConnection, type SshTarget } from '../../src/connect/ssh.js';

export interface LabInfo {
  dir: string;
  inventory: string;
  nodes: { name: string; address: string }[];
  masters: { name: string; address: string; port: number }[];
}

declare module 'vitest' {
  export interface ProvidedContext {
    lab: LabInfo;
  }
}

export function lab(): LabInfo & { identityFile: string; knownHosts: string; caPem: string } {
  const info = inject('lab');
  return {
    ...info,
    identityFile: path.join(info.dir, 'ssh', 'id_ed25519'),
    knownHosts: path.join(info.dir, 'known_hosts'),
    caPem: fs.readFileSync(path.join(info.dir, 'pki', 'ca.crt'), 'utf8'),
  };
}

export function nodeTarget(node: { name: string; address: string }, overrides: Partial<SshTarget> = {}): SshTarget {
  const l = lab();
  return {
    name: node.name,
    address: node.address,
    port: 22,
    user: 'root',
    identityFile: l.identityFile,
    knownHostsFile: l.knownHosts,
    strictHostKeyChecking: 'yes',
    ...overrides,
  };
}

export async function withNode<T>(node: { name: string; address: string }, fn: (c: SshConnection) => Promise<T>): Promise<T> {
  const c = await SshConnection.open(nodeTarget(node));
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

let scratch: string | undefined;

/** A folder for a test run's own files (inventory variants, caches): never the lab's folder, which lab down owns. */
export function scratchDir(): string {
  scratch ??= fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-test-'));
  return scratch;
}
