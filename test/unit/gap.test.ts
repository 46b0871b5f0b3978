/**
 * The switch gap is measured by answers: a port whose process is paused still completes TCP
 * handshakes (its kernel does), and must count as out until it answers again; a port that refuses
 * counts as out too, and each request it refused is reported.
 */
import https from 'node:https';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { failureWindow, longestGap, watchNodePort } from '../../src/lab/gap.js';
import { createCa, issueCertificate, type PemPair } from '../../src/lab/pki.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let ca: PemPair;
let api: https.Server;
const closers: (() => void)[] = [];

beforeAll(async () => {
  ca = await createCa('gap test CA');
  const leaf = await issueCertificate(ca, { commonName: 'apiserver', dnsNames: ['kubernetes'], ipAddresses: [], usage: 'server' });
  api = https.createServer({ cert: leaf.cert, key: leaf.key }, (_req, res) => res.end('{}'));
});
afterAll(() => closers.forEach((c) => c()));

/** A listener in front of the apiserver that can be paused: connections accepted, then held unread until it resumes. */
async function pausable(): Promise<{ port: number; pause: () => void; resume: () => void }> {
  let paused = false;
  const held: net.Socket[] = [];
  const serve = (s: net.Socket) => {
    api.emit('connection', s);
    s.resume();
  };
  const front = net.createServer({ pauseOnConnect: true }, (s) => (paused ? held.push(s) : serve(s)));
  await new Promise<void>((r) => front.listen(0, '127.0.0.1', r));
  closers.push(() => front.close());
  return {
    port: (front.address() as AddressInfo).port,
    pause: () => (paused = true),
    resume: () => {
      paused = false;
      held.splice(0).forEach(serve);
    },
  };
}

const dial = (port: number) => () =>
  new Promise<net.Socket>((resolve, reject) => {
    const c = net.connect(port, '127.0.0.1', () => resolve(c));
    c.once('error', reject);
  });

describe('longestGap', () => {
  it('is the longest time between answers, the start and a stop with no answer after it counting as answers', () => {
    expect(longestGap(0, [20, 40, 300, 320], 340)).toEqual({ ms: 260, from: 40, to: 300 });
    expect(longestGap(0, [320, 20], 340)).toEqual({ ms: 300, from: 20, to: 320 });
    // Still out when the watch stopped: out until then.
    expect(longestGap(0, [20, 40], 1000)).toEqual({ ms: 960, from: 40, to: 1000 });
    // Answers to requests still in flight at the stop close the gap.
    expect(longestGap(0, [20, 40, 60, 1010], 1000)).toEqual({ ms: 950, from: 60, to: 1010 });
  });
});

describe('watchNodePort', () => {
  it('a paused process whose kernel still accepts: every connect works, yet the gap is the pause; its requests are answered after it', async () => {
    const p = await pausable();
    const w = watchNodePort(dial(p.port), { ca: ca.cert, servername: 'kubernetes' });
    await sleep(200);
    p.pause();
    await sleep(400);
    p.resume();
    await sleep(200);
    const r = await w.stop();
    expect(r.failures).toEqual([]);
    expect(r.answered).toBe(r.sent);
    expect(r.longestGapMs).toBeGreaterThanOrEqual(400);
  });

  it('a port that refuses: each request it refused is a failure, and the gap spans them', async () => {
    const p = await pausable();
    let refusing = false;
    const w = watchNodePort(() => (refusing ? Promise.reject(new Error('connect ECONNREFUSED')) : dial(p.port)()), { ca: ca.cert, servername: 'kubernetes' });
    await sleep(200);
    refusing = true;
    await sleep(300);
    refusing = false;
    await sleep(200);
    const r = await w.stop();
    expect(r.failures.length).toBeGreaterThan(5);
    expect(r.failures.every((f) => f.error === 'connect ECONNREFUSED')).toBe(true);
    expect(r.answered + r.failures.length).toBe(r.sent);
    expect(r.longestGapMs).toBeGreaterThanOrEqual(300);
    // One outage, and every refused request was part of it.
    const span = failureWindow(r)!;
    expect(span.ms).toBeGreaterThanOrEqual(300);
    expect(span.ms).toBeLessThan(r.longestGapMs + 100);
  });

  it('the failure window spans every unanswered request: one left hanging, or a second outage, makes it long', () => {
    const answersMs = Array.from({ length: 50 }, (_, i) => i * 20).filter((a) => a < 200 || a > 260);
    const report = { sent: 50, answered: answersMs.length, everyMs: 20, startedAt: 0, longestGapMs: 80, longestGapFromMs: 180, longestGapToMs: 280, answersMs, stoppedMs: 1000 };
    const inGap = { sentMs: 210, failedMs: 212, error: 'refused' };
    expect(failureWindow({ ...report, failures: [inGap] })).toEqual({ fromMs: 180, toMs: 280, ms: 100 });
    expect(failureWindow({ ...report, failures: [] })).toBeUndefined();
    // Another client's failure at 600 ms: a second outage.
    expect(failureWindow({ ...report, failures: [inGap] }, [600])).toEqual({ fromMs: 180, toMs: 600, ms: 420 });
    // A request sent at 100 ms that hung until its timeout, while the others were answered.
    const hung = { sentMs: 100, failedMs: 900, error: 'no answer to GET /version within 800 ms' };
    expect(failureWindow({ ...report, failures: [hung] })).toEqual({ fromMs: 100, toMs: 900, ms: 800 });
  });

  it('an answer that is not a 200 is no answer', async () => {
    const leaf = await issueCertificate(ca, { commonName: 'apiserver', dnsNames: ['kubernetes'], ipAddresses: [], usage: 'server' });
    const s = https.createServer({ cert: leaf.cert, key: leaf.key }, (_req, res) => {
      res.statusCode = 503;
      res.end();
    });
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    closers.push(() => s.close());
    const w = watchNodePort(dial((s.address() as AddressInfo).port), { ca: ca.cert, servername: 'kubernetes' });
    await sleep(100);
    const r = await w.stop();
    expect(r.answered).toBe(0);
    expect(r.failures.map((f) => f.error)).toEqual(Array.from({ length: r.sent }, () => 'HTTP 503'));
  });
});
