/**
 * A reflector, as client-go's informers run one, around a real kubectl (for lab tests and
 * bench:clients). `kubectl get --watch` would not do: it ends with its watch. It follows the rules of
 * client-go 1.20's ListAndWatch:
 *   - list (the pods, with no resourceVersion: the newest), keep them as its store;
 *   - watch from the list's resourceVersion with allowWatchBookmarks and a timeoutSeconds;
 *   - a watch that was answered and then ended (its timeout, a cut connection, client-go's HTTP/2
 *     health check giving up) is watched again at once from the last resourceVersion seen;
 *   - a watch refused (connection refused) is tried again from there after a second;
 *   - a watch that could not start for another reason, or ended within a second with nothing,
 *     and a watch ERROR event (410 Gone; 504 Too large resource version from a lagging watch
 *     cache) end the run: list again, after client-go's backoff (800 ms doubling to 30 s) unless
 *     it was a 410.
 * Each kubectl is one process and one connection, so a resumed watch also pays for a process
 * start; client-go would reuse its HTTP/2 connection when it still works.
 *
 * What it saw is judged against the stand-ins' known history (analyse): every event once, in
 * order, none missing, and its store (what it built from what it received) equal to the pods the
 * history has at the last resourceVersion it saw.
 */
import type { ChildProcess } from 'node:child_process';
import { eventAt, podsAt, type Pod } from './standin.js';
import type { MasterAction } from './topology.js';

/** Run kubectl with these arguments (on a node, or here). stop() ends its stdin, then kills it. */
export type KubectlRunner = (args: string[]) => ChildProcess;

export const PODS_PATH = '/api/v1/namespaces/default/pods';

export interface SeenEvent {
  /** Order of arrival among lists and events. */
  seq: number;
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
  /** The stand-in answered (HTTP 200): the watch started. */
  answered: boolean;
  endedAt?: number;
  exit?: number | null;
  events: number;
  /** kubectl's last error line, when it failed. */
  error?: string;
}

export interface ListRecord {
  seq: number;
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
  /** 410 Gone: watch ERROR events carrying code 410. */
  gone: number;
  /** Failures to list or to start a watch, with when. */
  failures: { at: number; what: string }[];
  /** The reflector's store, built from the objects it received: name -> uid, and the resourceVersion it reflects. */
  store: Record<string, string>;
  storeRv?: number;
}

export interface ReflectorOptions {
  /** Each watch asks for a timeoutSeconds between this and twice this (client-go: 300, 5 to 10 minutes). */
  watchTimeoutS?: number;
  /** Print what happens (kubectl's errors). */
  log?: (line: string) => void;
}

/** kubectl -v=8 prints each response's status and headers: the stand-in that served the request names itself. */
const STANDIN_HEADER = /\]\s+X-Standin: (\S+)/i;
const ANSWERED = /\]\s+Response Status: 200/;

type Outcome = 'resume' | 'refused' | 'relist' | 'backoff';

export class Reflector {
  readonly log: ReflectorLog = { lists: [], events: [], bookmarks: 0, watches: [], gone: 0, failures: [], store: {} };
  private running = false;
  private loop?: Promise<void>;
  private children = new Set<ChildProcess>();
  private wake?: () => void;
  private seq = 0;
  private readonly watchTimeoutS: number;

  constructor(
    private readonly kubectl: KubectlRunner,
    private readonly options: ReflectorOptions = {},
  ) {
    this.watchTimeoutS = options.watchTimeoutS ?? 300;
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
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async stop(): Promise<ReflectorLog> {
    this.running = false;
    this.wake?.();
    for (const c of this.children) {
      c.stdin?.end();
      c.kill();
    }
    await this.loop;
    return this.log;
  }

  /** A sleep stop() cuts short. */
  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      this.wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }

  private async run(): Promise<void> {
    let rv: number | undefined;
    let backoffMs = 800;
    while (this.running) {
      if (rv === undefined) {
        rv = await this.list();
        if (!this.running) break;
        if (rv === undefined) {
          await this.pause(backoffMs);
          backoffMs = Math.min(30_000, backoffMs * 2);
          continue;
        }
      }
      const { outcome, next } = await this.watch(rv);
      if (!this.running) break;
      rv = outcome === 'resume' || outcome === 'refused' ? next : undefined;
      if (outcome === 'refused') await this.pause(1000);
      else if (outcome === 'backoff') {
        await this.pause(backoffMs);
        backoffMs = Math.min(30_000, backoffMs * 2);
      } else if (outcome === 'resume') backoffMs = 800;
    }
  }

  private async list(): Promise<number | undefined> {
    const r = await this.runKubectl(['get', '--raw', PODS_PATH]);
    if (!this.running) return undefined;
    if (r.code !== 0) {
      this.fail(`list: ${lastLine(r.stderr) || `kubectl exit ${r.code}`}`);
      return undefined;
    }
    try {
      const l = JSON.parse(r.stdout) as { metadata: { resourceVersion: string }; items: Pod[] };
      const rv = Number(l.metadata.resourceVersion);
      const wrong = JSON.stringify(l.items) !== JSON.stringify(podsAt(rv));
      this.log.lists.push({ seq: this.seq++, rv, at: Date.now(), names: l.items.map((p) => p.metadata.name), ...(wrong ? { wrong } : {}) });
      this.log.store = Object.fromEntries(l.items.map((p) => [p.metadata.name, p.metadata.uid]));
      this.log.storeRv = rv;
      return rv;
    } catch (e) {
      this.fail(`list: not a PodList: ${(e as Error).message}`);
      return undefined;
    }
  }

  /** One watch from `from`; what to resume from, and what to do next. */
  private watch(from: number): Promise<{ next: number; outcome: Outcome }> {
    const timeout = Math.round(this.watchTimeoutS * (1 + Math.random()));
    const rec: WatchRecord = { from, startedAt: Date.now(), answered: false, events: 0 };
    this.log.watches.push(rec);
    const child = this.spawn(['-v=8', 'get', '--raw', `${PODS_PATH}?watch=1&resourceVersion=${from}&allowWatchBookmarks=true&timeoutSeconds=${timeout}`]);
    const firstEvent = this.log.events.length;
    let next = from;
    let gone = false;
    /** Another ERROR event: client-go's watchHandler returns it, and the reflector lists again. */
    let failed = false;
    let lines = 0;
    let buf = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8');
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => {
      stderr += d;
      rec.answered ||= ANSWERED.test(stderr);
      if (!rec.standin) {
        rec.standin = STANDIN_HEADER.exec(stderr)?.[1];
        // Events that came before the header did on stderr are this watch's too.
        if (rec.standin) for (const e of this.log.events.slice(firstEvent)) e.standin ??= rec.standin;
      }
      if (stderr.length > 65536) stderr = stderr.slice(-8192);
    });
    child.stdout!.on('data', (d: string) => {
      const at = Date.now();
      buf += d;
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (!line.trim()) continue;
        lines++;
        let e: { type: string; object: Pod & { code?: number } };
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
          } else {
            failed = true;
            this.fail(`watch: ERROR ${JSON.stringify(e.object).slice(0, 200)}`);
          }
          continue;
        }
        const erv = Number(e.object.metadata?.resourceVersion);
        if (!Number.isSafeInteger(erv)) {
          this.fail(`watch: an event without a resourceVersion: ${line.slice(0, 120)}`);
          continue;
        }
        next = erv;
        if (e.type === 'BOOKMARK') {
          this.log.bookmarks++;
          this.log.storeRv = erv;
          continue;
        }
        const wrong = JSON.stringify(e) !== JSON.stringify(eventAt(erv));
        this.log.events.push({ seq: this.seq++, rv: erv, type: e.type, at, standin: rec.standin, ...(wrong ? { wrong } : {}) });
        rec.events++;
        const m = e.object.metadata;
        if (e.type === 'DELETED') delete this.log.store[m.name];
        else this.log.store[m.name] = m.uid;
        this.log.storeRv = erv;
      }
    });
    return new Promise((resolve) => {
      const done = (code: number | null) => {
        if (rec.endedAt !== undefined) return;
        rec.endedAt = Date.now();
        rec.exit = code;
        this.children.delete(child);
        if (gone) return resolve({ next, outcome: 'relist' });
        if (failed) return resolve({ next, outcome: 'backoff' });
        const short = rec.endedAt - rec.startedAt < 1000 && lines === 0;
        if ((rec.answered || lines > 0) && !short) return resolve({ next, outcome: 'resume' });
        rec.error = lastLine(stderr);
        this.fail(`watch from ${from}: ${rec.error || `kubectl exit ${code}`}`);
        resolve({ next, outcome: /refused/i.test(stderr) ? 'refused' : 'backoff' });
      };
      child.on('error', (e) => {
        stderr += `\n${e.message}`;
        done(null);
      });
      child.on('close', done);
    });
  }

  private spawn(args: string[]): ChildProcess {
    const child = this.kubectl(args);
    this.children.add(child);
    return child;
  }

  private runKubectl(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      const child = this.spawn(args);
      let stdout = '';
      let stderr = '';
      child.stdout!.on('data', (d: Buffer) => (stdout += d));
      child.stderr!.on('data', (d: Buffer) => (stderr += d));
      const done = (code: number | null, extra = '') => {
        this.children.delete(child);
        resolve({ code, stdout, stderr: stderr + extra });
      };
      child.on('error', (e) => done(null, e.message));
      child.on('close', (code) => done(code));
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
  /** The reflector's own store equals the pods the history has at the resourceVersion it reflects. */
  storeMatches: boolean;
  /** The longest time between two events, and when it began (ms since the epoch). */
  longestGapMs: number;
  longestGapAt?: number;
  /** The stand-ins the events came from, in turn. */
  standins: string[];
}

/** Judge a reflector's log against the history: pure, for tests and the benchmark. */
export function analyse(log: Pick<ReflectorLog, 'lists' | 'events' | 'store' | 'storeRv'>): ReflectorVerdict {
  const missing: number[] = [];
  const repeated: number[] = [];
  const wrong = log.lists.filter((l) => l.wrong).length + log.events.filter((e) => e.wrong).length;
  let expectNext: number | undefined;
  // In the order they happened: a list starts a new run of events.
  const steps: { list?: ListRecord; event?: SeenEvent; seq: number }[] = [
    ...log.lists.map((list) => ({ list, seq: list.seq })),
    ...log.events.map((event) => ({ event, seq: event.seq })),
  ].sort((a, b) => a.seq - b.seq);
  for (const s of steps) {
    if (s.list) {
      expectNext = s.list.rv + 1;
      continue;
    }
    const e = s.event!;
    if (expectNext === undefined || e.rv < expectNext) {
      repeated.push(e.rv);
      continue;
    }
    for (let rv = expectNext; rv < e.rv; rv++) missing.push(rv);
    expectNext = e.rv + 1;
  }
  const truth = log.storeRv === undefined ? undefined : Object.fromEntries(podsAt(log.storeRv).map((p) => [p.metadata.name, p.metadata.uid]));
  const sorted = (o: Record<string, string>) => JSON.stringify(Object.entries(o).sort());
  const storeMatches = truth !== undefined && sorted(truth) === sorted(log.store);
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
  apply: (victim: string) => Promise<unknown>;
  undo: (victim: string) => Promise<unknown>;
  /** The client is back: judged on its log, the stand-in hit, and the watch that was running then. */
  recovered: (log: ReflectorLog, victim: string, cut: WatchRecord, at: number) => boolean;
  timeoutMs: number;
  /** What recovery looks like, for the error when it does not come. */
  what: string;
  /** Faults of several clients at once (underFaults) with the same key for a victim are one fault: applied and undone once. */
  key?: (victim: string) => string;
}

export interface FaultRun {
  /** The stand-in the watch was on when the fault began. */
  victim: string;
  /** When the fault began (ms since the epoch). */
  at: number;
  /** The watch that was running when the fault began ended (was cut), and after how long. */
  cutAfterMs?: number;
  log: ReflectorLog;
  verdict: ReflectorVerdict;
}

/**
 * Run a reflector until it streams, hit the stand-in its watch is on with `fault`, wait for
 * `recovered` (or fail after timeoutMs), undo the fault, and return what the client saw. Its
 * watches ask for 5 to 10 minutes, as client-go's: none ends by itself during a run.
 */
export async function underFault(kubectl: KubectlRunner, fault: Fault): Promise<FaultRun> {
  return (await underFaults([{ kubectl, fault }]))[0]!;
}

/**
 * underFault for several clients at once (each through its own balancer): each reflector streams,
 * then every client's fault hits the stand-in its own watch is on, all at the same moment (a fault
 * with the same `key` for two clients is applied and undone once), and each must recover as its
 * fault says. The same faults, in one run instead of one per client.
 */
export async function underFaults(clients: { kubectl: KubectlRunner; fault: Fault }[]): Promise<FaultRun[]> {
  const rs = clients.map((c) => new Reflector(c.kubectl));
  rs.forEach((r) => r.start());
  const victims: string[] = [];
  const cuts: WatchRecord[] = [];
  const cutAts: (number | undefined)[] = [];
  let at = 0;
  // Each distinct fault once: by its key, or (without one) per client.
  const once = (what: 'apply' | 'undo') => {
    const seen = new Set<string>();
    return Promise.all(
      clients.map((c, i) => {
        const v = victims[i];
        if (v === undefined) return undefined;
        const key = c.fault.key?.(v);
        if (key !== undefined) {
          if (seen.has(key)) return undefined;
          seen.add(key);
        }
        return c.fault[what](v);
      }),
    );
  };
  try {
    try {
      await Promise.all(rs.map((r) => r.until((l) => l.events.length >= 8 && !!r.standin, 30_000, 'a streaming watch')));
      rs.forEach((r, i) => {
        victims[i] = r.standin!;
        cuts[i] = r.log.watches.at(-1)!;
      });
      at = Date.now();
      await once('apply');
      await Promise.all(
        rs.map(async (r, i) => {
          const f = clients[i]!.fault;
          await r.until((l) => f.recovered(l, victims[i]!, cuts[i]!, at), f.timeoutMs, f.what);
          // A few more events after recovery: the run of events goes on.
          const seen = r.log.events.length;
          await r.until((l) => l.events.length >= seen + 4, 10_000, 'events after recovery');
          // Before undo and stop, which end it too.
          cutAts[i] = cuts[i]!.endedAt;
        }),
      );
    } finally {
      await once('undo');
    }
  } finally {
    await Promise.all(rs.map((r) => r.stop()));
  }
  return rs.map((r, i) => ({
    victim: victims[i]!,
    at,
    ...(cutAts[i] !== undefined ? { cutAfterMs: cutAts[i]! - at } : {}),
    log: r.log,
    verdict: analyse(r.log),
  }));
}

/** The watch running at the fault was cut, and a later one delivers events from another stand-in. */
export function movedOn(l: ReflectorLog, victim: string, cut: WatchRecord): boolean {
  return cut.endedAt !== undefined && l.watches.some((w) => w.startedAt >= cut.endedAt! && w.events > 0 && w.standin !== undefined && w.standin !== victim);
}

/** The watch running at the fault was cut, and a later one delivers events (through a VIP: whichever stand-in). */
export function resumed(l: ReflectorLog, _victim: string, cut: WatchRecord): boolean {
  return cut.endedAt !== undefined && l.watches.some((w) => w.startedAt >= cut.endedAt! && w.events > 0);
}

/** What a fault does to the lab: `lab master NAME ACTION`, and deploys to the client's node. */
export interface LabOps {
  master: (name: string, action: MasterAction) => Promise<unknown>;
  /** Deploy the client's node without this master: a rolling reconfigure that retires it. */
  retire: (victim: string) => Promise<unknown>;
  /** Deploy the client's node as before. */
  restore: () => Promise<unknown>;
}

export const STANDIN_FAULTS = ['unready', 'frozen', 'stopped', 'retired'] as const;

/**
 * The faults a node-local balancer's client meets, hitting the stand-in its watch is on, and what
 * recovery is through `impl`: one definition for the lab tests and bench:clients.
 */
export function standinFaults(impl: 'nginx' | 'kube-lb', ops: LabOps): Record<(typeof STANDIN_FAULTS)[number], Fault> {
  const other = 'events from another stand-in';
  return {
    unready: {
      key: (v) => `unready ${v}`,
      apply: (v) => ops.master(v, 'unready'),
      undo: (v) => ops.master(v, 'ready'),
      // kube-lb closes what it carries to a backend its checks fail (in about 2 s); kube-nginx keeps it.
      recovered: (l, victim, cut, at) => (impl === 'kube-lb' ? movedOn(l, victim, cut) : l.events.some((e) => e.at > at + 6000)),
      timeoutMs: 30_000,
      what: impl === 'kube-lb' ? other : 'events 6 s after the fault',
    },
    // kube-nginx has no checks: client-go's own HTTP/2 health check (30 s idle, 15 s ping) ends the watch.
    frozen: { key: (v) => `freeze ${v}`, apply: (v) => ops.master(v, 'freeze'), undo: (v) => ops.master(v, 'thaw'), recovered: movedOn, timeoutMs: 90_000, what: other },
    stopped: { key: (v) => `stop ${v}`, apply: (v) => ops.master(v, 'stop'), undo: (v) => ops.master(v, 'start'), recovered: movedOn, timeoutMs: 30_000, what: other },
    // kube-nginx's old workers keep what they carry until worker_shutdown_timeout (10 s).
    retired: { apply: (v) => ops.retire(v), undo: () => ops.restore(), recovered: movedOn, timeoutMs: 60_000, what: other },
  };
}

/** The host holding a VIP goes down (`lab master HOST down`), and comes back; the client is through the VIP. */
export function holderDown(holder: string, master: LabOps['master']): Fault {
  return {
    apply: () => master(holder, 'down'),
    undo: () => master(holder, 'up'),
    // The lost host sends no reset: the watch ends when the client notices, then resumes through the new holder.
    recovered: resumed,
    timeoutMs: 90_000,
    what: 'a new watch through the VIP delivering events',
  };
}
