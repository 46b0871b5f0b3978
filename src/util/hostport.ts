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
