import { describe, expect, it } from 'vitest';
import { durationMs, durationRangeProblem, formatDuration, MAX_TIMER_MS } from '../../src/util/duration.js';

describe('durations', () => {
  it('reads ms, s, m and h', () => {
    expect([durationMs('250ms'), durationMs('30s'), durationMs('10m'), durationMs('1h')]).toEqual([250, 30_000, 600_000, 3_600_000]);
  });

  it('writes a bound in the largest unit that divides it', () => {
    expect([0, 100, 1500, 75_000, 600_000, 3_600_000, 86_400_000].map(formatDuration)).toEqual(['0s', '100ms', '1500ms', '75s', '10m', '1h', '24h']);
  });

  it('says the allowed range when out of it; leaves a malformed one to the grammar', () => {
    const b = { minMs: 100, maxMs: 3_600_000 };
    expect(durationRangeProblem('100ms', b)).toBeUndefined();
    expect(durationRangeProblem('1h', b)).toBeUndefined();
    expect(durationRangeProblem('99ms', b)).toBe('must be from 100ms to 1h');
    expect(durationRangeProblem('61m', b)).toBe('must be from 100ms to 1h');
    expect(durationRangeProblem('99999999999999999999999h', b)).toBe('must be from 100ms to 1h');
    expect(durationRangeProblem('soon', b)).toBeUndefined();
  });

  it('no bound may exceed what a Node.js timer waits (2^31-1 ms)', () => {
    expect(MAX_TIMER_MS).toBe(2_147_483_647);
    expect(() => durationRangeProblem('1s', { minMs: 0, maxMs: MAX_TIMER_MS + 1 })).toThrow(/beyond what a timer can wait/);
  });
});
