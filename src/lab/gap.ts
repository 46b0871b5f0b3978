/**
 * How long a node's local port refuses connections while one balancer hands it
 * to another: connect through the node (SSH direct-tcpip from 127.0.0.1 there)
 * back to back, and measure each run of refusals from the last connection that
 * worked to the next one that does. For the switch test and bench:switch.
 */
import type { Duplex } from 'node:stream';

export interface GapReport {
  attempts: number;
  refused: number;
  /** Each outage, in ms: last good connect before it to the first good one after. */
  gaps: number[];
  longestGapMs: number;
  /** Mean time between attempts: the resolution of the measurement. */
  resolutionMs: number;
}

export function watchPort(connect: () => Promise<Duplex>): { stop: () => Promise<GapReport> } {
  let running = true;
  let attempts = 0;
  let refused = 0;
  const gaps: number[] = [];
  const started = Date.now();
  const loop = (async () => {
    let lastOk = Date.now();
    let down = false;
    while (running) {
      attempts++;
      try {
        const s = await connect();
        s.destroy();
        const now = Date.now();
        if (down) gaps.push(now - lastOk);
        down = false;
        lastOk = now;
      } catch {
        refused++;
        down = true;
        // A connect can fail without ever waiting (a closed SSH client): let the event loop run.
        await new Promise((r) => setImmediate(r));
      }
    }
    // Still refusing at the end: the outage lasts until now.
    if (down) gaps.push(Date.now() - lastOk);
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return { attempts, refused, gaps, longestGapMs: Math.max(0, ...gaps), resolutionMs: (Date.now() - started) / Math.max(1, attempts) };
    },
  };
}
