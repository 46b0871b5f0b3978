/**
 * Which backend a new connection goes to. Pure: the candidates (already healthy,
 * or all of them in panic mode) in, an ordered list of choices out: the first
 * is tried, then the next if its connect fails before any byte flowed.
 */

export interface Candidate {
  name: string;
  /** Open connections now. */
  active: number;
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
 * Rendezvous (highest random weight) hashing: each key ranks every backend; removing one moves only
 * its own keys. The key is the client's address AND port: on a node-local balancer every client is
 * 127.0.0.1, so the address alone would send everything to one backend.
 */
export function rankByHash(candidates: Candidate[], key: string): Candidate[] {
  return [...candidates].sort((a, b) => fnv1a(`${key}|${b.name}`) - fnv1a(`${key}|${a.name}`) || a.name.localeCompare(b.name));
}

/**
 * The index of order(...)[0] for least_conn and round_robin, without sorting or allocating: what
 * every new connection asks (the full order is needed only after a failed dial, and for hash).
 * The same rotation and tie-break as order(), so the two never disagree. `active(i)` is the open
 * connections of candidate i.
 */
export function firstIndex(count: number, active: (i: number) => number, balance: Exclude<Balance, 'hash'>, rr: number): number {
  const start = rr % count;
  if (balance === 'round_robin' || count === 1) return start;
  let best = start;
  for (let j = 1; j < count; j++) {
    const i = (start + j) % count;
    if (active(i) < active(best)) best = i;
  }
  return best;
}

export function order(candidates: Candidate[], balance: Balance, rr: number, key: string): Candidate[] {
  if (candidates.length <= 1) return candidates;
  if (balance === 'hash') return rankByHash(candidates, key);
  // Rotate by the round-robin counter: round_robin uses it as is, least_conn to break ties fairly.
  const start = rr % candidates.length;
  const rotated = [...candidates.slice(start), ...candidates.slice(0, start)];
  if (balance === 'round_robin') return rotated;
  return rotated.map((c, i) => ({ c, i })).sort((a, b) => a.c.active - b.c.active || a.i - b.i).map((x) => x.c);
}
