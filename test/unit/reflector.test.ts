/**
 * How a reflector's run is judged against the stand-ins' known history, with plain data: what a
 * lost, repeated or altered event looks like, what a list after 410 covers, and the longest gap.
 */
import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { analyse, PODS_PATH, Reflector, type ListRecord, type ReflectorLog, type SeenEvent } from '../../src/lab/reflector.js';
import { eventAt, podsAt, rvAt } from '../../src/lab/standin.js';

const L = rvAt(Date.parse('2026-12-02T12:00:00Z'));
const T = 1_800_000_000_000;
const list = (rv: number, at: number): Omit<ListRecord, 'seq'> => ({ rv, at, names: podsAt(rv).map((p) => p.metadata.name) });
/** Events rv from..to, one every 250 ms from `at`. */
const events = (from: number, to: number, at: number, standin = 'master-1'): Omit<SeenEvent, 'seq'>[] =>
  Array.from({ length: to - from + 1 }, (_, i) => ({ rv: from + i, type: eventAt(from + i).type, at: at + 250 * i, standin }));

/** A log as a reflector would keep it: lists and events in the order given, its store built from them. */
function run(...steps: (Omit<ListRecord, 'seq'> | Omit<SeenEvent, 'seq'>)[]): Pick<ReflectorLog, 'lists' | 'events' | 'store' | 'storeRv'> {
  const log: Pick<ReflectorLog, 'lists' | 'events' | 'store' | 'storeRv'> = { lists: [], events: [], store: {} };
  steps.forEach((s, seq) => {
    if ('names' in s) {
      log.lists.push({ ...s, seq });
      log.store = Object.fromEntries(podsAt(s.rv).map((p) => [p.metadata.name, p.metadata.uid]));
    } else {
      log.events.push({ ...s, seq });
      const o = eventAt(s.rv).object.metadata;
      if (s.type === 'DELETED') delete log.store[o.name];
      else log.store[o.name] = o.uid;
    }
    log.storeRv = s.rv;
  });
  return log;
}

describe('analyse', () => {
  it('a whole run: nothing missing or repeated, the store equal to the history, the gap one tick', () => {
    const v = analyse(run(list(L, T), ...events(L + 1, L + 40, T + 250)));
    expect(v).toMatchObject({ events: 40, lists: 1, missing: [], repeated: [], wrong: 0, storeMatches: true, longestGapMs: 250, standins: ['master-1'] });
  });

  it('an event that never came is missing, and a hole in time is the longest gap, from where it began', () => {
    const v = analyse(run(list(L, T), ...events(L + 1, L + 9, T + 250), ...events(L + 11, L + 20, T + 250 * 11 + 3000, 'master-2')));
    expect(v.missing).toEqual([L + 10]);
    expect(v.longestGapMs).toBe(3500);
    expect(v.longestGapAt).toBe(T + 250 * 9);
    expect(v.standins).toEqual(['master-1', 'master-2']);
  });

  it('an event seen twice, or back in time, is repeated', () => {
    const seen = events(L + 1, L + 6, T + 250);
    seen.splice(3, 0, { ...seen[2]!, at: seen[2]!.at + 1 });
    expect(analyse(run(list(L, T), ...seen)).repeated).toEqual([L + 3]);
  });

  it('a deletion never seen leaves a pod in the store that the history has gone', () => {
    const deleted = events(L + 1, L + 400, T + 250).find((e) => e.type === 'DELETED')!;
    // Up to just after it: the pod comes back (ADDED, a new uid) only at its next event.
    const v = analyse(run(list(L, T), ...events(L + 1, deleted.rv + 2, T + 250).filter((e) => e.rv !== deleted.rv)));
    expect(v.missing).toEqual([deleted.rv]);
    expect(v.storeMatches).toBe(false);
  });

  it('a list after 410 covers what happened before it: nothing is counted missing across it', () => {
    const v = analyse(run(list(L, T), ...events(L + 1, L + 5, T + 250), list(L + 500, T + 10_000), ...events(L + 501, L + 510, T + 10_250)));
    expect(v).toMatchObject({ lists: 2, missing: [], repeated: [], storeMatches: true });
  });

  it('a relist on a lagging stand-in, older than events already seen, starts a new run: nothing counted repeated across it', () => {
    // Watched up to L + 20 on one stand-in; its watch got 504 Too large; the list on a stand-in whose cache lags answers at L + 12.
    const v = analyse(run(list(L, T), ...events(L + 1, L + 20, T + 250), list(L + 12, T + 6000), ...events(L + 13, L + 30, T + 6250, 'master-2')));
    expect(v).toMatchObject({ lists: 2, events: 38, missing: [], repeated: [], storeMatches: true, standins: ['master-1', 'master-2'] });
  });

  it('counts what differs from the history', () => {
    const seen = events(L + 1, L + 4, T + 250);
    seen[1] = { ...seen[1]!, wrong: true };
    expect(analyse(run({ ...list(L, T), wrong: true }, ...seen)).wrong).toBe(2);
  });
});

describe('the reflector', () => {
  it('a watch ERROR 504 Too large resource version (a lagging watch cache) ends its watch, and it lists again, as client-go does', async () => {
    const rv = rvAt(Date.now());
    const tooLarge = { kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'Timeout', code: 504, message: `Too large resource version: ${rv + 20}, current: ${rv}`, details: { causes: [{ reason: 'ResourceVersionTooLarge' }] } };
    const watches: string[][] = [];
    // kubectl played by node: a list answers the history at rv; a watch answers 200 and then the ERROR.
    const kubectl = (args: string[]) => {
      const watching = args.some((a) => a.includes('watch=1'));
      if (watching) watches.push(args);
      const script = watching
        ? `process.stderr.write('I1205 round_trippers.go] Response Status: 200 OK\\n'); console.log(${JSON.stringify(JSON.stringify({ type: 'ERROR', object: tooLarge }))})`
        : `console.log(${JSON.stringify(JSON.stringify({ kind: 'PodList', metadata: { resourceVersion: String(rv) }, items: podsAt(rv) }))})`;
      return spawn(process.execPath, ['-e', script], { stdio: ['pipe', 'pipe', 'pipe'] });
    };
    const r = new Reflector(kubectl);
    r.start();
    await r.until((l) => l.lists.length >= 2, 10_000, 'a second list');
    const log = await r.stop();
    expect(watches[0]!.at(-1)).toContain(`${PODS_PATH}?watch=1&resourceVersion=${rv}`);
    expect(log.failures.map((f) => f.what)).toContainEqual(expect.stringMatching(/^watch: ERROR .*Too large resource version/));
    expect(log.gone).toBe(0);
    expect(analyse(log)).toMatchObject({ lists: log.lists.length, missing: [], repeated: [], storeMatches: true });
  });
});
