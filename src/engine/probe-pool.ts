/**
 * How status probes run: through one bounded pool per run (so 500 nodes do not start 3,000 TLS
 * handshakes at once), with a bound per target too (so three apiservers do not each take 500 at
 * once), and a deadline that starts when a probe starts, not when it was queued. A probe that runs
 * out of time says nothing about its target: it is retried once with a longer deadline, and if that
 * times out too the answer is `unknown`, never `down`. Only a definite answer (refused, a TLS
 * error, an HTTP status) counts as evidence. Pure: the probes are passed in.
 */

export type ProbeOutcome<T> =
  /** The probe answered (whatever it answered: the caller judges the value). */
  | { kind: 'answer'; value: T; attempts: number }
  /** A definite failure: refused, unreachable, TLS error... */
  | { kind: 'failed'; error: string; attempts: number }
  /** Every attempt ran out of time: nothing is known. */
  | { kind: 'unknown'; error: string; attempts: number; timeoutMs: number };

export interface ProbePoolOptions {
  /** Probes running at once, in all. */
  limit: number;
  /** Probes running at once against one target (one apiserver). */
  perTarget: number;
  /** First attempt's deadline, from when it starts. */
  timeoutMs: number;
  /** The retry's deadline, after a timeout; none: no retry (a caller that retries on its own). */
  retryTimeoutMs?: number;
}

/** An error that means "ran out of time" (`timedOut: true`, see https-probe.ts), as opposed to an answer of failure. */
export function isTimeout(e: unknown): boolean {
  return (e as { timedOut?: boolean } | undefined)?.timedOut === true;
}

interface Waiter {
  target: string;
  start: () => void;
}

export class ProbePool {
  private running = 0;
  private readonly perTarget = new Map<string, number>();
  private readonly queue: Waiter[] = [];
  /** Most probes running at once, and against one target: what the bounds held. */
  peak = 0;
  peakPerTarget = 0;
  started = 0;
  retried = 0;

  constructor(readonly o: ProbePoolOptions) {}

  private free(target: string): boolean {
    return this.running < this.o.limit && (this.perTarget.get(target) ?? 0) < this.o.perTarget;
  }

  private take(target: string): void {
    this.running++;
    const n = (this.perTarget.get(target) ?? 0) + 1;
    this.perTarget.set(target, n);
    this.started++;
    this.peak = Math.max(this.peak, this.running);
    this.peakPerTarget = Math.max(this.peakPerTarget, n);
  }

  private release(target: string): void {
    this.running--;
    this.perTarget.set(target, (this.perTarget.get(target) ?? 1) - 1);
    // The first waiter whose target has room goes next: one busy apiserver does not hold up the others.
    const i = this.queue.findIndex((w) => this.free(w.target));
    if (i >= 0) this.queue.splice(i, 1)[0]!.start();
  }

  private slot(target: string): Promise<void> {
    if (this.free(target)) {
      this.take(target);
      return Promise.resolve();
    }
    return new Promise((resolve) =>
      this.queue.push({
        target,
        start: () => {
          this.take(target);
          resolve();
        },
      }),
    );
  }

  private async attempt<T>(target: string, probe: (timeoutMs: number) => Promise<T>, timeoutMs: number, until?: number): Promise<T> {
    await this.slot(target);
    try {
      // A caller's deadline counts the wait for a slot too: what is left of it, or nothing at all.
      const ms = until === undefined ? timeoutMs : until - Date.now();
      if (ms <= 0) throw Object.assign(new Error(`no probe slot within ${timeoutMs} ms`), { timedOut: true });
      return await probe(ms);
    } finally {
      this.release(target);
    }
  }

  /**
   * Run `probe` (given its deadline in ms, counted from when it starts) against `target`, within the
   * bounds. `timeoutMs`: the caller's own deadline, counted from now, the wait for a slot included, and
   * not retried (a caller that retries on its own until a deadline of its own: a deploy's verify).
   */
  async run<T>(target: string, probe: (timeoutMs: number) => Promise<T>, timeoutMs?: number): Promise<ProbeOutcome<T>> {
    let last: unknown;
    const until = timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
    const deadlines = timeoutMs !== undefined ? [timeoutMs] : this.o.retryTimeoutMs === undefined ? [this.o.timeoutMs] : [this.o.timeoutMs, this.o.retryTimeoutMs];
    for (let i = 0; i < deadlines.length; i++) {
      if (i > 0) this.retried++;
      try {
        return { kind: 'answer', value: await this.attempt(target, probe, deadlines[i]!, until), attempts: i + 1 };
      } catch (e) {
        last = e;
        if (!isTimeout(e)) return { kind: 'failed', error: message(e), attempts: i + 1 };
      }
    }
    return { kind: 'unknown', error: message(last), attempts: deadlines.length, timeoutMs: deadlines[deadlines.length - 1]! };
  }
}

const message = (e: unknown) => ((e as Error)?.message ?? String(e)).split('\n')[0]!.slice(0, 160);

/**
 * Probe bounds for one run (status: `probes` at once, default 32; a deploy's rolled verify: the
 * default). Each probe is a TLS handshake over an SSH channel: CPU on this machine, on the node and
 * on the apiserver. 32 at once keep a 2-core controller busy without starving the probes' own
 * deadlines; a third of them per apiserver (at least 4) keeps 500 nodes from queueing 500
 * handshakes on one. The first deadline is counted from the probe's start; a timeout is retried
 * once, longer.
 */
export function probeBounds(probes = 32): ProbePoolOptions {
  return { limit: probes, perTarget: Math.max(4, Math.ceil(probes / 3)), timeoutMs: 3000, retryTimeoutMs: 8000 };
}
