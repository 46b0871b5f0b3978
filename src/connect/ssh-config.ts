/**
 * ssh_config evaluated with OpenSSH's rules (ssh_config(5), readconf.c):
 *
 * - files are read in order (the user's ~/.ssh/config, then /etc/ssh/ssh_config), and for each
 *   setting the FIRST value obtained wins, across all `Host` blocks and files; only settings that
 *   may repeat (IdentityFile, CertificateFile, ...) collect every value in order;
 * - a `Host` line applies when one of its patterns matches and none of its `!` patterns does;
 *   patterns are `*` / `?` globs, compared without regard to case;
 * - `Include` reads files (globs allowed; relative paths from ~/.ssh, or /etc/ssh in the system
 *   file), also conditionally inside a Host block;
 * - `Match` blocks with `all`, `host`, `originalhost`, `user` and `localuser` are evaluated;
 *   the other criteria (`exec`, `canonical`, `final`, `localnetwork`, `tagged`) are never run:
 *   such a block is skipped and reported once, never silently.
 *
 * A node is looked up by its inventory name and its address: a Host block applies when a pattern
 * matches either (as `ssh NAME` and `ssh ADDRESS` both would) and no negated pattern matches
 * either. Pure apart from the injected file reader.
 */
import path from 'node:path';
import { quote } from '../util/quote.js';

export interface ConfigValue {
  args: string[];
  file: string;
  line: number;
  /** Order in which values were obtained (across files and includes): for settings that exclude each other. */
  seq: number;
}

export interface SshConfigLookup {
  /** Lower-cased keyword: the first value obtained, or every value for repeatable keywords. */
  options: Map<string, ConfigValue[]>;
  /** Blocks that were skipped because they need what k8s-ha does not run, and read errors. */
  notes: string[];
  /**
   * Host key settings in a block k8s-ha could not evaluate (Match exec...): OpenSSH might apply
   * them, so going on without them could trust what the operator revoked or meant to check.
   */
  unsafe: string[];
}

/** Settings about which host keys to trust: one of these in a block that cannot be evaluated stops the run. */
const TRUST_KEYWORDS = new Set(['revokedhostkeys', 'stricthostkeychecking', 'userknownhostsfile', 'globalknownhostsfile', 'knownhostscommand']);

export interface SshConfigReader {
  /** The file's text, or undefined when it does not exist. */
  read(file: string): string | undefined;
  /** Entry names of a directory (for Include globs); [] when it does not exist. */
  list(dir: string): string[];
  home: string;
  localUser: string;
}

export interface ConfigFileRef {
  file: string;
  /** Relative Include paths are taken from here: ~/.ssh for the user's file, /etc/ssh for the system's. */
  includeBase: string;
}

export interface LookupFor {
  /** The host as named in the inventory. */
  name: string;
  /** The inventory's address, when it gives one. */
  address?: string;
  /** User already decided (inventory), for Match user. */
  user?: string;
  /** The user when neither the inventory nor ssh_config names one (else the local user). */
  defaultUser?: string;
}

const REPEATABLE = new Set(['identityfile', 'certificatefile', 'localforward', 'remoteforward', 'dynamicforward', 'sendenv', 'setenv']);
const MATCH_SUPPORTED = new Set(['all', 'host', 'originalhost', 'user', 'localuser']);
const MAX_INCLUDE_DEPTH = 16;

/** Split a config line into keyword and arguments: `Key value`, `Key=value`, double quotes group. */
export function tokenize(line: string): string[] | undefined {
  const text = line.trim();
  if (!text || text.startsWith('#')) return undefined;
  const tokens: string[] = [];
  let cur = '';
  let inQuote = false;
  let started = false;
  let sawEquals = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (inQuote) {
      if (ch === '"') inQuote = false;
      else cur += ch;
      continue;
    }
    if (ch === '"') {
      inQuote = true;
      started = true;
      continue;
    }
    // `Key=value` and `Key = value`: the first = after the keyword separates like a space.
    if (/\s/.test(ch) || (ch === '=' && (tokens.length === 0 || (tokens.length === 1 && !started && !sawEquals)))) {
      if (ch === '=') sawEquals = true;
      if (started) tokens.push(cur);
      cur = '';
      started = false;
      continue;
    }
    if (ch === '#' && !started) break;
    cur += ch;
    started = true;
  }
  if (started) tokens.push(cur);
  return tokens.length ? tokens : undefined;
}

function globRe(pattern: string): RegExp {
  return new RegExp('^' + pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.') + '$', 'i');
}

/** OpenSSH's pattern list: applies when some positive pattern matches a candidate and no `!` pattern matches any. */
export function patternListMatches(patterns: string[], candidates: string[]): boolean {
  let matched = false;
  for (const p of patterns) {
    const negated = p.startsWith('!');
    const re = globRe(negated ? p.slice(1) : p);
    const hit = candidates.some((c) => re.test(c));
    if (negated && hit) return false;
    if (!negated && hit) matched = true;
  }
  return matched;
}

function expandInclude(spec: string, base: string, reader: SshConfigReader): string[] {
  const full = spec.startsWith('~/') ? path.join(reader.home, spec.slice(2)) : path.isAbsolute(spec) ? spec : path.join(base, spec);
  const dir = path.dirname(full);
  const leaf = path.basename(full);
  if (!/[*?]/.test(leaf)) return [full];
  if (/[*?]/.test(dir)) return []; // globs in directory names: rare, and reported by the caller as matching nothing
  const re = globRe(leaf);
  return reader
    .list(dir)
    .filter((n) => re.test(n) && !n.startsWith('.'))
    .sort()
    .map((n) => path.join(dir, n));
}

export function lookupSshConfig(files: ConfigFileRef[], host: LookupFor, reader: SshConfigReader): SshConfigLookup {
  const options = new Map<string, ConfigValue[]>();
  const notes: string[] = [];
  const unsafe: string[] = [];
  const names = host.address && host.address !== host.name ? [host.name, host.address] : [host.name];
  const first = (key: string) => options.get(key)?.[0]?.args[0];

  let seq = 0;
  const set = (key: string, args: string[], file: string, line: number) => {
    const value = { args, file, line, seq: seq++ };
    if (REPEATABLE.has(key)) options.set(key, [...(options.get(key) ?? []), value]);
    else if (!options.has(key)) options.set(key, [value]);
  };

  /** Where the block being read was skipped because k8s-ha cannot evaluate it (undefined: it was not). */
  let unevaluated: string | undefined;
  const matchApplies = (args: string[], where: string): boolean => {
    for (let i = 0; i < args.length; i++) {
      const criterion = args[i]!.toLowerCase();
      if (!MATCH_SUPPORTED.has(criterion)) {
        unevaluated = `${where}: "Match ${args.join(' ')}"`;
        notes.push(`${where}: "Match ${args.join(' ')}" is ignored: k8s-ha does not evaluate "${args[i]}" (it never runs commands from ssh_config); the block's settings are not applied`);
        return false;
      }
      if (criterion === 'all') continue;
      const list = args[++i];
      if (list === undefined) {
        notes.push(`${where}: "Match ${args.join(' ')}" has no patterns after "${args[i - 1]}": the block is ignored`);
        return false;
      }
      const patterns = list.split(',');
      const candidates =
        criterion === 'host'
          ? [first('hostname') ?? host.address ?? host.name]
          : criterion === 'originalhost'
            ? names
            : criterion === 'user'
              ? [host.user ?? first('user') ?? host.defaultUser ?? reader.localUser]
              : [reader.localUser];
      if (!patternListMatches(patterns, candidates)) return false;
    }
    return true;
  };

  const readFile = (ref: ConfigFileRef, depth: number) => {
    const text = reader.read(ref.file);
    if (text === undefined) return;
    let active = true;
    unevaluated = undefined;
    text.split('\n').forEach((raw, i) => {
      const tokens = tokenize(raw);
      if (!tokens) return;
      const [keyword, ...args] = tokens as [string, ...string[]];
      const key = keyword.toLowerCase();
      const where = `${ref.file}:${i + 1}`;
      if (key === 'host') {
        unevaluated = undefined;
        active = patternListMatches(args, names);
        return;
      }
      if (key === 'match') {
        unevaluated = undefined;
        active = matchApplies(args, where);
        return;
      }
      if (!active) {
        if (unevaluated && TRUST_KEYWORDS.has(key)) unsafe.push(`${where}: ${keyword} is in ${unevaluated}, which k8s-ha cannot evaluate`);
        return;
      }
      if (key === 'include') {
        if (depth >= MAX_INCLUDE_DEPTH) {
          notes.push(`${where}: Include nested more than ${MAX_INCLUDE_DEPTH} deep: not followed`);
          return;
        }
        for (const spec of args) {
          for (const file of expandInclude(spec, ref.includeBase, reader)) readFile({ file, includeBase: ref.includeBase }, depth + 1);
        }
        // Back in a block that applies (an Include is followed only there).
        unevaluated = undefined;
        return;
      }
      set(key, args, ref.file, i + 1);
    });
  };

  for (const ref of files) readFile(ref, 0);
  return { options, notes, unsafe };
}

export interface TokenValues {
  host: string;
  port: number;
  user: string;
  name: string;
  home: string;
  localUser: string;
}

/** `%h`, `%p`, `%r`, `%n`, `%d`, `%u` and `%%`, each value passed through `each` (`%%` is a plain `%`). */
function replaceTokens(text: string, t: TokenValues, each: (value: string) => string): string {
  return text.replace(/%([%hprndu])/g, (_, c: string) => {
    if (c === '%') return '%';
    const value = { h: t.host, p: String(t.port), r: t.user, n: t.name, d: t.home, u: t.localUser }[c]!;
    return each(value);
  });
}

/** `%h`, `%p`, `%r`, `%n`, `%d`, `%u`, `%%` and a leading `~/`, as OpenSSH expands them in paths (IdentityFile, HostName...). */
export function expandTokens(text: string, t: TokenValues): string {
  const withTokens = replaceTokens(text, t, (v) => v);
  return withTokens === '~' ? t.home : withTokens.startsWith('~/') ? path.join(t.home, withTokens.slice(2)) : withTokens;
}

/**
 * The same tokens in a command run with `/bin/sh -c` (ProxyCommand): each value is quoted for POSIX
 * sh where it is put, so a host, user or name can only ever be one word of the command. OpenSSH
 * puts them in as they are; k8s-ha also refuses user names that are not names at load, and a value
 * the rules accept (letters, digits, `._-:%`) comes out unchanged. Write the tokens unquoted in the
 * command (`nc %h %p`, not `nc "%h" %p`): the quoting is done here.
 */
export function expandCommandTokens(text: string, t: TokenValues): string {
  return replaceTokens(text, t, quote);
}
