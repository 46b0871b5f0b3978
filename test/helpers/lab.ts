import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { inject } from 'vitest';
import { SshConnection, type SshTarget } from '../../src/connect/ssh.js';
import { run } from '../../src/util/exec.js';
import { k8sha } from './cli.js';

export interface LabInfo {
  dir: string;
  inventory: string;
  /** The same lab, every master, node and the mirror by its IPv6 address. */
  inventory6: string;
  nodes: { name: string; address: string; address6: string }[];
  masters: { name: string; address: string; address6: string; port: number }[];
  bastion: { name: string; address: string };
  /** The same lab's inventory, every node through the bastion. */
  bastionInventory: string;
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

/** As withNode, on a node of a lab of a test's own (not the shared one): its key and known_hosts are in `dir`. */
export async function withNodeOfLab<T>(dir: string, node: { name: string; address: string }, fn: (c: SshConnection) => Promise<T>): Promise<T> {
  const c = await SshConnection.open({
    name: node.name,
    address: node.address,
    port: 22,
    user: 'root',
    identityFile: path.join(dir, 'ssh', 'id_ed25519'),
    knownHostsFile: path.join(dir, 'known_hosts'),
    strictHostKeyChecking: 'yes',
  });
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

/** Polls until the node's systemd says running over SSH (a booting host: sshd refuses, then systemd starts units). */
export async function untilBooted(node: { name: string; address: string }, limitMs = 60_000): Promise<void> {
  const t0 = Date.now();
  for (;;) {
    const state = await withNode(node, (c) => c.exec('systemctl is-system-running --wait')).then((r) => r.stdout.trim(), () => 'no ssh');
    if (state === 'running' || state === 'degraded') return;
    if (Date.now() - t0 > limitMs) throw new Error(`${node.name} did not boot within ${limitMs / 1000} s (${state})`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

let scratch: string | undefined;

/** A folder for a test run's own files (inventory variants, caches): never the lab's folder, which lab down owns. */
export function scratchDir(): string {
  scratch ??= fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-test-'));
  return scratch;
}

/** The scratch folder goes once its file's tests are done (test/integration/setup.ts): a suite run leaves none in /tmp. */
export function removeScratch(): void {
  if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
  scratch = undefined;
}

/** The Docker id of one of the lab's containers (node-1, master-2, bastion...). */
export async function labContainer(service: string): Promise<string> {
  const r = await run('docker', ['ps', '-aq', '--filter', `label=io.k8s-ha.lab.dir=${lab().dir}`, '--filter', `name=-${service}$`]);
  const id = r.stdout.trim();
  if (!id || id.includes('\n')) throw new Error(`no single lab container named ${service}: "${id}"`);
  return id;
}

/**
 * Container ids as last found: a test that polls hosts several times a second would otherwise run
 * `docker ps` before every `docker exec`, which on a 2-core machine takes the CPU from what it watches.
 * A host stopped and started keeps its id; one made anew (lab up) is looked up again.
 */
const ids = new Map<string, string>();

/** Run a shell command in a lab container as root (not over SSH: for checks while SSH is what is tested). */
export async function inContainer(service: string, script: string): Promise<string> {
  const exec = async (id: string) => run('docker', ['exec', id, 'sh', '-c', script]);
  let id = ids.get(service) ?? (await labContainer(service));
  let r = await exec(id);
  if (r.code !== 0 && /No such container/i.test(r.stderr)) {
    id = await labContainer(service);
    r = await exec(id);
  }
  ids.set(service, id);
  if (r.code !== 0) throw new Error(`${service}: ${script}: exit ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/** Whatever a test did to them: every master thawed, its kube-apiserver started and ready, as the other files expect. */
export async function restoreMasters(): Promise<void> {
  // The masters at once (none of these actions writes lab.json), each one's actions in order.
  await Promise.all(
    lab().masters.map(async (m) => {
      for (const action of ['thaw', 'start', 'ready']) await k8sha(['lab', 'master', '--dir', lab().dir, m.name, action]);
    }),
  );
}

/** kube-lb's own /metrics, from inside the node. */
export async function kubeLbMetrics(c: SshConnection): Promise<string> {
  const s = await c.connectFromHost('127.0.0.1', 8444);
  return new Promise((resolve, reject) => {
    let out = '';
    s.on('data', (b: Buffer) => (out += b.toString()));
    s.on('end', () => resolve(out));
    s.on('error', reject);
    s.write('GET /metrics HTTP/1.0\r\n\r\n');
  });
}
