/** Durations as the inventory and the flags write them: 500ms, 30s, 10m, 1h. One grammar, one parser. */

export const DURATION = /^(\d+)(ms|s|m|h)$/;

export const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const;

/**
 * The longest delay a Node.js timer takes: above it setTimeout fires at once (with a warning), so a
 * longer timeout would act as no timeout at all. Every duration k8s-ha or kube-lb arms stays below.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

export function durationMs(text: string): number {
  const m = DURATION.exec(text);
  if (!m) throw new Error(`not a duration: ${text}`);
  const n = Number(m[1]);
  return n * UNIT_MS[m[2] as keyof typeof UNIT_MS];
}

/** A number of milliseconds the way a person writes it: the largest unit that divides it (90000 is 90s, 3600000 is 1h). */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0s';
  for (const [unit, size] of [['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) {
    if (ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

export interface DurationBounds {
  minMs: number;
  maxMs: number;
}

/** Why a duration is out of bounds (`must be from 100ms to 1h`), or undefined when it is within them. Bounds above MAX_TIMER_MS are a bug. */
export function durationRangeProblem(text: string, b: DurationBounds): string | undefined {
  if (b.maxMs > MAX_TIMER_MS) throw new Error(`internal: ${b.maxMs} ms is beyond what a timer can wait`);
  if (!DURATION.test(text)) return undefined;
  const ms = durationMs(text);
  if (ms >= b.minMs && ms <= b.maxMs) return undefined;
  return `must be from ${formatDuration(b.minMs)} to ${formatDuration(b.maxMs)}`;
}
