/**
 * How long a node's local port goes without serving while one balancer hands it to another (or
 * anything else happens to it): a request every 20 ms through the node (an HTTPS GET of /version
 * over an SSH direct-tcpip channel from the node's 127.0.0.1), and the gap is the longest time
 * between two answers. Answers, not connects: a paused process's kernel still completes the
 * handshake, so a connect that works proves nothing. For the switch tests and bench:switch.
 */
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import { httpsGet, type ProbeSession } from '../connect/https-probe.js';

export interface ServedReport {
  /** Requests sent, one every `everyMs` (fewer when this process was too busy to send them on time). */
  sent: number;
  answered: number;
  /** Requests that got no answer (or not a 200): when each was sent and when it failed, in ms after the watch began, and why. */
  failures: { sentMs: number; failedMs: number; error: string }[];
  /** The longest time between two answers (the watch's start and stop count as answers), in ms. */
  longestGapMs: number;
  /** When that gap began and ended, in ms after the watch began. */
  longestGapFromMs: number;
  longestGapToMs: number;
  /** When each answer came, and when the watch stopped, in ms after the watch began. */
  answersMs: number[];
  stoppedMs: number;
  everyMs: number;
  /** When the watch began (epoch ms): to place other clients' failures against the gap. */
  startedAt: number;
}

/**
 * The longest time between two answers, from `start` to `stop`: the watch starts on a serving port,
 * and one still not answering when the watch stops has been out until then.
 */
export function longestGap(start: number, answers: number[], stop: number): { ms: number; from: number; to: number } {
  const at = [start, ...[...answers].sort((a, b) => a - b)];
  if (at[at.length - 1]! < stop) at.push(stop);
  let gap = { ms: 0, from: start, to: start };
  for (let i = 1; i < at.length; i++) if (at[i]! - at[i - 1]! > gap.ms) gap = { ms: at[i]! - at[i - 1]!, from: at[i - 1]!, to: at[i]! };
  return gap;
}

/**
 * Call `request` every `everyMs` without waiting for the ones in flight (a stalled port piles them
 * up, as it would real clients), until stop(). A request resolves when it was answered and rejects
 * when it was not.
 */
export function watchServed(request: () => Promise<void>, everyMs = 20): { stop: () => Promise<ServedReport> } {
  const started = Date.now();
  const answers: number[] = [];
  const failures: ServedReport['failures'] = [];
  const inFlight = new Set<Promise<void>>();
  let sent = 0;
  const send = () => {
    const at = Date.now();
    sent++;
    const p = request().then(
      () => void answers.push(Date.now()),
      (e: Error) => void failures.push({ sentMs: at - started, failedMs: Date.now() - started, error: e.message }),
    );
    inFlight.add(p);
    void p.finally(() => inFlight.delete(p));
  };
  send();
  const timer = setInterval(send, everyMs);
  return {
    stop: async () => {
      clearInterval(timer);
      const stopped = Date.now();
      await Promise.all(inFlight);
      failures.sort((a, b) => a.sentMs - b.sentMs);
      const gap = longestGap(started, answers, stopped);
      return {
        sent,
        answered: answers.length,
        failures,
        longestGapMs: gap.ms,
        longestGapFromMs: gap.from - started,
        longestGapToMs: gap.to - started,
        answersMs: answers.map((a) => a - started).sort((a, b) => a - b),
        stoppedMs: stopped - started,
        everyMs,
        startedAt: started,
      };
    },
  };
}

export interface NodePortOptions {
  /** PEM of the apiservers' CA: each answer is TLS-verified, as a kubelet's would be. */
  ca: string;
  servername: string;
  /** Give up on one request after this long: it counts as unanswered. */
  timeoutMs?: number;
  everyMs?: number;
}

/**
 * watchServed for a node's local balancer: GET /version (which an apiserver answers even while its
 * /readyz is red) through `connect`, a 200 required. TLS sessions are resumed, so 50 requests a
 * second per node cost the busy lab machine a few full handshakes (certificate checks), not 50.
 */
export function watchNodePort(connect: () => Promise<Duplex>, opts: NodePortOptions): { stop: () => Promise<ServedReport> } {
  const secureContext = tls.createSecureContext({ ca: opts.ca });
  let session: ProbeSession | undefined;
  return watchServed(async () => {
    const r = await httpsGet(connect, {
      path: '/version',
      servername: opts.servername,
      secureContext,
      session,
      onSession: (s) => (session = s),
      // Longer than any gap a test allows: a request left hanging shows as a long failure window.
      timeoutMs: opts.timeoutMs ?? 5000,
    });
    if (r.status !== 200) throw new Error(`HTTP ${r.status}`);
  }, opts.everyMs);
}

/**
 * The one stretch that holds every unanswered request, from the last answer before the first of them
 * was sent to the first answer after the last of them failed; undefined when every request was
 * answered. `otherFailuresMs`: when other clients of the same port saw a request fail (ms after the
 * watch began). Two outages, or a request left hanging while others were answered, make it long.
 */
export function failureWindow(r: ServedReport, otherFailuresMs: number[] = []): { fromMs: number; toMs: number; ms: number } | undefined {
  const starts = [...r.failures.map((f) => f.sentMs), ...otherFailuresMs];
  const ends = [...r.failures.map((f) => f.failedMs), ...otherFailuresMs];
  if (!starts.length) return undefined;
  const first = Math.min(...starts);
  const last = Math.max(...ends);
  const fromMs = Math.max(0, ...r.answersMs.filter((a) => a <= first));
  const toMs = r.answersMs.find((a) => a >= last) ?? Math.max(r.stoppedMs, last);
  return { fromMs, toMs, ms: toMs - fromMs };
}
