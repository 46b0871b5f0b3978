/**
 * Where and how to log in to each node, the way an OpenSSH user expects:
 * the node's own `ssh:` settings, then the inventory's `ssh:`, then the
 * matching `Host` entries of ~/.ssh/config, then OpenSSH's defaults.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import SSHConfig from 'ssh-config';
import { durationMs } from '../inventory/schema.js';
import type { Inventory, InventoryNode } from '../inventory/schema.js';
import { expandHome, type SshTarget, type StrictHostKeyChecking } from './ssh.js';

export interface TargetOptions {
  /** Text of ~/.ssh/config; read from disk when undefined, none when null. */
  sshConfig?: string | null;
  /** --accept-new-host-keys: trust keys never seen before (and only those). */
  acceptNewHostKeys?: boolean;
  /** Whether a file exists (tests pass plain data). */
  exists?: (p: string) => boolean;
}

const DEFAULT_IDENTITIES = ['~/.ssh/id_ed25519', '~/.ssh/id_ecdsa', '~/.ssh/id_rsa'];

function readSshConfig(): string {
  try {
    return fs.readFileSync(path.join(os.homedir(), '.ssh', 'config'), 'utf8');
  } catch {
    return '';
  }
}

function first(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

function strictness(v: string | undefined): StrictHostKeyChecking | undefined {
  if (v === undefined) return undefined;
  const s = v.toLowerCase();
  if (s === 'yes' || s === 'ask') return 'yes';
  if (s === 'accept-new') return 'accept-new';
  if (s === 'no' || s === 'off') return 'no';
  return undefined;
}

export function resolveTarget(inv: Inventory, node: InventoryNode, opts: TargetOptions = {}): SshTarget {
  const text = opts.sshConfig === undefined ? readSshConfig() : (opts.sshConfig ?? '');
  const cfg = text ? SSHConfig.parse(text) : undefined;
  // A Host entry may match the node's name or its address, as `ssh node-1` or `ssh 10.0.0.21` would.
  const fromConfig: Record<string, string | string[]> = cfg ? { ...cfg.compute(node.name), ...cfg.compute(node.address) } : {};
  const exists = opts.exists ?? ((p: string) => fs.existsSync(p));
  const own = node.ssh ?? {};
  const all = inv.ssh;

  const configIdentity = ((): string | undefined => {
    const ids = fromConfig.IdentityFile;
    const list = Array.isArray(ids) ? ids : ids ? [ids] : [];
    return list.find((p) => exists(expandHome(p)));
  })();
  const identityFile =
    own.identityFile ?? all.identityFile ?? configIdentity ?? DEFAULT_IDENTITIES.find((p) => exists(expandHome(p)));

  let strict = strictness(own.strictHostKeyChecking ?? all.strictHostKeyChecking ?? first(fromConfig.StrictHostKeyChecking)) ?? 'yes';
  if (opts.acceptNewHostKeys && strict === 'yes') strict = 'accept-new';

  const timeout = own.connectTimeout ?? all.connectTimeout;
  const configTimeout = first(fromConfig.ConnectTimeout);
  return {
    name: node.name,
    address: first(fromConfig.HostName) ?? node.address,
    port: own.port ?? all.port ?? (fromConfig.Port ? Number(first(fromConfig.Port)) : 22),
    user: own.user ?? all.user ?? first(fromConfig.User) ?? 'root',
    identityFile: identityFile ? expandHome(identityFile) : undefined,
    knownHostsFile: expandHome(own.knownHostsFile ?? all.knownHostsFile ?? first(fromConfig.UserKnownHostsFile)?.split(/\s+/)[0] ?? '~/.ssh/known_hosts'),
    strictHostKeyChecking: strict,
    connectTimeoutMs: timeout ? durationMs(timeout) : configTimeout ? Number(configTimeout) * 1000 : 10_000,
  };
}
