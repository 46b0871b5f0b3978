/**
 * Where and how to log in to each node, the way an OpenSSH user expects. For every setting the
 * first value obtained wins, in this order:
 *
 *   1. the node's own `ssh:` in the inventory,
 *   2. the inventory's `ssh:` (like options given on the `ssh` command line),
 *   3. ssh_config: ~/.ssh/config, then /etc/ssh/ssh_config (see ssh-config.ts),
 *   4. OpenSSH's defaults (port 22, strict host key checking, ~/.ssh/id_rsa, id_ecdsa, id_ed25519).
 *
 * The address dialed is the inventory's `address` when it gives one (a different ssh_config
 * HostName is then a warning), else ssh_config's HostName, else the name itself. The user
 * defaults to root (what a node-local balancer's install needs), not the local user.
 *
 * Bastions come from `ssh.proxyJump` or ssh_config's ProxyJump / ProxyCommand; each bastion is
 * resolved like a host of its own (its ssh_config block, the inventory's global `ssh:` settings
 * for keys and host key checking) and checked as strictly as a node.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { durationMs } from '../util/duration.js';
import { deadlinesOf } from './deadlines.js';
import type { Inventory, InventoryNode } from '../inventory/schema.js';
import { formatHop, parseProxyJump, type JumpHop } from './proxy-jump.js';
import { UsageError } from '../errors.js';
import { userNameProblem } from '../util/safe-values.js';
import { expandCommandTokens, expandTokens, lookupSshConfig, type ConfigFileRef, type ConfigValue, type SshConfigLookup, type SshConfigReader } from './ssh-config.js';
import type { SshTarget, StrictHostKeyChecking } from './ssh.js';

export interface TargetOptions {
  /** The user's ssh_config as text (tests); null: none; undefined: read ~/.ssh/config and /etc/ssh/ssh_config. */
  sshConfig?: string | null;
  /** Files and reader (tests pass plain data). */
  reader?: SshConfigReader;
  configFiles?: ConfigFileRef[];
  /** --accept-new-host-keys: trust keys never seen before (and only those). */
  acceptNewHostKeys?: boolean;
}

export interface ResolvedTarget {
  target: SshTarget;
  /** Said once before the run: a HostName not used, Match blocks ignored, ... */
  warnings: string[];
}

const DEFAULT_IDENTITIES = ['~/.ssh/id_rsa', '~/.ssh/id_ecdsa', '~/.ssh/id_ed25519'];
const USER_KNOWN_HOSTS = ['~/.ssh/known_hosts', '~/.ssh/known_hosts2'];
const GLOBAL_KNOWN_HOSTS = ['/etc/ssh/ssh_known_hosts', '/etc/ssh/ssh_known_hosts2'];
const MAX_HOPS = 8;

export const diskReader = (): SshConfigReader => ({
  read: (f) => {
    try {
      return fs.readFileSync(f, 'utf8');
    } catch {
      return undefined;
    }
  },
  list: (d) => {
    try {
      return fs.readdirSync(d);
    } catch {
      return [];
    }
  },
  home: os.homedir(),
  localUser: (() => {
    try {
      return os.userInfo().username;
    } catch {
      return process.env.USER ?? 'root';
    }
  })(),
});

function sources(opts: TargetOptions): { reader: SshConfigReader; files: ConfigFileRef[] } {
  const disk = opts.reader ?? diskReader();
  if (opts.sshConfig !== undefined) {
    const text = opts.sshConfig;
    const file = path.join(disk.home, '.ssh', 'config');
    return {
      reader: { ...disk, read: (f) => (f === file ? (text ?? undefined) : disk.read(f)) },
      files: text === null ? [] : [{ file, includeBase: path.join(disk.home, '.ssh') }],
    };
  }
  return {
    reader: disk,
    files: opts.configFiles ?? [
      { file: path.join(disk.home, '.ssh', 'config'), includeBase: path.join(disk.home, '.ssh') },
      { file: '/etc/ssh/ssh_config', includeBase: '/etc/ssh' },
    ],
  };
}

function strictness(v: string | undefined): StrictHostKeyChecking | undefined {
  if (v === undefined) return undefined;
  const s = v.toLowerCase();
  // `ask` would prompt; a deploy cannot stop to ask, so it refuses unknown keys like `yes`.
  if (s === 'yes' || s === 'ask') return 'yes';
  if (s === 'accept-new') return 'accept-new';
  if (s === 'no' || s === 'off') return 'no';
  return undefined;
}

const at = (v: ConfigValue) => `${v.file}:${v.line}`;

/**
 * ssh_config's User for a host, held to the inventory's rule for ssh.user (it reaches ProxyCommand's
 * %r as they do): a bad one stops the run before any connection, naming the file and line.
 */
function configUser(cfg: SshConfigLookup, host: string): string | undefined {
  const v = cfg.options.get('user')?.[0];
  if (!v) return undefined;
  const user = v.args[0] ?? '';
  const problem = userNameProblem(user);
  if (problem) {
    throw new UsageError(`${at(v)}: User for ${host}: ${problem}`, { hint: `correct the User line at ${at(v)}, or set ssh.user in the inventory (it comes first)` });
  }
  return user;
}

/** ssh_config IdentityAgent: `none` is no agent (null); `SSH_AUTH_SOCK` or `$SSH_AUTH_SOCK` the environment's; else a socket path. */
function identityAgent(value: string | undefined, t: Parameters<typeof expandTokens>[1]): string | null | undefined {
  if (value === undefined || value === 'SSH_AUTH_SOCK' || value === '$SSH_AUTH_SOCK') return undefined;
  if (value.toLowerCase() === 'none') return null;
  return expandTokens(value, t);
}

/** Resolves hosts against one set of ssh_config files; one per inventory load. */
export class TargetResolver {
  private readonly reader: SshConfigReader;
  private readonly files: ConfigFileRef[];
  private readonly noted = new Set<string>();

  constructor(
    private readonly inv: Inventory,
    private readonly opts: TargetOptions = {},
  ) {
    const s = sources(opts);
    this.reader = s.reader;
    this.files = s.files;
  }

  private lookup(name: string, address: string | undefined, user: string | undefined, warnings: string[], defaultUser?: string): SshConfigLookup {
    const found = lookupSshConfig(this.files, { name, address, user, defaultUser }, this.reader);
    // Fail closed: OpenSSH might apply these, and without them k8s-ha could trust a key they revoke.
    if (found.unsafe.length) {
      throw new Error(`${found.unsafe.join('; ')}: whether it applies to ${name} decides which host keys are trusted, so k8s-ha will not guess; move the setting out of that Match block (into a Host block, or the inventory's ssh:)`);
    }
    for (const note of found.notes) {
      // The same ignored Match block would be reported for every node: once is enough.
      if (!this.noted.has(note)) warnings.push(note);
      this.noted.add(note);
    }
    return found;
  }

  private tokens(host: string, port: number, user: string, name: string) {
    return { host, port, user, name, home: this.reader.home, localUser: this.reader.localUser };
  }

  resolve(node: InventoryNode): ResolvedTarget {
    const warnings: string[] = [];
    const own = node.ssh ?? {};
    const all = this.inv.ssh;
    const userSet = own.user ?? all.user;
    const cfg = this.lookup(node.name, node.address, userSet, warnings, 'root');
    const get = (k: string) => cfg.options.get(k)?.[0];
    const arg = (k: string) => get(k)?.args[0];

    const port = own.port ?? all.port ?? (arg('port') ? Number(arg('port')) : 22);
    const user = userSet ?? configUser(cfg, node.name) ?? 'root';
    const hostName = get('hostname');
    const configHost = hostName ? expandTokens(hostName.args[0]!, this.tokens(node.name, port, user, node.name)) : undefined;
    let address: string;
    let addressFrom: string;
    if (node.address) {
      address = node.address;
      addressFrom = 'inventory';
      if (configHost && configHost !== node.address) {
        warnings.push(
          `${node.name}: ${at(hostName!)} sets HostName ${configHost}, but the inventory's address ${node.address} is dialed (the inventory comes first); remove one of them`,
        );
      }
    } else if (configHost) {
      address = configHost;
      addressFrom = `HostName at ${at(hostName!)}`;
    } else {
      address = node.name;
      addressFrom = 'name';
    }

    const t = this.tokens(address, port, user, node.name);
    const target: SshTarget = {
      name: node.name,
      address,
      addressFrom,
      port,
      user,
      ...this.keysAndTrust(own.identityFile ?? all.identityFile, own.knownHostsFile ?? all.knownHostsFile, own.strictHostKeyChecking ?? all.strictHostKeyChecking, cfg, t),
      connectTimeoutMs: this.timeout(own.connectTimeout ?? all.connectTimeout, cfg),
      deadlines: deadlinesOf(this.inv),
    };
    this.addRoute(target, own.proxyJump ?? all.proxyJump, cfg, t, warnings, 0);
    return { target, warnings };
  }

  private timeout(inventory: string | undefined, cfg: SshConfigLookup): number {
    if (inventory) return durationMs(inventory);
    const c = cfg.options.get('connecttimeout')?.[0]?.args[0];
    return c && /^\d+$/.test(c) ? Number(c) * 1000 : 10_000;
  }

  private keysAndTrust(
    identityFile: string | undefined,
    knownHostsFile: string | undefined,
    strict: string | undefined,
    cfg: SshConfigLookup,
    t: ReturnType<TargetResolver['tokens']>,
  ): Pick<SshTarget, 'identityFile' | 'identityFiles' | 'identitiesOnly' | 'identityAgent' | 'knownHostsFile' | 'globalKnownHostsFiles' | 'strictHostKeyChecking' | 'revokedHostKeys'> {
    const arg = (k: string) => cfg.options.get(k)?.[0]?.args;
    const revoked = cfg.options.get('revokedhostkeys')?.[0];
    const fromConfig = (cfg.options.get('identityfile') ?? []).map((v) => expandTokens(v.args[0]!, t));
    const identityFiles = identityFile || fromConfig.length ? fromConfig : DEFAULT_IDENTITIES.map((p) => expandTokens(p, t));
    let strictness_ = strictness(strict ?? arg('stricthostkeychecking')?.[0]) ?? 'yes';
    if (this.opts.acceptNewHostKeys && strictness_ === 'yes') strictness_ = 'accept-new';
    return {
      identityFile: identityFile ? expandTokens(identityFile, t) : undefined,
      identityFiles,
      identitiesOnly: arg('identitiesonly')?.[0]?.toLowerCase() === 'yes',
      identityAgent: identityAgent(arg('identityagent')?.[0], t),
      knownHostsFile: knownHostsFile ? [expandTokens(knownHostsFile, t)] : (arg('userknownhostsfile') ?? USER_KNOWN_HOSTS).map((p) => expandTokens(p, t)),
      globalKnownHostsFiles: (arg('globalknownhostsfile') ?? GLOBAL_KNOWN_HOSTS).map((p) => expandTokens(p, t)),
      strictHostKeyChecking: strictness_,
      revokedHostKeys:
        revoked?.args[0] && revoked.args[0].toLowerCase() !== 'none'
          ? { file: expandTokens(revoked.args[0], t), from: `RevokedHostKeys at ${revoked.file}:${revoked.line}` }
          : undefined,
    };
  }

  /** ProxyJump (inventory first, then ssh_config) or ProxyCommand, whichever ssh_config gave first. */
  private addRoute(
    target: SshTarget,
    inventoryJump: string | string[] | undefined,
    cfg: SshConfigLookup,
    t: ReturnType<TargetResolver['tokens']>,
    warnings: string[],
    depth: number,
  ): void {
    if (inventoryJump !== undefined) {
      const hops = parseProxyJump(inventoryJump);
      if (hops === 'none') return;
      // The inventory schema has checked the value already; a bad one here is a bug.
      if (typeof hops === 'string') throw new Error(`internal: ssh.proxyJump of ${target.name}: ${hops}`);
      target.jump = this.chain(hops, warnings, depth);
      return;
    }
    const jump = cfg.options.get('proxyjump')?.[0];
    const command = cfg.options.get('proxycommand')?.[0];
    if (jump && (!command || jump.seq < command.seq)) {
      const hops = parseProxyJump(jump.args.join(' '));
      if (hops === 'none') return;
      if (typeof hops === 'string') {
        warnings.push(`${target.name}: ${at(jump)}: ProxyJump ${hops}; connecting directly`);
        return;
      }
      target.jump = this.chain(hops, warnings, depth);
      return;
    }
    if (command) {
      const line = command.args.join(' ');
      if (line.toLowerCase() !== 'none') target.proxyCommand = expandCommandTokens(line, t);
    }
  }

  /** A ProxyJump list, each hop resolved like a host: returns the last hop, which goes through the one before it, and so on. */
  private chain(list: JumpHop[], warnings: string[], depth: number): SshTarget {
    if (depth + list.length > MAX_HOPS) throw new Error(`more than ${MAX_HOPS} bastions in a row: does a bastion's ProxyJump name itself?`);
    let previous: SshTarget | undefined;
    for (const hop of list) {
      const cfg = this.lookup(hop.host, undefined, hop.user, warnings);
      const arg = (k: string) => cfg.options.get(k)?.[0]?.args[0];
      const port = hop.port ?? (arg('port') ? Number(arg('port')) : 22);
      const user = hop.user ?? configUser(cfg, `bastion ${hop.host}`) ?? this.reader.localUser;
      const hostName = arg('hostname');
      const address = hostName ? expandTokens(hostName, this.tokens(hop.host, port, user, hop.host)) : hop.host;
      const t = this.tokens(address, port, user, hop.host);
      const all = this.inv.ssh;
      const bastion: SshTarget = {
        name: `bastion ${formatHop({ ...hop, user })}`,
        address,
        addressFrom: hostName ? 'ssh_config HostName' : 'proxyJump',
        bastion: true,
        port,
        user,
        ...this.keysAndTrust(all.identityFile, all.knownHostsFile, all.strictHostKeyChecking, cfg, t),
        connectTimeoutMs: this.timeout(all.connectTimeout, cfg),
      };
      if (previous) bastion.jump = previous;
      // The first hop may itself sit behind a bastion named in its own ssh_config block.
      else this.addRoute(bastion, undefined, cfg, t, warnings, depth + list.length);
      previous = bastion;
    }
    return previous!;
  }
}

/** One node's target (tests and single lookups); a run resolves every node with one TargetResolver. */
export function resolveTarget(inv: Inventory, node: InventoryNode, opts: TargetOptions = {}): SshTarget {
  return new TargetResolver(inv, opts).resolve(node).target;
}
