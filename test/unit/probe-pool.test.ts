/** The status probe scheduler and verdicts, with fake probes and plain data. */
import { describe, expect, it } from 'vitest';
import { ProbeTimeout } from '../../src/connect/https-probe.js';
import { ProbePool } from '../../src/engine/probe-pool.js';
import { nodeHealth } from '../../src/engine/status.js';
import type { LocalReach } from '../../src/engine/probe.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A probe that takes `ms`, honouring its deadline the way httpsGet does. */
function fake(ms: number, log: { started: number[]; deadlines: number[] }, t0: number) {
  return (deadlineMs: number) => {
    log.started.push(Date.now() - t0);
    log.deadlines.push(deadlineMs);
    return new Promise<string>((resolve, reject) => {
      if (ms > deadlineMs) setTimeout(() => reject(new ProbeTimeout(`no answer within ${deadlineMs} ms`)), deadlineMs);
      else setTimeout(() => resolve('200'), ms);
    });
  };
}

describe('the probe pool', () => {
  it('never runs more than its limit at once, nor more than its per-target bound against one target', async () => {
    const pool = new ProbePool({ limit: 4, perTarget: 2, timeoutMs: 1000, retryTimeoutMs: 2000 });
    let now = 0;
    let most = 0;
    const perTarget = new Map<string, number>();
    let mostPerTarget = 0;
    const probe = (target: string) => async () => {
      now++;
      perTarget.set(target, (perTarget.get(target) ?? 0) + 1);
      most = Math.max(most, now);
      mostPerTarget = Math.max(mostPerTarget, perTarget.get(target)!);
      await sleep(5);
      now--;
      perTarget.set(target, perTarget.get(target)! - 1);
      return 'ok';
    };
    const targets = ['m1', 'm2', 'm3'];
    const out = await Promise.all(Array.from({ length: 60 }, (_, i) => pool.run(targets[i % 3]!, probe(targets[i % 3]!))));
    expect(out.every((o) => o.kind === 'answer')).toBe(true);
    expect([most, mostPerTarget]).toEqual([4, 2]);
    expect([pool.peak, pool.peakPerTarget, pool.started, pool.retried]).toEqual([4, 2, 60, 0]);
  });

  it('one busy target does not hold up the others: a free target goes next', async () => {
    const pool = new ProbePool({ limit: 3, perTarget: 1, timeoutMs: 1000 });
    const order: string[] = [];
    const probe = (name: string, ms: number) => async () => {
      order.push(name);
      await sleep(ms);
      return name;
    };
    await Promise.all([pool.run('slow', probe('slow-1', 50)), pool.run('slow', probe('slow-2', 5)), pool.run('fast', probe('fast-1', 5))]);
    expect(order).toEqual(['slow-1', 'fast-1', 'slow-2']);
  });

  it("gives each probe its whole deadline from when it starts, not from when it was queued", async () => {
    const pool = new ProbePool({ limit: 1, perTarget: 1, timeoutMs: 100, retryTimeoutMs: 300 });
    const log = { started: [] as number[], deadlines: [] as number[] };
    const t0 = Date.now();
    // Five probes of 60 ms each, one at a time: the last starts ~240 ms after it was queued, and still answers.
    const out = await Promise.all(Array.from({ length: 5 }, () => pool.run('m1', fake(60, log, t0))));
    expect(out.map((o) => o.kind)).toEqual(['answer', 'answer', 'answer', 'answer', 'answer']);
    expect(log.started[4]).toBeGreaterThanOrEqual(200);
  });

  it('retries a timeout once with the longer deadline; a probe that answers then is an answer', async () => {
    const pool = new ProbePool({ limit: 2, perTarget: 2, timeoutMs: 30, retryTimeoutMs: 200 });
    const log = { started: [] as number[], deadlines: [] as number[] };
    const out = await pool.run('m1', fake(80, log, Date.now()));
    expect(out).toEqual({ kind: 'answer', value: '200', attempts: 2 });
    expect(log.deadlines).toEqual([30, 200]);
    expect(pool.retried).toBe(1);
  });

  it("a caller's own deadline (a deploy's verify, which retries on its own): counted from the call, the wait for a slot included; once, no retry", async () => {
    const pool = new ProbePool({ limit: 1, perTarget: 1, timeoutMs: 30, retryTimeoutMs: 200 });
    const log = { started: [] as number[], deadlines: [] as number[] };
    const t0 = Date.now();
    let ran = 0;
    const [slow, quick, late] = await Promise.all([
      pool.run('m1', fake(80, log, t0), 50),
      pool.run('m1', fake(10, log, t0), 120),
      // Still queued when its deadline passes: never started, nothing known.
      pool.run('m1', (ms) => (ran++, fake(10, log, t0)(ms)), 40),
    ]);
    // Its deadline is what is left of 50 ms when it starts (50, or a millisecond less).
    expect(slow).toMatchObject({ kind: 'unknown', attempts: 1, timeoutMs: 50 });
    expect(slow.kind === 'unknown' && slow.error).toMatch(/^no answer within (49|50) ms$/);
    expect(quick).toEqual({ kind: 'answer', value: '200', attempts: 1 });
    expect(late).toEqual({ kind: 'unknown', error: 'no probe slot within 40 ms', attempts: 1, timeoutMs: 40 });
    expect(ran).toBe(0);
    // One at a time: the second started once the first gave up, with what was left of its 120 ms.
    expect(log.started[1]).toBeGreaterThanOrEqual(45);
    expect(log.deadlines[0]).toBeLessThanOrEqual(50);
    expect(log.deadlines[1]).toBeLessThanOrEqual(120 - 45);
    expect([pool.peak, pool.retried]).toEqual([1, 0]);
  });

  it('two timeouts are unknown, never a failure; a definite error is a failure at once, not retried', async () => {
    const pool = new ProbePool({ limit: 2, perTarget: 2, timeoutMs: 20, retryTimeoutMs: 40 });
    const log = { started: [] as number[], deadlines: [] as number[] };
    const slow = await pool.run('m1', fake(1000, log, Date.now()));
    expect(slow).toEqual({ kind: 'unknown', error: 'no answer within 40 ms', attempts: 2, timeoutMs: 40 });
    let calls = 0;
    const refused = await pool.run('m1', async () => {
      calls++;
      throw new Error('connect ECONNREFUSED 10.0.0.1:6443');
    });
    expect([refused, calls]).toEqual([{ kind: 'failed', error: 'connect ECONNREFUSED 10.0.0.1:6443', attempts: 1 }, 1]);
  });
});

describe('a node is down only on definite evidence', () => {
  const local = (o: Partial<LocalReach>): LocalReach => ({ listening: true, attempts: 3, ok: 0, unknown: 0, timedOut: 0, errors: [], ...o });
  const running = 'active (running)';

  it('healthy when an apiserver answered through the local port, whatever else timed out', () => {
    expect(nodeHealth({ reachable: true, service: running, local: local({ ok: 1, timedOut: 2 }) })).toBe('healthy');
  });

  it('unknown when nothing answered and something timed out (twice)', () => {
    expect(nodeHealth({ reachable: true, service: running, local: local({ timedOut: 1, errors: ['refused', 'refused', 'timed out'] }) })).toBe('unknown');
  });

  it('down when every probe was refused or answered an error, the service is not running, or the node is unreachable', () => {
    expect(nodeHealth({ reachable: true, service: running, local: local({ errors: ['connect ECONNREFUSED', 'HTTP 500', 'HTTP 500'] }) })).toBe('down');
    expect(nodeHealth({ reachable: true, service: 'failed', local: local({ ok: 3 }) })).toBe('down');
    expect(nodeHealth({ reachable: false, service: undefined, local: undefined })).toBe('down');
  });
});
