/**
 * ADDRESS:PORT, the one way k8s-ha reads and writes it: `10.0.0.1:6443`, `[fd00::1]:6443`,
 * `api.example:6443`. An IPv6 address is written in brackets; read without them (`::1:8443`), the
 * last colon is taken as the port's. Imports nothing of the orchestrator (kube-lb uses it too).
 */
import net from 'node:net';

export interface HostPort {
  /** Without brackets. */
  host: string;
  port: number;
}

/** undefined when the text is not ADDRESS:PORT with a port from 1 (0 with `anyPort`: let the system pick) to 65535. */
export function parseHostPort(text: string, o: { anyPort?: boolean } = {}): HostPort | undefined {
  const m = /^\[([^\]\s]+)\]:(\d{1,5})$/.exec(text) ?? /^([^\s[\]]+):(\d{1,5})$/.exec(text);
  if (!m) return undefined;
  const port = Number(m[2]);
  if (port < (o.anyPort ? 0 : 1) || port > 65535) return undefined;
  return { host: m[1]!, port };
}

/** Parse a value already validated (inventory, playbook, kube-lb config): a bad one is a bug. */
export function hostPortOf(text: string): HostPort {
  const hp = parseHostPort(text, { anyPort: true });
  if (!hp) throw new Error(`internal: not ADDRESS:PORT: ${text}`);
  return hp;
}

export function formatHostPort(host: string, port: number): string {
  return `${net.isIPv6(host) ? `[${host}]` : host}:${port}`;
}

/**
 * Why a string of digits and dots is not an IPv4 address, or undefined when it is one or is not
 * digits and dots at all. Such a string is never a host name: resolvers and URL parsers read it as
 * an address (inet_aton takes `10.1` as 10.0.0.1 and `010` as octal 8), so it must be exact.
 */
export function ipv4LiteralProblem(text: string): string | undefined {
  if (!/^[\d.]+$/.test(text) || net.isIPv4(text)) return undefined;
  const parts = text.split('.');
  const example = 'write four numbers from 0 to 255, like 10.0.0.1';
  let why: string;
  if (parts.some((p) => p === '')) why = 'it has an empty number';
  else if (parts.length !== 4) why = `it has ${parts.length} number${parts.length === 1 ? '' : 's'}, not 4`;
  else if (parts.some((p) => Number(p) > 255)) why = `${parts.find((p) => Number(p) > 255)} is above 255`;
  else {
    // Only leading zeros left: say what it was probably meant to be.
    const plain = parts.map((p) => String(Number(p))).join('.');
    return `"${text}" is not an IPv4 address: ${parts.find((p) => p.length > 1 && p.startsWith('0'))} has a leading zero, which some tools read as octal; write ${plain}`;
  }
  return `"${text}" is not an IPv4 address (${why}), and digits and dots are never a host name: ${example}`;
}

/** One spelling per address, so `fd00::1` and `FD00:0:0::1` compare equal; IPv4-mapped IPv6 as its IPv4; a name in lower case. */
export function canonicalHost(host: string): string {
  if (net.isIPv4(host)) return host;
  if (!net.isIPv6(host)) return host.toLowerCase();
  const zone = host.indexOf('%');
  const bare = zone < 0 ? host : host.slice(0, zone);
  const words = ipv6Words(bare);
  if (words.slice(0, 5).every((w) => w === 0) && words[5] === 0xffff) {
    return [words[6]! >> 8, words[6]! & 0xff, words[7]! >> 8, words[7]! & 0xff].join('.');
  }
  return words.map((w) => w.toString(16)).join(':') + (zone < 0 ? '' : host.slice(zone));
}

function ipv6Words(h: string): number[] {
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(h);
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number];
    h = h.slice(0, -v4[0].length) + `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = h.split('::') as [string, string | undefined];
  const words = (s: string | undefined) => (s ? s.split(':').map((w) => parseInt(w, 16)) : []);
  const hw = words(head);
  const tw = words(tail);
  return tail === undefined ? hw : [...hw, ...Array<number>(8 - hw.length - tw.length).fill(0), ...tw];
}

/** 0.0.0.0 or ::, a listener on every address. */
export function isWildcard(host: string): boolean {
  const c = canonicalHost(host);
  return c === '0.0.0.0' || c === '0:0:0:0:0:0:0:0';
}

/** 127.0.0.0/8 or ::1 (also IPv4-mapped): reachable from this host only. */
export function isLoopback(host: string): boolean {
  const c = canonicalHost(host);
  return (net.isIPv4(c) && c.startsWith('127.')) || c === '0:0:0:0:0:0:0:1';
}

/**
 * Whether two listeners (or a listener and a server) would want the same socket: the same port and
 * the same address, or the same port where one is a wildcard. Linux binds `::` dual-stack by
 * default and refuses a specific address on a port a wildcard holds, so any wildcard counts.
 */
export function hostPortsOverlap(a: HostPort, b: HostPort): boolean {
  if (a.port !== b.port) return false;
  return canonicalHost(a.host) === canonicalHost(b.host) || isWildcard(a.host) || isWildcard(b.host);
}
