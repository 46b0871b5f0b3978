/**
 * ProxyJump values, read as OpenSSH reads them: `[user@]host[:port]` or
 * `ssh://[user@]host[:port]`, several hops comma-separated (first hop first),
 * an IPv6 host in brackets, or `none`. Pure: the inventory schema and the
 * ssh_config reader share it.
 */
import net from 'node:net';
import { ipv4LiteralProblem } from '../util/hostport.js';
import { userNameProblem } from '../util/safe-values.js';

export interface JumpHop {
  user?: string;
  host: string;
  port?: number;
}

/** `none` (go direct), the hops in order, or an error message saying what is wrong. */
export function parseProxyJump(value: string | string[]): 'none' | JumpHop[] | string {
  const parts = (Array.isArray(value) ? value : [value]).flatMap((v) => v.split(',')).map((v) => v.trim());
  if (parts.length === 1 && parts[0]!.toLowerCase() === 'none') return 'none';
  if (parts.some((p) => p.toLowerCase() === 'none')) return '"none" cannot be combined with bastions';
  if (parts.length === 1 && parts[0] === '') return 'is empty: write [user@]host[:port], or none to go direct';
  if (parts.some((p) => p === '')) return 'has an empty bastion (two commas, or a comma at an end)';
  const hops: JumpHop[] = [];
  for (const part of parts) {
    const hop = parseHop(part);
    if (typeof hop === 'string') return hop;
    hops.push(hop);
  }
  return hops.length ? hops : 'names no bastion';
}

function parseHop(text: string): JumpHop | string {
  const bad = `"${text}" is not [user@]host[:port]`;
  // A trailing slash belongs to the URI form only (ssh://host/).
  const m = /^(ssh:\/\/)?(?:([^@\s/:]+)@)?(\[[^\]\s]+\]|[^@\s/:[\]]+)(?::(\d{1,5}))?(\/?)$/.exec(text);
  if (!m || (m[5] && !m[1])) {
    const v6 = /^(?:ssh:\/\/)?(?:[^@\s/]+@)?([0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*)$/.exec(text)?.[1];
    if (v6 !== undefined && net.isIPv6(v6)) return `${bad}: an IPv6 address goes in brackets, [${v6}]`;
    return bad;
  }
  const [, , user, rawHost, rawPort] = m;
  const bracketed = rawHost!.startsWith('[');
  const host = bracketed ? rawHost!.slice(1, -1) : rawHost!;
  if (bracketed && !net.isIPv6(host)) return `${bad}: only an IPv6 address goes in brackets`;
  if (!/^[A-Za-z0-9._:-]+$/.test(host)) return `${bad}: "${host}" is not a host name or address`;
  // ssh and its ssh_config would read a leading "-" as an option: OpenSSH refuses such names too.
  if (host.startsWith('-')) return `${bad}: a host name cannot start with "-"`;
  // The same rule as ssh.user: a bastion's user reaches ProxyCommand's %r too.
  const userProblem = user === undefined ? undefined : userNameProblem(user);
  if (userProblem) return `${bad}: ${userProblem}`;
  const v4 = ipv4LiteralProblem(host);
  if (v4) return host === text ? v4 : `${bad}: ${v4}`;
  const hop: JumpHop = { host };
  if (user) hop.user = user;
  if (rawPort !== undefined) {
    const port = Number(rawPort);
    if (port < 1 || port > 65535) return `${bad}: port ${rawPort} is not from 1 to 65535`;
    hop.port = port;
  }
  return hop;
}

export function formatHop(h: JumpHop): string {
  const host = net.isIPv6(h.host) ? `[${h.host}]` : h.host;
  return `${h.user ? `${h.user}@` : ''}${host}${h.port && h.port !== 22 ? `:${h.port}` : ''}`;
}
