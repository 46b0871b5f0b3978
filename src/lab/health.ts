/** Probes that tell whether the lab's hosts are really up, as a user would check them. */
import http from 'node:http';
import { ConnectError } from '../errors.js';
import { httpsGet, ProbeOversized } from '../connect/https-probe.js';
import { SshConnection, type SshTarget } from '../connect/ssh.js';
import type { LabPaths } from './files.js';
import { NGINX_SOURCE } from './sources.js';
import { APISERVER_PORT, MIRROR_PORT, type LabContainer, type MasterFault } from './topology.js';

export interface HostHealth {
  service: string;
  role: LabContainer['role'];
  address: string;
  ok: boolean;
  /** What was seen: `running`, `/readyz 200`, an error... */
  detail: string;
  /** A master partitioned or powered off on purpose, as lab.json records: not probed. */
  fault?: MasterFault;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function nodeTarget(c: LabContainer, p: LabPaths, bastion?: LabContainer): SshTarget {
  const target: SshTarget = {
    name: c.service,
    address: c.address,
    port: 22,
    user: 'root',
    identityFile: p.identityFile,
    knownHostsFile: p.knownHosts,
    strictHostKeyChecking: 'yes',
    connectTimeoutMs: 5000,
  };
  // Through the bastion the way a deploy goes: one shared bastion login, each node a channel of it.
  if (bastion) target.jump = { ...nodeTarget(bastion, p), name: `bastion ${bastion.address}`, bastion: true };
  return target;
}

const BOOTED = 'systemctl is-system-running --wait';

/**
 * Log in with the lab key under strict host key checking and wait for systemd to finish booting;
 * through `bastion` when the node is not reachable from here.
 */
export async function waitForNode(c: LabContainer, p: LabPaths, timeoutMs: number, bastion?: LabContainer): Promise<HostHealth> {
  const deadline = Date.now() + timeoutMs;
  const through = bastion ? ` (through the bastion ${bastion.address})` : '';
  let last = 'not tried';
  // At least one attempt, however short the time given (`lab status` gives none to wait).
  do {
    let conn: SshConnection | undefined;
    try {
      conn = await SshConnection.open(nodeTarget(c, p, bastion));
      const state = (await conn.exec(BOOTED)).stdout.trim();
      return { service: c.service, role: c.role, address: c.address, ok: state === 'running', detail: `systemd ${state}${through}` };
    } catch (e) {
      if (e instanceof ConnectError && e.kind !== 'unreachable') {
        return { service: c.service, role: c.role, address: c.address, ok: false, detail: e.message };
      }
      last = (e as Error).message;
      if (Date.now() + 300 < deadline) await sleep(300);
    } finally {
      conn?.close();
    }
  } while (Date.now() < deadline);
  return { service: c.service, role: c.role, address: c.address, ok: false, detail: `no SSH login${through} within ${timeoutMs / 1000} s: ${last}` };
}

/**
 * A master is up when it is a host like a node (an SSH login under strict host key checking, systemd
 * booted) and its kube-apiserver stand-in answers /readyz 200 over TLS. Always directly: a bastion
 * hides the nodes only, never the masters. Both are probed at once, within the same time.
 * `want: 'answer'`: any HTTP status will do (a master made unready on purpose is still up).
 */
export async function waitForMaster(c: LabContainer, p: LabPaths, caPem: string, timeoutMs: number, want: MasterWant = 'ready'): Promise<HostHealth> {
  const [host, api] = await Promise.all([waitForNode(c, p, timeoutMs), probeMaster(c, caPem, timeoutMs, want)]);
  return { ...host, ok: host.ok && api.ok, detail: `${host.detail}, ${api.detail}` };
}

/** What a master's /readyz must say: 200, or anything at all (the stand-in listens). */
export type MasterWant = 'ready' | 'answer';

export async function probeMaster(c: LabContainer, caPem: string, timeoutMs: number, want: MasterWant = 'ready'): Promise<HostHealth> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  do {
    try {
      const r = await httpsGet({ address: c.address, port: APISERVER_PORT }, { path: '/readyz', ca: caPem, servername: c.address, timeoutMs: 3000 });
      const ok = r.status === 200 || want === 'answer';
      if (ok || Date.now() >= deadline) return { service: c.service, role: c.role, address: c.address, ok, detail: `/readyz ${r.status}` };
      last = `/readyz ${r.status}`;
    } catch (e) {
      // A flooding /readyz (readyz-flood) is an answer all the same: the stand-in listens.
      if (e instanceof ProbeOversized && want === 'answer') return { service: c.service, role: c.role, address: c.address, ok: true, detail: e.message };
      last = (e as Error).message;
    }
    await sleep(200);
  } while (Date.now() < deadline);
  return { service: c.service, role: c.role, address: c.address, ok: false, detail: last || 'no answer' };
}

export async function probeMirror(c: LabContainer, timeoutMs: number): Promise<HostHealth> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  do {
    const r = await new Promise<{ status: number; length: string } | Error>((resolve) => {
      const req = http.request(
        { host: c.address, port: MIRROR_PORT, method: 'HEAD', path: `/${NGINX_SOURCE.file}`, timeout: 3000 },
        (res) => {
          res.resume();
          resolve({ status: res.statusCode ?? 0, length: String(res.headers['content-length'] ?? '?') });
        },
      );
      req.on('timeout', () => req.destroy(new Error('timed out')));
      req.on('error', resolve);
      req.end();
    });
    if (!(r instanceof Error) && r.status === 200) {
      return { service: c.service, role: c.role, address: c.address, ok: true, detail: `serves ${NGINX_SOURCE.file} (${r.length} bytes)` };
    }
    last = r instanceof Error ? r.message : `HTTP ${r.status}`;
    await sleep(200);
  } while (Date.now() < deadline);
  return { service: c.service, role: c.role, address: c.address, ok: false, detail: last };
}
