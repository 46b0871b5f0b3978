/**
 * A reflector, as client-go's informers run one, around a real kubectl (for lab tests and
 * bench:clients). It lists to get a resourceVersion, watches from it with bookmarks and a
 * timeoutSeconds, resumes from the last resourceVersion it saw each time a watch ends, waits a
 * second when the watch is refused, and lists again on 410 Gone or any other failed watch, as
 * client-go 1.20's ListAndWatch does. `kubectl get --watch` would not do: it ends with its watch.
 *
 * Each kubectl is one process and one connection, so a resumed watch also pays for a process
 * start; client-go would reuse its HTTP/2 connection when it still works.
 *
 * What the reflector saw is judged against the stand-ins' known history (analyse): every event
 * once, in order, none missing, and its store equal to the pods at the last resourceVersion.
 */
import type { ChildProcess } from 'node:child_process';
import { eventAt, podsAt, type Pod } from './standin.js';

/** Run kubectl with these arguments (on a node through docker exec or SSH, or here). */
export type KubectlRunner = (args: string[]) => ChildProcess;

export const PODS_PATH = '/api/v1/namespaces/default/pods';

export interface SeenEvent {
  rv: number;
  type: string;
  /** ms since the epoch, on arrival. */
  at: number;
  /** Which stand-in's watch it came on. */
  standin?: string;
  /** The object differs from the history's. */
  wrong?: boolean;
}

export interface WatchRecord {
  from: number;
  standin?: string;
  startedAt: number;
  endedAt?: number;
  exit?: number | null;
  events: number;
  /** kubectl's last error line, when it failed. */
  error?: string;
}

export interface ListRecord {
  rv: number;
  at: number;
  names: string[];
  /** The items differ from the history's pods at rv. */
  wrong?: boolean;
}

export interface ReflectorLog {
  lists: ListRecord[];
  events: SeenEvent[];
  bookmarks: number;
  watches: WatchRecord[];
  /** 410 Gone answers (watch ERROR events or list statuses). */
  gone: number;
  /** Failures to list or to start a watch, with when. */
  failures: { at: number; what: string }[];
}

export interface ReflectorOptions {
  /** Each watch asks for a timeoutSeconds between this and twice this (client-go: 5 to 10 minutes). */
  watchTimeoutS?: number;
  /** Print what happens (kubectl's errors, resumptions). */
  log?: (line: string) => void;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** kubectl -v=8 prints each response's headers: the stand-in that served the request names itself. */
const STANDIN_HEADER = /\]\s+X-Standin: (\S+)/i;

export class Reflector {
  readonly log: ReflectorLog = { lists: [], events: [], bookmarks: 0, watches: [], gone: 0, failures: [] };
  private running = false;
  private loop?: Promise<void>;
  private child?: ChildProcess;
  private readonly watchTimeoutS: number;

  constructor(
    private readonly kubectl: KubectlRunner,
    private readonly options: ReflectorOptions = {},
  ) {
    this.watchTimeoutS = options.watchTimeoutS ?? 10;
  }

  start(): void {
    this.running = true;
    this.loop = this.run();
  }

  /** The stand-in serving the current watch, once it has answered. */
  get standin(): string | undefined {
    const w = this.log.watches.at(-1);
    return w && w.endedAt === undefined ? w.standin : undefined;
  }

  /** Resolves when `test` holds of the log (checked every 100 ms), or rejects after timeoutMs. */
  async until(test: (log: ReflectorLog) => boolean, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!test(this.log)) {
      if (Date.now() > deadline) throw new Error(`the reflector did not see ${what} within ${timeoutMs / 1000} s`);
      await sleep(100);
    }
  }

  async stop(): Promise<ReflectorLog> {
    this.running = false;
    this.child?.kill();
    await this.loop;
    return this.log;
  }

  private async run(): Promise<void> {
    let rv: number | undefined;
    let backoffMs = 800;
    while (this.running) {
      if (rv === undefined) {
        rv = await this.list();
        if (rv === undefined) {
          // client-go's backoff between failed ListAndWatch runs: 800 ms, doubling, at most 30 s.
          await sleep(backoffMs);
          backoffMs = Math.min(30_000, backoffMs * 2);
          continue;
        }
        backoffMs = 800;
      }
      const w = await this.watch(rv);
      if (!this.running) break;
      rv = w.next;
      if (w.outcome === 'refused') await sleep(1000);
      else if (w.outcome === 'failed') {
        await sleep(backoffMs);
        backoffMs = Math.min(30_000, backoffMs * 2);
      } else backoffMs = 800;
    }
  }

  private async list(): Promise<number | undefined> {
    const r = await this.runKubectl(['get', '--raw', PODS_PATH]);
    if (r.code !== 0) {
      this.fail(`list: ${lastLine(r.stderr) || `kubectl exit ${r.code}`}`);
      return undefined;
    }
    try {
      const l = JSON.parse(r.stdout) as { metadata: { resourceVersion: string }; items: Pod[] };
      const rv = Number(l.metadata.resourceVersion);
      const wrong = JSON.stringify(l.items) !== JSON.stringify(podsAt(rv));
      this.log.lists.push({ rv, at: Date.now(), names: l.items.map((p) => p.metadata.name), ...(wrong ? { wrong } : {}) });
      return rv;
    } catch (e) {
      this.fail(`list: not a PodList: ${(e as Error).message}`);
      return undefined;
    }
  }

  /** One watch from `from`; what to resume from, and how it ended. */
  private watch(from: number): Promise<{ next: number | undefined; outcome: 'ended' | 'refused' | 'failed' }> {
    const timeout = Math.round(this.watchTimeoutS * (1 + Math.random()));
    const rec: WatchRecord = { from, startedAt: Date.now(), events: 0 };
    this.log.watches.push(rec);
    const child = this.kubectl(['-v=8', 'get', '--raw', `${PODS_PATH}?watch=1&resourceVersion=${from}&allowWatchBookmarks=true&timeoutSeconds=${timeout}`]);
    this.child = child;
    let next: number | undefined = from;
    let gone = false;
    let buf = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8');
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => {
      stderr += d;
      rec.standin ??= STANDIN_HEADER.exec(stderr)?.[1];
      if (stderr.length > 65536) stderr = stderr.slice(-8192);
    });
    child.stdout!.on('data', (d: string) => {
      const at = Date.now();
      buf += d;
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (!line.trim()) continue;
        let e: { type: string; object: { code?: number; metadata?: { resourceVersion?: string } } };
        try {
          e = JSON.parse(line);
        } catch {
          this.fail(`watch: not an event: ${line.slice(0, 120)}`);
          continue;
        }
        if (e.type === 'ERROR') {
          if (e.object.code === 410) {
            gone = true;
            this.log.gone++;
          } else this.fail(`watch: ERROR ${JSON.stringify(e.object).slice(0, 200)}`);
          continue;
        }
        const erv = Number(e.object.metadata?.resourceVersion);
        if (e.type === 'BOOKMARK') this.log.bookmarks++;
        else {
          const wrong = JSON.stringify(e) !== JSON.stringify(eventAt(erv));
          this.log.events.push({ rv: erv, type: e.type, at, standin: rec.standin, ...(wrong ? { wrong } : {}) });
          rec.events++;
        }
        if (Number.isFinite(erv)) next = erv;
      }
    });
    return new Promise((resolve) => {
      child.on('close', (code) => {
        rec.endedAt = Date.now();
        rec.exit = code;
        if (this.child === child) this.child = undefined;
        if (gone) return resolve({ next: undefined, outcome: 'ended' });
        if (code === 0 || rec.events > 0) return resolve({ next, outcome: 'ended' });
        rec.error = lastLine(stderr);
        this.fail(`watch from ${from}: ${rec.error || `kubectl exit ${code}`}`);
        // client-go waits a second and watches again when refused; any other failure ends ListAndWatch: back off, list again.
        resolve(/refused/i.test(stderr) ? { next, outcome: 'refused' } : { next: undefined, outcome: 'failed' });
      });
    });
  }

  private runKubectl(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      const child = this.kubectl(args);
      let stdout = '';
      let stderr = '';
      child.stdout!.on('data', (d: Buffer) => (stdout += d));
      child.stderr!.on('data', (d: Buffer) => (stderr += d));
      child.on('error', (e) => resolve({ code: null, stdout, stderr: stderr + e.message }));
      child.on('close', (code) => resolve({ code, stdout, stderr }));
    });
  }

  private fail(what: string): void {
    if (!this.running) return;
    this.log.failures.push({ at: Date.now(), what });
    this.options.log?.(what);
  }
}

function lastLine(text: string): string {
  return (
    text
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !/^I\d{4} /.test(l))
      .at(-1) ?? ''
  );
}

export interface ReflectorVerdict {
  events: number;
  lists: number;
  /** Events of the history after a list that the reflector never saw, though it saw later ones. */
  missing: number[];
  /** Events seen more than once, or out of order. */
  repeated: number[];
  /** Events or lists whose objects differ from the history's. */
  wrong: number;
  /** The reflector's store (list, then every event applied) equals the pods at the last resourceVersion it saw. */
  storeMatches: boolean;
  /** The longest time between two events, and when it began (ms since the epoch). */
  longestGapMs: number;
  longestGapAt?: number;
  /** The stand-ins the events came from, in turn. */
  standins: string[];
}

/** Judge a reflector's log against the history: pure, for tests and the benchmark. */
export function analyse(log: Pick<ReflectorLog, 'lists' | 'events'>): ReflectorVerdict {
  const missing: number[] = [];
  const repeated: number[] = [];
  const wrong = log.lists.filter((l) => l.wrong).length + log.events.filter((e) => e.wrong).length;
  let store = new Map<string, string>();
  let last: number | undefined;
  let expectNext: number | undefined;
  // Walk lists and events in the order they happened: a list starts a new run of events.
  type Step = { at: number; list?: ListRecord; event?: SeenEvent };
  const steps: Step[] = [...log.lists.map((l) => ({ at: l.at, list: l })), ...log.events.map((e) => ({ at: e.at, event: e }))].sort((a: Step, b: Step) => a.at - b.at || (a.list ? -1 : 1));
  for (const s of steps) {
    if (s.list) {
      store = new Map(podsAt(s.list.rv).map((p) => [p.metadata.name, p.metadata.uid]));
      expectNext = s.list.rv + 1;
      last = s.list.rv;
      continue;
    }
    const e = s.event!;
    if (expectNext === undefined || e.rv < expectNext) {
      repeated.push(e.rv);
      continue;
    }
    for (let rv = expectNext; rv < e.rv; rv++) missing.push(rv);
    expectNext = e.rv + 1;
    last = e.rv;
    const o = eventAt(e.rv).object;
    if (e.type === 'DELETED') store.delete(o.metadata.name);
    else store.set(o.metadata.name, o.metadata.uid);
  }
  const truth = last === undefined ? [] : podsAt(last).map((p) => [p.metadata.name, p.metadata.uid]);
  const storeMatches = last !== undefined && JSON.stringify([...store.entries()].sort()) === JSON.stringify(truth.sort());
  let longestGapMs = 0;
  let longestGapAt: number | undefined;
  for (let i = 1; i < log.events.length; i++) {
    const gap = log.events[i]!.at - log.events[i - 1]!.at;
    if (gap > longestGapMs) {
      longestGapMs = gap;
      longestGapAt = log.events[i - 1]!.at;
    }
  }
  const standins: string[] = [];
  for (const e of log.events) if (e.standin && e.standin !== standins.at(-1)) standins.push(e.standin);
  return {
    events: log.events.length,
    lists: log.lists.length,
    missing,
    repeated,
    wrong,
    storeMatches,
    longestGapMs,
    ...(longestGapAt !== undefined ? { longestGapAt } : {}),
    standins,
  };
}

export interface Fault {
  apply: (victim: string) => Promise<void>;
  undo: (victim: string) => Promise<void>;
  /** The client is back: judged on its log, the stand-in hit and when. */
  recovered: (log: ReflectorLog, victim: string, at: number) => boolean;
  timeoutMs: number;
  /** What recovery looks like, for the error when it does not come. */
  what: string;
}

export interface FaultRun {
  /** The stand-in the watch was on when the fault began. */
  victim: string;
  /** When the fault began (ms since the epoch). */
  at: number;
  log: ReflectorLog;
  verdict: ReflectorVerdict;
}

/**
 * Run a reflector until it streams, hit the stand-in its watch is on with `fault`, wait for
 * `recovered` (or fail after timeoutMs), undo the fault, and return what the client saw.
 */
export async function underFault(kubectl: KubectlRunner, fault: Fault): Promise<FaultRun> {
  const r = new Reflector(kubectl, { watchTimeoutS: 30 });
  r.start();
  let victim: string | undefined;
  let at = 0;
  try {
    await r.until((l) => l.events.length >= 8 && !!r.standin, 30_000, 'a streaming watch');
    victim = r.standin!;
    at = Date.now();
    await fault.apply(victim);
    await r.until((l) => fault.recovered(l, victim!, at), fault.timeoutMs, fault.what);
    // A few more events after recovery: the run of events goes on.
    const seen = r.log.events.length;
    await r.until((l) => l.events.length >= seen + 4, 10_000, 'events after recovery');
  } finally {
    if (victim) await fault.undo(victim);
    await r.stop();
  }
  return { victim, at, log: r.log, verdict: analyse(r.log) };
}

/** Events came from a stand-in other than the victim after the fault. */
export const movedOn = (l: ReflectorLog, victim: string, at: number) => l.events.some((e) => e.at > at && e.standin !== undefined && e.standin !== victim);
