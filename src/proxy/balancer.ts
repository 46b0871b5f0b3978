/**
 * Which backend a new connection goes to: one pure function. The candidates (the healthy
 * backends, or all of them in panic mode) and the ones already tried for this connection in, the
 * next to try out. The first choice and every retry after a failed dial ask the same question, so
 * they can never disagree; nothing is sorted or allocated on the accept path.
 */

export interface Candidate {
  /** Stable identity (address:port): what hash ranks. */
  readonly id: string;
  /** Open connections now. */
  readonly active: number;
}

export type Balance = 'least_conn' | 'round_robin' | 'hash';

/** FNV-1a with murmur3's final mix: FNV alone barely spreads the last characters of a key. */
export function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * The candidate to try next, or undefined when every one was tried.
 * - round_robin: the first untried one from position `rr` on, whatever the load.
 * - least_conn: the untried one with the fewest open connections; ties go to the first from
 *   position `rr` on, so equal backends take turns.
 * - hash: rendezvous (highest random weight) hashing of `key()` with each candidate's id; removing
 *   a backend moves only its own keys. The key is the client's address AND port: on a node-local
 *   balancer every client is 127.0.0.1, so the address alone would send everything to one backend.
 *   `key` is a function so the other policies never build the string.
 */
export function pick<C extends Candidate>(cands: readonly C[], balance: Balance, rr: number, key: () => string, tried?: ReadonlySet<C>): C | undefined {
  const n = cands.length;
  let best: C | undefined;
  if (balance === 'hash') {
    const k = key();
    let top = -1;
    for (const c of cands) {
      if (tried?.has(c)) continue;
      const score = fnv1a(`${k}|${c.id}`);
      if (score > top || (score === top && c.id < best!.id)) [best, top] = [c, score];
    }
    return best;
  }
  const start = rr % n;
  for (let j = 0; j < n; j++) {
    const c = cands[(start + j) % n]!;
    if (tried?.has(c)) continue;
    if (balance === 'round_robin') return c;
    if (!best || c.active < best.active) best = c;
  }
  return best;
}

/** Every candidate in the order pick() would try them (for tests and tools; the proxy asks pick() as it goes). */
export function order<C extends Candidate>(cands: readonly C[], balance: Balance, rr: number, key: string): C[] {
  const tried = new Set<C>();
  for (let c = pick(cands, balance, rr, () => key, tried); c; c = pick(cands, balance, rr, () => key, tried)) tried.add(c);
  return [...tried];
}
