/**
 * One line per distinct cause: forty nodes behind a bastion that is down failed for one reason, and
 * an operator should read it once, with the nodes it cost, not forty times. Failures are grouped by
 * their first line with each host's own name and address taken out, so "node-01: cannot reach
 * 10.0.1.11:22 through bastion ..." and "node-02: cannot reach 10.0.1.12:22 through bastion ..."
 * are one cause.
 */
import { nameList } from '../inventory/diagnostics.js';

export interface Failure {
  name: string;
  address?: string;
  status: string;
  error?: string;
  hint?: string;
}

export interface CauseGroup {
  status: string;
  names: string[];
  /** The cause as one line: a single host's own words, or, for several, with `<address>` where each one's address was. */
  cause: string;
  hint?: string;
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** A host's error as one line, without its own name in front (the line already starts with it). */
export function ownCause(name: string, error: string | undefined): string {
  const first = (error ?? '').split('\n')[0]!;
  return first.startsWith(`${name}: `) ? first.slice(name.length + 2) : first;
}

/** The cause with the host's own address and name replaced, so hosts failing alike compare equal. */
function shared(f: Failure, text: string): string {
  let out = text;
  if (f.address) out = out.replace(new RegExp(`\\[?${escape(f.address)}\\]?(?=[:\\s,)]|$)`, 'g'), '<address>');
  return out.replace(new RegExp(`\\b${escape(f.name)}\\b`, 'g'), '<name>');
}

/** Failures grouped by status and cause, in the order each cause was first met. */
export function byCause(failures: Failure[]): CauseGroup[] {
  const groups = new Map<string, CauseGroup & { first: Failure; own: string }>();
  for (const f of failures) {
    const own = ownCause(f.name, f.error);
    const key = `${f.status}\0${shared(f, own)}\0${f.hint ? shared(f, f.hint) : ''}`;
    const g = groups.get(key);
    if (g) g.names.push(f.name);
    else groups.set(key, { status: f.status, names: [f.name], cause: own, hint: f.hint, first: f, own });
  }
  return [...groups.values()].map(({ first, own, ...g }) => (g.names.length === 1 ? g : { ...g, cause: shared(first, own), hint: g.hint && shared(first, g.hint) }));
}


/** `NAME: STATUS: CAUSE`, or for several `N nodes (a, b, c): STATUS: CAUSE`. */
export function causeLine(g: CauseGroup, noun = 'nodes'): string {
  const who = g.names.length === 1 ? g.names[0]! : `${g.names.length} ${noun} (${nameList(g.names)})`;
  return `${who}: ${g.status}: ${g.cause}`;
}
