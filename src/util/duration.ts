/**
 * Durations as the inventory and the flags write them: 500ms, 30s, 10m, 1h, or several units from
 * the largest down, each at most once (1h30m, 2m30s, 1h0m5s, 1s500ms), the way Go's
 * time.ParseDuration and kubectl read them. Whole numbers only: nginx reads the inventory's
 * durations as written and takes no fractions. One grammar, one parser.
 */
export const DURATION = /^(?=\d)(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$/;

export const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const;

/** The forms every duration message names, so each one says what to write. */
export const DURATION_EXAMPLES = '500ms, 30s, 10m or 1h30m';

/**
 * The longest delay a Node.js timer takes: above it setTimeout fires at once (with a warning), so a
 * longer timeout would act as no timeout at all. Every duration k8s-ha or kube-lb arms stays below.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

export function durationMs(text: string): number {
  const m = DURATION.exec(text);
  if (!m) throw new Error(`not a duration: ${text}`);
  const [, h, min, s, ms] = m;
  return Number(h ?? 0) * UNIT_MS.h + Number(min ?? 0) * UNIT_MS.m + Number(s ?? 0) * UNIT_MS.s + Number(ms ?? 0);
}

/** A number of milliseconds the way a person writes it: the largest unit that divides it (90000 is 90s, 3600000 is 1h). */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0s';
  for (const [unit, size] of [['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) {
    if (ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

/** A whole number of milliseconds in every unit it needs, largest first (5400000 is 1h30m): the fix a message offers. */
export function compoundDuration(ms: number): string {
  if (ms === 0) return '0s';
  let out = '';
  let rest = ms;
  for (const [unit, size] of [['h', UNIT_MS.h], ['m', UNIT_MS.m], ['s', UNIT_MS.s], ['ms', UNIT_MS.ms]] as const) {
    const n = Math.floor(rest / size);
    if (n > 0) out += `${n}${unit}`;
    rest -= n * size;
  }
  return out;
}

/**
 * Why a text is not a duration, with what to write instead, or undefined when it is one. Where the
 * meaning is plain (30m1h, 1h 30m, 1.5h) the fix is that duration in the accepted form.
 */
export function durationProblem(text: string): string | undefined {
  if (DURATION.test(text)) return undefined;
  const like = `must be a duration like ${DURATION_EXAMPLES}`;
  const t = text.trim();
  if (t === '') return `is empty: write a duration like ${DURATION_EXAMPLES}`;
  if (/^\d+$/.test(t)) return `has no unit: write ${t}s, ${t}m or ${t}ms`;
  if (/^-/.test(t)) return `cannot be negative: write a duration like ${DURATION_EXAMPLES}`;
  // Read leniently (any order, repeats, fractions, spaces) only to offer the same length in the accepted form.
  const parts = [...t.matchAll(/(\d+(?:\.\d+)?)(ms|h|m|s)\s*/gy)];
  if (parts.map((p) => p[0]).join('') !== t) return like;
  const ms = parts.reduce((sum, p) => sum + Number(p[1]) * UNIT_MS[p[2] as keyof typeof UNIT_MS], 0);
  if (!Number.isSafeInteger(ms)) return like;
  const fix = compoundDuration(ms);
  if (parts.some((p) => p[1]!.includes('.'))) return `takes whole numbers of each unit: write ${fix}`;
  if (/\s/.test(text)) return `must be written without spaces: write ${fix}`;
  return `must give each unit at most once, from hours down to milliseconds: write ${fix}`;
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
