/**
 * One run at a time per host: a flock on /run/k8s-ha/lock, held by a process on the host that
 * lives as long as this controller's SSH channel and no longer than its lease: the controller
 * sends a byte every LOCK_RENEW_MS, and a holder that hears nothing for LOCK_LEASE_S (a controller
 * gone silent: power lost, network cut, no FIN) or reads the end of its input (a controller that
 * exited or closed the channel) exits, and the lock goes with it. The holder writes who it is
 * beside the lock, so a second run can say who holds it and since when. The same holder closes
 * the run's journal when the controller asks (a byte down the channel, once verify passed): a
 * change's last step needs no command of its own.
 */
import os from 'node:os';
import { deadlineOf } from '../connect/deadlines.js';
import { LOCK_LEASE_S, type RemoteResult, type SshConnection } from '../connect/ssh.js';
import { quote } from '../util/quote.js';
import { applyLockPath, finishJournal, JOURNAL_DIR, keeperHoldsLock, parseJournal, type Journal } from './scripts.js';

/** The byte that asks a lock's keeper to finish the run's journal (finishJournal), and what ends its answer. */
export const FINISH_ASK = 'F';
const FINISH_DONE = /^@@finish-rc (\d+)\n/m;

/** The finish's answer as a command's result: its output (stdout and stderr together) and exit code. */
export function finishAnswer(out: string): RemoteResult {
  const body = /^@@finish\n([\s\S]*?)^@@finish-rc \d+\n/m.exec(out)?.[1] ?? '';
  return { stdout: body, stderr: '', code: Number(FINISH_DONE.exec(out)?.[1] ?? 1), signal: null };
}

export const LOCK_DIR = '/run/k8s-ha';

/** Who this controller is, as a lock holder and in journals: `user@host (pid N)`. */
export function controllerIdentity(): string {
  let user = 'unknown';
  try {
    user = os.userInfo().username;
  } catch {
    // no passwd entry (a container): keep "unknown"
  }
  return `${user}@${os.hostname()} (pid ${process.pid})`;
}

/** Shell: print an open journal (run.json, then its state word) between markers; `journalIn` reads it back. */
function printJournal(quotedDir: string): string {
  return `if [ -f ${quotedDir}/run.json ]; then echo "@@journal"; cat ${quotedDir}/run.json; echo; echo "@@state-word"; cat ${quotedDir}/state 2>/dev/null; echo "@@end-journal"; fi`;
}

function journalIn(stdout: string): Journal | undefined {
  const j = /^@@journal\n([\s\S]*?)@@end-journal$/m.exec(stdout);
  return j ? parseJournal(j[1]!) : undefined;
}

/**
 * `then`: a script to run once the lock is held and no journal is open (the facts script), so
 * taking the lock costs no round trip of its own; its output comes between @@then and @@then-end.
 */
export function lockScript(
  holder: string,
  waitSeconds: number,
  dirs = { lock: LOCK_DIR, journal: JOURNAL_DIR },
  then?: string,
  /** How long a holder keeps the lock without hearing from its controller. */
  leaseSeconds = LOCK_LEASE_S,
  /** How long to wait for a script of an earlier run still moving files (its apply deadline). */
  applyWaitSeconds = 300,
): string {
  const d = quote(dirs.lock);
  const J = quote(dirs.journal);
  const w = Math.max(0, Math.ceil(waitSeconds));
  return [
    'set -u',
    `d=${d}`,
    'command -v flock >/dev/null 2>&1 || { echo "@@lockerr flock (util-linux) is not installed"; exit 72; }',
    'command -v timeout >/dev/null 2>&1 || { echo "@@lockerr timeout (coreutils) is not installed"; exit 72; }',
    '[ -d "$d" ] || mkdir -p -m 0700 "$d" || { echo "@@lockerr cannot create $d"; exit 70; }',
    'exec 9>>"$d/lock" || { echo "@@lockerr cannot open $d/lock"; exit 71; }',
    'if ! flock -n 9; then',
    w > 0 ? `  echo "@@waiting"; head -n 1 "$d/holder" 2>/dev/null; echo; echo "@@end-holder"; flock -w ${w} 9 && ok=1 || ok=0` : '  ok=0',
    // The holder writes its name just after taking the lock: give it a moment so we do not read its predecessor's.
    '  if [ $ok = 0 ]; then sleep 0.3; echo "@@busy"; head -n 1 "$d/holder" 2>/dev/null; echo; echo "@@end-holder"; exit 75; fi',
    'fi',
    // The lease keeper alone holds the lock from here: it reads the controller's renewal bytes and
    // exits at the end of its input (the channel closed) or after leaseSeconds of silence (a
    // controller gone without a word), and the lock goes with it. This shell lets go of fd 9, so
    // nothing it runs next (a facts read stuck on a hung disk) can keep the lock past its run.
    // (A background job's stdin is /dev/null unless given: fd 3 carries the channel to it.)
    // A byte F asks the keeper to finish this run's journal (FINISH_ASK): the last step of a change,
    // once the controller has proven it serves, done over this channel with no command of its own.
    // The finish runs beside the keeper, which goes on reading (a finish that hangs cannot keep the
    // lock past its lease), and without the lock's descriptor (nothing it starts can hold the lock);
    // the apply lock it takes keeps any next run off the journal until it is done. Each byte is read
    // with an x after it, so a newline is a byte like any other; the end of input and the lease's
    // silence leave nothing.
    'exec 3<&0 4>&1',
    `( while c=$(timeout ${Math.max(1, Math.ceil(leaseSeconds))} head -c 1 2>/dev/null; echo x); c=\${c%x}; [ -n "$c" ]; do`,
    `  [ "$c" = ${FINISH_ASK} ] || continue`,
    `  ( echo "@@finish"; ( ${finishJournal(dirs.journal).trim()}
  ) </dev/null 2>&1; echo "@@finish-rc $?" ) 9>&- 3<&- 4>&- </dev/null &`,
    'done ) <&3 >&4 2>/dev/null &',
    'exec 9>&- 3<&- 4>&-',
    // Who holds it, and the keeper's PID: a probe sees the lock held when that process has it open
    // (/proc/locks hides a lock whose taker, the flock utility, has exited, inside a container).
    `printf '%s\\npid %s\\n' ${quote(holder)} "$!" > "$d/holder"`,
    // A script of a controller that died may still be moving files: wait for it before reading its journal.
    // (Without a journal there is nothing to read; a script just starting refuses to run on top of ours.)
    `if [ -f ${J}/run.json ]; then flock -w ${Math.ceil(applyWaitSeconds)} ${quote(applyLockPath(dirs.journal))} true || { echo "@@lockerr a k8s-ha script on this host has been running for ${Math.ceil(applyWaitSeconds)} s"; kill $! 2>/dev/null; exit 73; }; fi`,
    'echo "@@locked"',
    printJournal(J),
    // Their stdin is not the channel: a guard that reads it would eat the lease's renewals.
    ...(then ? [`if [ ! -f ${J}/run.json ]; then echo "@@then"; ( ${then.trim()}
) </dev/null 2>/dev/null; echo "@@then-rc $?"; echo "@@then-end"; fi`] : []),
    'echo "@@ready"',
    'wait',
  ].join('\n');
}

export type LockOutcome =
  | {
      held: true;
      journal?: Journal;
      release: () => void;
      then?: string;
      /** Finish the run's journal (finishJournal) through the lock's own channel, while the lock is held. */
      finish: () => Promise<RemoteResult>;
    }
  | { held: false; busy: true; holder: string }
  | { held: false; busy: false; error: string };

export function parseLockOutput(stdout: string): { locked: boolean; busy: boolean; holder?: string; journal?: Journal; error?: string } {
  const holderOf = (marker: string) => {
    const i = stdout.lastIndexOf(`@@${marker}\n`);
    if (i < 0) return undefined;
    const rest = stdout.slice(i + marker.length + 3);
    return rest.slice(0, rest.indexOf('@@end-holder')).trim() || 'another run (holder unknown)';
  };
  if (/^@@locked$/m.test(stdout)) {
    return { locked: true, busy: false, journal: journalIn(stdout) };
  }
  if (/^@@busy$/m.test(stdout)) return { locked: false, busy: true, holder: holderOf('busy') };
  const err = /^@@lockerr (.*)$/m.exec(stdout)?.[1];
  return { locked: false, busy: false, error: err ?? (stdout.trim() || 'the lock script ended without a word') };
}

/** Take the host's lock for this run (waiting up to waitSeconds when another run holds it), then run `then`. */
export async function takeLock(
  conn: SshConnection,
  holder: string,
  waitSeconds: number,
  onWait?: (holder: string) => void,
  then?: string,
  /** Aborting gives up a wait for the lock (Ctrl-C). */
  signal?: AbortSignal,
): Promise<LockOutcome> {
  let told = false;
  let waitingHolder = 'another run';
  let release: (() => void) | undefined;
  // Closing the channel ends the remote flock wait at once.
  const abort = () => release?.();
  signal?.addEventListener('abort', abort, { once: true });
  const applyWaitSeconds = deadlineOf('apply', conn.target.deadlines) / 1000;
  const h = await conn.hold(
    lockScript(holder, waitSeconds, undefined, then, LOCK_LEASE_S, applyWaitSeconds),
    (out) => {
      if (!told && /^@@end-holder$/m.test(out) && /^@@waiting$/m.test(out)) {
        told = true;
        waitingHolder = parseLockOutput(out.replace('@@waiting', '@@busy')).holder ?? waitingHolder;
        onWait?.(waitingHolder);
      }
      return /^@@ready$/m.test(out);
    },
    (r) => {
      release = r;
      if (signal?.aborted && told) r();
    },
    // The lock's own deadline runs on top of the waits asked for: --wait-lock, and an earlier run's script.
    (Math.max(0, waitSeconds) + applyWaitSeconds) * 1000,
    // Once the facts start, theirs.
    (out) => (/^@@then$/m.test(out) ? 'facts' : 'lock'),
  );
  signal?.removeEventListener('abort', abort);
  if (h.exited && told && signal?.aborted) return { held: false, busy: true, holder: waitingHolder };
  const p = parseLockOutput(h.stdout);
  const thenOut = /^@@then\n([\s\S]*?)^@@then-end$/m.exec(h.stdout)?.[1];
  if (p.locked && !h.exited) {
    const finish = async () => finishAnswer(await h.ask(FINISH_ASK, (out) => FINISH_DONE.test(out), 'command'));
    return { held: true, journal: p.journal, release: h.release, then: thenOut, finish };
  }
  h.release();
  if (p.busy) return { held: false, busy: true, holder: p.holder! };
  return { held: false, busy: false, error: p.error ?? `the lock script exited (${h.code})` };
}

/** Read-only: who holds the host's lock now, if anyone (status, --check). Reads /proc/locks; never takes the lock. */
export function lockProbe(dirs = { lock: LOCK_DIR, journal: JOURNAL_DIR }): string {
  return [
    `d=${quote(dirs.lock)}`,
    // Held: the lock file has a flock in /proc/locks, or the holder's keeper is alive with it open.
    // /proc/locks names a file by MAJ:MIN:INODE in hex, as the kernel splits st_dev: inode numbers alone repeat across file systems.
    'if [ -e "$d/lock" ]; then ino=$(stat -c %i "$d/lock"); dev=$(stat -c %d "$d/lock"); ' +
      'key=$(printf "%02x:%02x:%s" $(( (dev >> 8) & 0xfff )) $(( (dev & 0xff) | ((dev >> 12) & 0xfff00) )) "$ino"); ' +
      `if grep -Eq "FLOCK +ADVISORY +WRITE +[0-9]+ $key " /proc/locks || ${keeperHoldsLock('"$d"')}; then ` +
      'echo "@@held"; head -n 1 "$d/holder" 2>/dev/null; fi; fi',
    printJournal(quote(dirs.journal)),
    'true',
  ].join('\n');
}

export const LOCK_PROBE = lockProbe();

export function parseLockProbe(stdout: string): { holder?: string; journal?: Journal } {
  const held = /^@@held\n(.*)$/m.exec(stdout);
  return { holder: held ? held[1]!.trim() || 'another run' : undefined, journal: journalIn(stdout) };
}
