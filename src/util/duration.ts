/** Durations as the inventory and the flags write them: 500ms, 30s, 10m, 1h. One grammar, one parser. */

export const DURATION = /^(\d+)(ms|s|m|h)$/;

export function durationMs(text: string): number {
  const m = DURATION.exec(text);
  if (!m) throw new Error(`not a duration: ${text}`);
  const n = Number(m[1]);
  return n * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h'];
}
