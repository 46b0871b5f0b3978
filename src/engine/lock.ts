/**
 * One run at a time per host: a flock on /run/k8s-ha/lock, held by a process on the host that
 * lives exactly as long as this controller's SSH channel (it waits on stdin). A controller that
 * dies, or a connection that drops, releases the lock with it. The holder writes who it is beside
 * the lock, so a second run can say who holds it and since when.
 */
import os from 'node:os';
import type { SshConnection } from '../connect/ssh.js';
import { quote } from '../util/quote.js';
import { applyLockPath, JOURNAL_DIR, parseJournal, type Journal } from './scripts.js';

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
export function lockScript(holder: string, waitSeconds: number, dirs = { lock: LOCK_DIR, journal: JOURNAL_DIR }, then?: string): string {
  const d = quote(dirs.lock);
  const J = quote(dirs.journal);
  const w = Math.max(0, Math.ceil(waitSeconds));
  return [
    'set -u',
    `d=${d}`,
    'command -v flock >/dev/null 2>&1 || { echo "@@lockerr flock (util-linux) is not installed"; exit 72; }',
    '[ -d "$d" ] || mkdir -p -m 0700 "$d" || { echo "@@lockerr cannot create $d"; exit 70; }',
    'exec 9>>"$d/lock" || { echo "@@lockerr cannot open $d/lock"; exit 71; }',
    'if ! flock -n 9; then',
    w > 0 ? `  echo "@@waiting"; cat "$d/holder" 2>/dev/null; echo; echo "@@end-holder"; flock -w ${w} 9 && ok=1 || ok=0` : '  ok=0',
    // The holder writes its name just after taking the lock: give it a moment so we do not read its predecessor's.
    '  if [ $ok = 0 ]; then sleep 0.3; echo "@@busy"; cat "$d/holder" 2>/dev/null; echo; echo "@@end-holder"; exit 75; fi',
    'fi',
    `printf '%s\\n' ${quote(holder)} > "$d/holder"`,
    // A script of a controller that died may still be moving files: wait for it before reading its journal.
    // (Without a journal there is nothing to read; a script just starting refuses to run on top of ours.)
    `if [ -f ${J}/run.json ]; then flock -w 300 ${quote(applyLockPath(dirs.journal))} true || { echo "@@lockerr a k8s-ha script on this host has been running for 5 minutes"; exit 73; }; fi`,
    'echo "@@locked"',
    printJournal(J),
    ...(then ? [`if [ ! -f ${J}/run.json ]; then echo "@@then"; ( ${then.trim()}
) 2>/dev/null; echo "@@then-rc $?"; echo "@@then-end"; fi`] : []),
    'echo "@@ready"',
    // cat inherits fd 9 and holds the lock until the controller closes the channel.
    'exec cat >/dev/null',
  ].join('\n');
}

export type LockOutcome =
  | { held: true; journal?: Journal; release: () => void; then?: string }
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
  const h = await conn.hold(
    lockScript(holder, waitSeconds, undefined, then),
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
  );
  signal?.removeEventListener('abort', abort);
  if (h.exited && told && signal?.aborted) return { held: false, busy: true, holder: waitingHolder };
  const p = parseLockOutput(h.stdout);
  const thenOut = /^@@then\n([\s\S]*?)^@@then-end$/m.exec(h.stdout)?.[1];
  if (p.locked && !h.exited) return { held: true, journal: p.journal, release: h.release, then: thenOut };
  h.release();
  if (p.busy) return { held: false, busy: true, holder: p.holder! };
  return { held: false, busy: false, error: p.error ?? `the lock script exited (${h.code})` };
}

/** Read-only: who holds the host's lock now, if anyone (status). Reads /proc/locks; never takes the lock. */
export const LOCK_PROBE = [
  `d=${LOCK_DIR}`,
  'if [ -e "$d/lock" ]; then ino=$(stat -c %i "$d/lock"); ' +
    'if grep -Eq "FLOCK +ADVISORY +WRITE +[0-9]+ [0-9a-f]+:[0-9a-f]+:$ino " /proc/locks; then echo "@@held"; cat "$d/holder" 2>/dev/null; fi; fi',
  printJournal(quote(JOURNAL_DIR)),
  'true',
].join('\n');

export function parseLockProbe(stdout: string): { holder?: string; journal?: Journal } {
  const held = /^@@held\n(.*)$/m.exec(stdout);
  return { holder: held ? held[1]!.trim() || 'another run' : undefined, journal: journalIn(stdout) };
}
