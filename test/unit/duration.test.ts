import { describe, expect, it } from 'vitest';
import { compoundDuration, DURATION, durationMs, durationProblem, durationRangeProblem, formatDuration, MAX_TIMER_MS } from '../../src/util/duration.js';

describe('durations', () => {
  it('reads ms, s, m and h', () => {
    expect([durationMs('250ms'), durationMs('30s'), durationMs('10m'), durationMs('1h')]).toEqual([250, 30_000, 600_000, 3_600_000]);
  });

  it('reads compound durations, largest unit first, each unit once', () => {
    expect(['1h30m', '2m30s', '1h0m5s', '1s500ms', '1m5ms', '0h0m0s'].map(durationMs)).toEqual([5_400_000, 150_000, 3_605_000, 1500, 60_005, 0]);
    for (const ok of ['90s', '5m', '1h30m', '1h0m5s']) expect(durationProblem(ok), ok).toBeUndefined();
    for (const bad of ['30m1h', '1h1h', '5ms1s', '', ' ', '-5s', '1.5h', '1h 30m', '30', '5d', '10 minutes', 'h', '1hm']) {
      expect(DURATION.test(bad), bad).toBe(false);
      expect(() => durationMs(bad), bad).toThrow(/not a duration/);
      expect(durationProblem(bad), bad).toMatch(/^(must|is|has|cannot|takes)/);
    }
  });

  it('says what to write instead, in the accepted form where the meaning is plain', () => {
    expect(durationProblem('30m1h')).toBe('must give each unit at most once, from hours down to milliseconds: write 1h30m');
    expect(durationProblem('1h1h')).toBe('must give each unit at most once, from hours down to milliseconds: write 2h');
    expect(durationProblem('1.5h')).toBe('takes whole numbers of each unit: write 1h30m');
    expect(durationProblem('1h 30m')).toBe('must be written without spaces: write 1h30m');
    expect(durationProblem('30')).toBe('has no unit: write 30s, 30m or 30ms');
    expect(durationProblem('')).toBe('is empty: write a duration like 500ms, 30s, 10m or 1h30m');
    expect(durationProblem('-5s')).toBe('cannot be negative: write a duration like 500ms, 30s, 10m or 1h30m');
    expect(durationProblem('soon')).toBe('must be a duration like 500ms, 30s, 10m or 1h30m');
    expect(durationProblem('0.5ms')).toBe('must be a duration like 500ms, 30s, 10m or 1h30m');
  });

  it('writes a fix in every unit it needs', () => {
    expect([0, 500, 1500, 90_000, 5_400_000, 3_605_000, 7_200_000].map(compoundDuration)).toEqual(['0s', '500ms', '1s500ms', '1m30s', '1h30m', '1h5s', '2h']);
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
    expect(durationRangeProblem('59m60s', b)).toBeUndefined();
    expect(durationRangeProblem('1h0m1s', b)).toBe('must be from 100ms to 1h');
  });

  it('no bound may exceed what a Node.js timer waits (2^31-1 ms)', () => {
    expect(MAX_TIMER_MS).toBe(2_147_483_647);
    expect(() => durationRangeProblem('1s', { minMs: 0, maxMs: MAX_TIMER_MS + 1 })).toThrow(/beyond what a timer can wait/);
  });
});
