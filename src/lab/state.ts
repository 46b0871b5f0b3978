/**
 * Where a lab lives: its directory, the state file that marks it as a lab,
 * its id (derived from the directory, so `lab down` finds its containers even
 * when the state file is gone) and its subnet.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { UsageError } from '../errors.js';
import { writeFileAtomic as writeWhole } from '../util/tempdir.js';
import { type LabImages, type LabPlan, MAX_LAB_HOSTS, type MasterFault, planLab } from './topology.js';

export const STATE_FILE = 'lab.json';
export const STATE_KIND = 'k8s-ha-lab';

export interface LabState {
  kind: typeof STATE_KIND;
  version: 1;
  id: string;
  dir: string;
  nodes: number;
  masters: number;
  subnet: string;
  /** `master` is absent in labs made while masters were bare stand-ins: see planOfState. */
  images: Omit<LabImages, 'master'> & { master?: string };
  createdAt: string;
  /** A bastion host was added (`lab up --bastion`). Absent in labs made before bastions: none. */
  bastion?: boolean;
  /** The nodes are reachable only through the bastion (`--bastion` without `--keep-direct`). */
  isolated?: boolean;
  /** The nodes' Debian releases, in turn (`lab up --os`); absent: every node runs the default one. */
  os?: string[];
  /** The masters' Debian release (`lab up --masters-os`); absent: the default one. */
  mastersOs?: string;
  /** How many nodes (node-1 up) run the runtime image (`lab up --runtime N`); absent: none. */
  runtime?: number;
  /**
   * Masters partitioned or powered off (`lab master NAME partition | power-off`), by name: `lab status`
   * shows them, and `lab up` keeps them so (it partitions again a master whose container lost its qdiscs,
   * and starts no powered-off one). Absent: none.
   */
  faults?: Record<string, MasterFault>;
}

/** Everything the lab writes in its directory; `lab down` removes exactly these. */
export const LAB_FILES = [
  'lab.json',
  'inventory.yaml',
  'inventory-ipv6.yaml',
  'inventory-bastion.yaml',
  'known_hosts',
  'known_hosts-cert-authority',
  'ssh_config',
  'kubeconfig',
  'bin',
  'ssh',
  'hosts',
  'pki',
  'mirror',
] as const;

export function labId(dir: string): string {
  const abs = path.resolve(dir);
  const base = path.basename(abs).replace(/^\.+/, '').replace(/[^a-zA-Z0-9-]+/g, '-').toLowerCase() || 'lab';
  const h = createHash('sha256').update(abs).digest('hex').slice(0, 6);
  return `k8s-ha-${base}-${h}`;
}

export function checkSize(what: 'nodes' | 'masters', n: number): void {
  if (!Number.isInteger(n) || n < 1 || n > MAX_LAB_HOSTS) {
    throw new UsageError(`--${what} must be a whole number from 1 to ${MAX_LAB_HOSTS}, got ${Number.isNaN(n) ? 'not a number' : n}`, {
      hint: `for example --${what} 3`,
    });
  }
}

export async function readState(dir: string): Promise<LabState | undefined> {
  const file = path.join(dir, STATE_FILE);
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch {
    return undefined;
  }
  try {
    const s = JSON.parse(text) as LabState;
    if (s.kind === STATE_KIND) return s;
  } catch {
    /* fall through: not ours */
  }
  throw new UsageError(`${file} is not a k8s-ha lab state file`, {
    hint: `choose another --dir, or remove ${dir} if it is yours to delete`,
  });
}

/**
 * The plan of a live lab, for commands that act on its hosts (`lab status`,
 * `lab master`). A lab made while masters were bare stand-ins (no systemd, no
 * sshd: lab.json names no master image) is refused with what to run: `lab up`
 * recreates its masters from the current image and keeps everything else.
 */
export function planOfState(state: LabState, dir: string): LabPlan {
  const { master } = state.images;
  if (!master) {
    throw new UsageError(`the lab in ${dir} was made by an older k8s-ha, whose masters were not hosts (no systemd, no sshd)`, {
      hint: `run \`k8s-ha lab up --dir ${dir}\` to recreate its masters (the nodes stay as they are)`,
    });
  }
  return planLab({ ...state, images: { ...state.images, master }, bastion: !!state.bastion });
}

/**
 * A directory a lab may live in: missing, empty, or holding a lab already.
 * Anything else is refused before anything is created.
 */
export async function checkLabDir(dir: string): Promise<LabState | undefined> {
  if (!fs.existsSync(dir)) return undefined;
  if (!fs.statSync(dir).isDirectory()) {
    throw new UsageError(`${dir} exists and is not a directory`, { hint: 'choose another --dir' });
  }
  const state = await readState(dir);
  if (state) return state;
  const entries = await fsp.readdir(dir);
  const foreign = entries.filter((e) => !(LAB_FILES as readonly string[]).includes(e));
  if (foreign.length) {
    throw new UsageError(`${dir} holds files that are not a k8s-ha lab (${foreign.slice(0, 3).join(', ')}${foreign.length > 3 ? ', ...' : ''})`, {
      hint: 'choose another --dir, or empty that directory first',
    });
  }
  return undefined;
}

/** Record a master's fault in lab.json, or clear it (undefined); the rest of the file stays as it is. */
export async function setMasterFault(dir: string, name: string, fault: MasterFault | undefined): Promise<void> {
  const state = await readState(dir);
  if (!state) throw new UsageError(`no lab in ${dir}`, { hint: `start one with \`k8s-ha lab up --dir ${dir}\`` });
  const faults = { ...state.faults };
  if (fault) faults[name] = fault;
  else delete faults[name];
  const { faults: _old, ...rest } = state;
  await writeState(dir, Object.keys(faults).length ? { ...rest, faults } : rest);
}

export async function writeState(dir: string, state: LabState): Promise<void> {
  await writeFileAtomic(path.join(dir, STATE_FILE), JSON.stringify(state, null, 2) + '\n');
}

/** A lab file written whole (util/tempdir.ts), its folder made first; readable by all unless `mode` says otherwise. */
export async function writeFileAtomic(file: string, data: string | Buffer, mode = 0o644): Promise<void> {
  await fsp.mkdir(path.dirname(file), { recursive: true });
  await writeWhole(file, data, mode);
}

/**
 * writeFileAtomic, only when the content differs: for a file mounted into running lab hosts on its
 * own, whose old inode a running host keeps when the file is replaced.
 */
export async function writeFileIfChanged(file: string, data: string, mode = 0o644): Promise<void> {
  if ((await fsp.readFile(file, 'utf8').catch(() => undefined)) === data) return;
  await writeFileAtomic(file, data, mode);
}

// --- subnets -------------------------------------------------------------

function cidrRange(cidr: string): [number, number] | undefined {
  const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)\/(\d+)$/.exec(cidr);
  if (!m) return undefined;
  const ip = ((Number(m[1]) << 24) >>> 0) + (Number(m[2]) << 16) + (Number(m[3]) << 8) + Number(m[4]);
  const bits = Number(m[5]);
  const size = 2 ** (32 - bits);
  const start = ip - (ip % size);
  return [start, start + size - 1];
}

export function overlaps(a: string, b: string): boolean {
  const ra = cidrRange(a);
  const rb = cidrRange(b);
  if (!ra || !rb) return false;
  return ra[0] <= rb[1] && rb[0] <= ra[1];
}

export const SUBNET_CANDIDATES = Array.from({ length: 40 }, (_, i) => `10.${210 + i}.0.0/16`);

/** The first candidate /16 that overlaps no network the engine or this host routes. */
export function pickSubnet(used: string[]): string | undefined {
  return SUBNET_CANDIDATES.find((c) => !used.some((u) => overlaps(c, u)));
}

/** IPv4 routes of this host, as CIDRs (so a lab never shadows a real network). */
export function hostRoutes(): string[] {
  try {
    const lines = fs.readFileSync('/proc/net/route', 'utf8').split('\n').slice(1);
    const out: string[] = [];
    for (const line of lines) {
      const f = line.trim().split(/\s+/);
      if (f.length < 8) continue;
      const dest = Number.parseInt(f[1]!, 16);
      const mask = Number.parseInt(f[7]!, 16);
      if (!mask) continue; // the default route covers everything; it is not a conflict
      const ip = [dest & 255, (dest >> 8) & 255, (dest >> 16) & 255, (dest >>> 24) & 255].join('.');
      const bits = mask.toString(2).split('').filter((b) => b === '1').length;
      out.push(`${ip}/${bits}`);
    }
    return out;
  } catch {
    return [];
  }
}
