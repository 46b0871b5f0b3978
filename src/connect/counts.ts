/**
 * What each host cost this process over SSH, counted as it happens: the round trips behind a run's
 * wall time. `deploy --json` and `status --json` report them per node and in total, beside the
 * controller's CPU time, so a run can be held against its floor (one login, one command per node).
 */

export interface SshCounts {
  /** Logins to the host (a bastion's own are counted apart: once per bastion, `bastionLogins`). */
  logins: number;
  /** Commands run on it, each in its own channel; the script holding its lock included. */
  execs: number;
  /** Channels opened: commands, TCP streams from the host (direct-tcpip: each probe through it), file copies. */
  channels: number;
  /** TLS handshakes made through its TCP channels: full, and resumed from an earlier session. */
  tlsFull: number;
  tlsResumed: number;
  /**
   * Bytes through its channels: out, the commands, what they were given and what was sent on its
   * TCP channels; in, what came back. SSH's own framing, key exchange and keepalives are not in them.
   */
  bytesOut: number;
  bytesIn: number;
}

export const zeroCounts = (): SshCounts => ({ logins: 0, execs: 0, channels: 0, tlsFull: 0, tlsResumed: 0, bytesOut: 0, bytesIn: 0 });

/** Every host this process has worked on, by its name in the inventory. */
const ledger = new Map<string, SshCounts>();

/** The host's running counts, to add to. */
export function countsOf(name: string): SshCounts {
  let c = ledger.get(name);
  if (!c) ledger.set(name, (c = zeroCounts()));
  return c;
}

/** A copy of every host's counts now: a run reports what was added since. */
export function countsNow(): Map<string, SshCounts> {
  return new Map([...ledger].map(([k, v]) => [k, { ...v }]));
}

const KEYS = Object.keys(zeroCounts()) as (keyof SshCounts)[];

/** What `name` cost since `before`. */
export function countsSince(before: ReadonlyMap<string, SshCounts>, name: string): SshCounts {
  const now = ledger.get(name) ?? zeroCounts();
  const was = before.get(name) ?? zeroCounts();
  return Object.fromEntries(KEYS.map((k) => [k, now[k] - was[k]])) as unknown as SshCounts;
}

/** What `names` cost since `before`, added up (a bastion is left out: what it carries is its nodes' traffic again). */
export function totalSince(before: ReadonlyMap<string, SshCounts>, names: readonly string[]): SshCounts {
  const sum = zeroCounts();
  for (const name of names) {
    const d = countsSince(before, name);
    for (const k of KEYS) sum[k] += d[k];
  }
  return sum;
}

/** The streams a host opened to an address (direct-tcpip), with whose counts their TLS handshakes go. */
const streams = new WeakMap<object, SshCounts>();

export function countStream(stream: object, counts: SshCounts): void {
  streams.set(stream, counts);
}

/** A TLS handshake made over `stream`: counted against the host it goes through, if any. */
export function countTls(stream: object, resumed: boolean): void {
  const c = streams.get(stream);
  if (!c) return;
  if (resumed) c.tlsResumed++;
  else c.tlsFull++;
}

/** The controller's CPU time (user and system) since `before` (process.cpuUsage()), in ms. */
export function cpuMsSince(before: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(before);
  return Math.round((d.user + d.system) / 1000);
}
