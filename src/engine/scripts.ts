/**
 * The shell scripts that change a host, and the one parser of what they print.
 *
 * Every run has an id. Staged files (`PATH.k8s-ha-new.RUN`) and backups (`PATH.k8s-ha-prev.RUN`)
 * carry it, so two runs can never rename each other's files. Before any live file moves, the
 * apply script writes a journal on the host (JOURNAL_DIR): the run, the files and their backups,
 * the unit and how to verify it, and two scripts of its own, restore.sh and close.sh. Whoever
 * finds the journal next (this run, or any later run of any inventory) can finish or undo the
 * change without knowing how it was planned.
 *
 * The apply script ignores SIGHUP and SIGPIPE: a controller that dies mid-commit cannot stop it
 * half-way, so a host ends on its old files or its new ones, and the journal says which.
 */
import { quote } from '../util/quote.js';
import { embed, embedded } from '../util/embed.js';
import { MANIFESTS_DIR } from '../lb/static-pod.js';
import { changesOf, notifiedHandlers, type HostPlan } from './plan.js';

export const JOURNAL_DIR = '/var/lib/k8s-ha/journal';
/** k8s-ha's state folder on a node: the journal, the apply lock, the kubeconfigs' origins. */
export const STATE_DIR = JOURNAL_DIR.slice(0, JOURNAL_DIR.lastIndexOf('/'));

/**
 * Shell pieces of a node-side script that says each thing it did as `@@done WHAT` and stops at the
 * first failure with `FAILED WHAT: OUTPUT` (FAILED its own marker, e.g. `@@remove-failed`). WHAT may
 * hold a value read from the node: it is quoted, never inside double quotes.
 */
export function stepShell(failed: string) {
  const fail = (what: string) => `{ echo ${quote(`${failed} ${what}: `)}"$(printf '%s' "$out" | tr '\\n' ' ')"; exit 1; }`;
  const rm = (path: string, flags = '-f') => `out=$(rm ${flags} -- ${quote(path)} 2>&1) || ${fail(`remove ${path}`)}; echo ${quote(`@@done removed ${path}`)}`;
  return { fail, rm };
}

/** What such a script says it did: its `@@done` lines. */
export const doneLines = (stdout: string): string[] => [...stdout.matchAll(/^@@done (.*)$/gm)].map((m) => m[1]!);

/**
 * In a folder that a daemon reads whole (kubelet's static pod folder: every file not starting with a
 * dot is a pod), a staged file or a backup must not be read as one: there they start with a dot.
 */
const hiddenIn = (path: string) => path.startsWith(`${MANIFESTS_DIR}/`);
const beside = (path: string, suffix: string) => {
  if (!hiddenIn(path)) return `${path}${suffix}`;
  const slash = path.lastIndexOf('/');
  return `${path.slice(0, slash + 1)}.${path.slice(slash + 1)}${suffix}`;
};
export const stagedPath = (path: string, runId: string) => beside(path, `.k8s-ha-new.${runId}`);
export const backupPath = (path: string, runId: string) => beside(path, `.k8s-ha-prev.${runId}`);

/** Where a run stands on a host, as its journal records it. */
export type JournalState = 'staging' | 'committing' | 'committed' | 'verified';

export interface JournalRecord {
  run: string;
  /** user@controller (pid N): who ran it. */
  by: string;
  started: string;
  /** The unit this run restarts, reloads or switches to. */
  unit?: string;
  /** How to prove the change works: the balancer's verify step. */
  verify?: { unit: string; listen: string; path: string; healthz?: string; also?: string[]; container?: { runtime: 'podman' | 'docker'; name: string; image: string }; staticPod?: { sha256?: string; runtime?: 'containerd' | 'podman' | 'docker' } };
  files: { path: string; staged: string; backup?: string }[];
  /** True when restore.sh puts a serving balancer back (a rolled host); false: nothing served before. */
  restorable: boolean;
}

export interface Journal extends JournalRecord {
  state: JournalState;
}

/**
 * What the next deploy does about an unfinished run's journal in this state (the recovery in
 * host.ts), as status and --check say it before anyone acts on it.
 */
export function nextDeployDoes(state: JournalState): string {
  if (state === 'staging') return 'no live file had moved: the next deploy removes its staged files and closes it';
  if (state === 'verified') return 'its change was verified: the next deploy keeps it, closes it and removes its backups';
  return 'the next deploy verifies its change first and restores the previous files if that fails';
}

export interface ApplyScriptOptions {
  runId: string;
  by: string;
  /** Keep the live files as backups so a failed verify can put them back (hosts that roll). */
  backup: boolean;
  /** The unit to wait for once committed, and how to verify it. */
  unit?: string;
  verify?: JournalRecord['verify'];
  /** Where the journal lives (tests use a temporary folder). */
  journalDir?: string;
  /**
   * The node lock's folder: the script goes on only while this run holds the lock (its holder line
   * names the run and its lease keeper lives), so a run whose lease lapsed (a controller paused or
   * cut off past the lease) cannot commit beside the run that took the lock since.
   */
  lockDir?: string;
  /** Longest wait for another k8s-ha script on the node: less than this script's own deadline. */
  applyWaitSeconds?: number;
  /**
   * A read-only check to run once the change is committed and the unit waited for (who holds the
   * balancer's port, for verify), so it costs no command of its own; its output comes between
   * @@after and @@after-end, its own @@ lines as `@ ...` (afterOutput gives them back).
   */
  after?: string;
}

/** What `after` printed, as it printed it; undefined when the script stopped before it. */
export const afterOutput = (stdout: string): string | undefined => embedded(stdout, 'after');

/** Write a file with the shell's own printf: no process started (every fork counts on a busy node). */
function writeFile(file: string, text: string): string {
  return `printf '%s' ${quote(text.endsWith('\n') ? text : text + '\n')} > ${file}`;
}

/** Marker lines name steps URI-encoded, so a step name with spaces is still one word. */
const stepKey = (name: string) => encodeURIComponent(name);

/** Validation commands read staged copies of files staged in the same run. */
export function withStagedPaths(command: string, staged: string[], runId: string): string {
  let out = command;
  for (const p of [...staged].sort((a, b) => b.length - a.length)) {
    out = out.replace(new RegExp(`${p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(?=$|[\\s'";|&)])`, 'g'), stagedPath(p, runId));
  }
  return out;
}

export function journalRecord(plan: HostPlan, o: ApplyScriptOptions): JournalRecord {
  return {
    run: o.runId,
    by: o.by,
    started: new Date().toISOString(),
    unit: o.unit,
    verify: o.verify,
    files: changesOf(plan, 'put').map((p) => ({ path: p.change.path, staged: stagedPath(p.change.path, o.runId), backup: o.backup ? backupPath(p.change.path, o.runId) : undefined })),
    restorable: o.backup,
  };
}

/** Poll until the unit is active (running), up to 5 s, and print what it is. */
export function stateScript(unit: string): string {
  const u = quote(unit);
  return (
    `for i in $(seq 1 25); do s=$(systemctl show -p ActiveState -p SubState --value ${u} | tr '\\n' ' '); ` +
    `[ "$s" = "active running " ] && break; sleep 0.2; done; echo "@@state $s"\n`
  );
}

/**
 * Put back what the run replaced: backups over live files, the replaced unit serving again (a
 * switch's own undo), or the unit restarted or reloaded on the old files. Prints `@@state`.
 */
export function restoreScript(plan: HostPlan, o: Pick<ApplyScriptOptions, 'runId' | 'unit'>): string {
  const undo = changesOf(plan, 'run').filter((r) => r.change.undo).map((r) => r.change);
  const handlers = notifiedHandlers(plan);
  // After an undone switch, the unit to see running is the one switched away from.
  const watched = undo.find((u) => u.switchFrom)?.switchFrom ?? o.unit;
  const lines = ['set -u'];
  for (const p of changesOf(plan, 'put')) {
    const b = quote(backupPath(p.change.path, o.runId));
    const live = quote(p.change.path);
    // A file this run created (none stood there before) goes away again.
    const gone = plan.facts.files[p.change.path] === null ? `; elif [ -e ${live} ]; then rm -f ${live} || { echo ${quote(`@@restore-failed cannot remove ${p.change.path}`)}; exit 1; }` : '';
    lines.push(`if [ -e ${b} ]; then mv -fT ${b} ${live} || { echo ${quote(`@@restore-failed cannot move ${backupPath(p.change.path, o.runId)} back`)}; exit 1; }${gone}; fi`);
  }
  if (handlers.has('daemon-reload')) lines.push('systemctl daemon-reload');
  // Every service the commit restarted or reloaded does so again on the files put back (the VIP
  // hosts have two: haproxy and keepalived); a plan without such a change restarts or reloads the unit.
  const again = changesOf(plan, 'run').filter((r) => r.change.label === 'restart' || r.change.label === 'reload').map((r) => r.change.command);
  // A file that acts by itself once in place (a static pod's manifest: kubelet replaces the pod) needs no unit restarted.
  const selfActing = changesOf(plan, 'put').some((p) => p.change.late);
  if (undo.length) lines.push(...undo.map((u) => u.undo!));
  else if (again.length) lines.push(...again);
  else if (o.unit && !selfActing) lines.push(handlers.has('restart') ? `systemctl restart ${quote(o.unit)}` : `systemctl reload ${quote(o.unit)}`);
  // A unit beside the watched one that this run started (the VIP hosts' keepalived, new) did not run before: it stops again.
  for (const r of changesOf(plan, 'run')) if (r.change.label === 'start' && r.change.unit && r.change.unit !== o.unit) lines.push(`systemctl stop ${quote(r.change.unit)}`);
  if (watched) lines.push(stateScript(watched).trimEnd());
  return lines.join('\n') + '\n';
}

/** Remove this run's staged files, backups and journal: the run is over on this host. */
export function closeScript(plan: HostPlan, runId: string, journalDir = JOURNAL_DIR): string {
  const paths = changesOf(plan, 'put').flatMap((p) => [stagedPath(p.change.path, runId), backupPath(p.change.path, runId)]);
  // One rm for everything (sourced by finish: no new shell either).
  return `rm -rf ${[...paths, journalDir].map(quote).join(' ')}\n`;
}

/**
 * Every script that moves live files or journals holds this second lock while it runs. The run
 * lock dies with the controller's channel, but a script it started keeps going (it ignores SIGHUP):
 * the next run waits on this lock before it reads the journal, so it never acts on files in motion.
 */
export function applyLockPath(journalDir = JOURNAL_DIR): string {
  return `${journalDir.slice(0, journalDir.lastIndexOf('/')) || ''}/apply.lock`;
}

function holdApplyLock(journalDir: string, waitSeconds = 120): string[] {
  const parent = journalDir.slice(0, journalDir.lastIndexOf('/')) || '/';
  const w = Math.max(1, Math.floor(waitSeconds));
  return [
    `{ [ -d ${quote(parent)} ] || mkdir -p -m 0700 ${quote(parent)}; } && exec 8>>${quote(applyLockPath(journalDir))} || { echo "@@failed journal 17"; exit 17; }`,
    `flock -w ${w} 8 || { echo "@@failed journal 17"; echo ${quote(`another k8s-ha script has held ${applyLockPath(journalDir)} for ${w} s`)}; exit 17; }`,
  ];
}

/**
 * Shell condition: the keeper named in the holder file (`pid N`, its second line, written by the
 * lock script) is alive with the lock file open on fd 9. `d` is a shell word for the lock folder.
 */
export function keeperHoldsLock(d: string): string {
  return `{ p=$(sed -n "2s/^pid //p" ${d}/holder 2>/dev/null); [ -n "$p" ] && [ "$(readlink "/proc/$p/fd/9" 2>/dev/null)" = ${d}/lock ]; }`;
}

/** Shell: go on only while run `runId` holds the node lock in `lockDir` (its holder line, its live keeper). */
export function stillHoldsLock(lockDir: string, runId: string, say: (why: string) => string = (why) => `echo "@@failed lock 19"; echo ${quote(why)}`): string {
  const d = quote(lockDir);
  const why = `run ${runId} no longer holds the node's lock (its lease lapsed: the controller was silent for too long); nothing was changed`;
  return (
    `h=$(head -n 1 ${d}/holder 2>/dev/null); ` +
    `if ! { case "$h" in *${quote(`, run ${runId}`)}) true ;; *) false ;; esac && ${keeperHoldsLock(d)}; }; then ${say(why)}; exit 19; fi`
  );
}

/**
 * Shell put before a script that changes a node outside a journal (repointing kubeconfigs): it
 * waits its turn behind any other k8s-ha script there, and goes on only while this run holds the lock.
 */
export function guardedBy(runId: string, o: { lockDir: string; journalDir?: string; waitSeconds?: number; say?: (why: string) => string }): string {
  return [...holdApplyLock(o.journalDir ?? JOURNAL_DIR, o.waitSeconds), stillHoldsLock(o.lockDir, runId, o.say)].join('\n') + '\n';
}

/** What runs once the change is verified (e.g. which balancer starts at boot), then the journal is closed. */
export function afterVerifyScript(plan: HostPlan, journalDir = JOURNAL_DIR): string {
  const after = changesOf(plan, 'run').filter((r) => r.change.when === 'verified');
  // Sourced by finishJournal: sets rc, starts no shell of its own.
  const lines = ['rc=0'];
  if (after.length) {
    // One chain: a switch enables the new unit and only then disables the old one, never leaving neither.
    lines.push(`out=$( ( ${after.map((a) => a.change.command).join(' && ')} ) 2>&1 ) || { rc=$?; echo "@@failed ${stepKey(after[0]!.step)} $rc"; printf '%s\n' "$out"; }`);
  }
  lines.push(`. ${quote(journalDir)}/close.sh`);
  return lines.join('\n') + '\n';
}

/** Write the journal (state `staging`) before anything else; refuse when another run's journal is open. */
function journalScript(plan: HostPlan, o: ApplyScriptOptions): string[] {
  const J = o.journalDir ?? JOURNAL_DIR;
  return [
    `J=${quote(J)}`,
    ...holdApplyLock(J, o.applyWaitSeconds),
    ...(o.lockDir ? [stillHoldsLock(o.lockDir, o.runId)] : []),
    // One short word written in place: a write cut short leaves an empty state, which a reader takes as `committing` (the safe guess).
    `st() { echo "$1" > "$J/state"; }`,
    `if [ -f "$J/run.json" ]; then echo "@@failed journal 18"; echo "the journal of an unfinished run is in $J"; exit 18; fi`,
    // Readers wait for the apply lock (held here) before they read, and a journal counts once run.json is in
    // it: written last, so a journal is never read half-written; a half-written one left by a crash is cleared.
    `{ [ ! -e "$J" ] || rm -rf "$J"; } && mkdir -m 0700 "$J" || { echo "@@failed journal 18"; exit 18; }`,
    'st staging',
    writeFile('"$J/restore.sh"', o.backup ? restoreScript(plan, o) : 'echo "@@state nothing to restore"\n'),
    writeFile('"$J/close.sh"', closeScript(plan, o.runId, J)),
    writeFile('"$J/finish.sh"', afterVerifyScript(plan, J)),
    `${writeFile('"$J/run.json"', JSON.stringify(journalRecord(plan, o)))} || { echo "@@failed journal 18"; exit 18; }`,
  ];
}

/** Shell: run a check on staged files; its failure reports the step as invalid and closes the journal (nothing live has moved). */
function check(step: string, command: string): string[] {
  return [
    // The inner subshell makes 2>&1 cover every command of a compound one.
    `out=$( ( ${command} ) 2>&1 ); rc=$?`,
    `if [ $rc -ne 0 ]; then echo "@@invalid ${stepKey(step)} $rc"; printf '%s\\n' "$out"; sh "$J/close.sh"; exit 30; fi`,
  ];
}

function stageScript(plan: HostPlan, runId: string): string[] {
  const mkdirs = changesOf(plan, 'mkdir');
  const puts = changesOf(plan, 'put');
  const staged = puts.map((p) => p.change.path);
  const lines = [
    // Inside the journal (root's, 0700): what a node that lost power mid-stage leaves there goes when the next run closes the journal.
    'stage=$(mktemp -d "$J/stage.XXXXXX") || { sh "$J/close.sh"; exit 20; }',
    "trap 'rm -rf \"$stage\"' EXIT",
    ...mkdirs.map((m) => `install -d -m ${m.change.mode} ${quote(m.change.path)} || { echo "@@failed ${stepKey(m.step)} 21"; sh "$J/close.sh"; exit 21; }`),
  ];
  // What a validation needs (a package): before anything is staged, so a failure leaves no live file moved.
  for (const r of changesOf(plan, 'run')) {
    if (r.change.when !== 'staging') continue;
    lines.push(
      `out=$( ( ${r.change.command} ) 2>&1 ); rc=$?`,
      `if [ $rc -ne 0 ]; then echo "@@failed ${stepKey(r.step)} $rc"; printf '%s\\n' "$out"; sh "$J/close.sh"; exit 24; fi`,
    );
  }
  if (puts.length) {
    lines.push('tar -xz -C "$stage" -f - || { echo "@@failed tar 22"; sh "$J/close.sh"; exit 22; }');
    puts.forEach((p, i) => {
      const owner = p.change.owner ? ` -o ${quote(p.change.owner.split(':')[0]!)} -g ${quote(p.change.owner.split(':')[1]!)}` : '';
      lines.push(`install -m ${p.change.mode}${owner} "$stage/${i}" ${quote(stagedPath(p.change.path, runId))} || { echo "@@failed ${stepKey(p.step)} 23"; sh "$J/close.sh"; exit 23; }`);
    });
    for (const p of puts) if (p.change.validate) lines.push(...check(p.step, withStagedPaths(p.change.validate, staged, runId)));
  }
  // Checks across files, once all are staged: still nothing live has moved.
  for (const r of changesOf(plan, 'run')) if (r.change.when === 'validate') lines.push(...check(r.step, withStagedPaths(r.change.command, staged, runId)));
  lines.push('echo "@@staged"');
  return lines;
}

function commitScript(plan: HostPlan, o: ApplyScriptOptions): string[] {
  const lines = ['st committing'];
  const puts = changesOf(plan, 'put');
  if (o.backup) {
    // Every backup is made before any live file moves: a restore then puts back exactly this run's previous files.
    for (const p of puts) {
      const live = quote(p.change.path);
      const b = quote(backupPath(p.change.path, o.runId));
      // rm fails on what it cannot clear (a directory), where cp would copy *into* it instead.
      // A hard link to the live file: the commit renames the new file over the live name, so the
      // old content lives on under the backup name untouched. Atomic, no data copied, never half-written.
      lines.push(`if [ -e ${live} ]; then ln -fT ${live} ${b} || { echo "@@failed ${stepKey(p.step)} 39"; exit 39; }; fi`);
    }
  }
  // -T: a directory standing where the file goes is an error, not a place to move the file into.
  const move = (p: (typeof puts)[number]) => `mv -fT ${quote(stagedPath(p.change.path, o.runId))} ${quote(p.change.path)} || { echo "@@failed ${stepKey(p.step)} 40"; exit 40; }`;
  for (const p of puts) if (!p.change.late) lines.push(move(p));
  for (const r of changesOf(plan, 'run')) {
    if (r.change.when === 'verified' || r.change.when === 'staging' || r.change.when === 'validate') continue;
    lines.push(
      `out=$( ( ${r.change.command} ) 2>&1 ); rc=$?`,
      `if [ $rc -ne 0 ]; then echo "@@failed ${stepKey(r.step)} $rc"; printf '%s\\n' "$out"; exit 41; fi`,
    );
  }
  // What acts on its own the moment it is in place (a static pod's manifest): after the commands above.
  for (const p of puts) if (p.change.late) lines.push(move(p));
  lines.push('st committed', 'echo "@@committed"');
  return lines;
}

/** Journal, stage, validate, commit and wait for the unit: everything that changes a host, in one script. */
export function applyScript(plan: HostPlan, o: ApplyScriptOptions): string {
  const lines = [
    'set -u',
    // A lost controller must not stop this script between two renames.
    "trap '' HUP PIPE",
    ...journalScript(plan, o),
    ...stageScript(plan, o.runId),
    ...commitScript(plan, o),
  ];
  if (o.unit) lines.push(stateScript(o.unit).trimEnd());
  if (o.after) lines.push(embed('after', o.after));
  return lines.join('\n') + '\n';
}

/**
 * Once verified: record it, run the journal's finish.sh (what waits for a verified change, then
 * close). The same for this run and for a recovery that keeps an earlier run's change.
 */
export function finishJournal(journalDir = JOURNAL_DIR): string {
  const J = quote(journalDir);
  return [
    'set -u',
    "trap '' HUP PIPE",
    ...holdApplyLock(journalDir),
    `[ -d ${J} ] || { echo "@@closed"; exit 0; }`,
    `echo verified > ${J}/state`,
    `rc=0; if [ -f ${J}/finish.sh ]; then . ${J}/finish.sh; else rm -rf ${J}; fi`,
    'echo "@@closed"',
    'exit $rc',
  ].join('\n') + '\n';
}

/** Restore from the journal, then close it; a restore that fails keeps the journal (and the backups) for the next run. */
export function restoreFromJournal(journalDir = JOURNAL_DIR): string {
  const J = quote(journalDir);
  return ['set -u', "trap '' HUP PIPE", ...holdApplyLock(journalDir), `if sh ${J}/restore.sh; then sh ${J}/close.sh; echo "@@closed"; else echo "@@restore-failed"; exit 1; fi`].join('\n') + '\n';
}

/** Close a journal: remove its run's staged files and backups (keeping what is live), then the journal. */
export function closeJournal(journalDir = JOURNAL_DIR): string {
  const J = quote(journalDir);
  return ['set -u', "trap '' HUP PIPE", ...holdApplyLock(journalDir), `[ -f ${J}/close.sh ] && sh ${J}/close.sh; rm -rf ${J}; echo "@@closed"`].join('\n') + '\n';
}

export interface ScriptOutput {
  staged: boolean;
  committed: boolean;
  closed: boolean;
  /** `ActiveState SubState` of the watched unit, as the script last saw it. */
  state?: string;
  /** What the script printed on stderr (kept for a script that ended with no marker). */
  stderr?: string;
  /** A restore that failed: why (the journal and backups are kept). */
  restoreFailure?: string;
  failure?: {
    /** The step that failed (its name), or `journal` / `tar`. */
    step: string;
    /** `invalid`: the staged file failed validation, nothing live changed. */
    kind: 'failed' | 'invalid';
    code?: number;
    /** What the failed command printed. */
    output: string;
  };
}

/** The one parser of every script above: markers in, typed result out. */
export function parseScriptOutput(stdout: string, stderr = ''): ScriptOutput {
  const m = /^@@(failed|invalid) (\S+)(?: (\d+))?$/m.exec(stdout);
  const out: ScriptOutput = {
    staged: /^@@staged$/m.test(stdout),
    committed: /^@@committed$/m.test(stdout),
    closed: /^@@closed$/m.test(stdout),
    state: /^@@state (.*)$/m.exec(stdout)?.[1]?.trim(),
    stderr: stderr.trim() || undefined,
  };
  if (/^@@restore-failed/m.test(stdout)) out.restoreFailure = /^@@restore-failed (.+)$/m.exec(stdout)?.[1] ?? (stderr.trim() || 'the restore script failed');
  if (m) {
    const after = stdout.slice(m.index + m[0].length).replace(/^@@\w+.*$/gm, '').trim();
    out.failure = { step: decodeURIComponent(m[2]!), kind: m[1] as 'failed' | 'invalid', code: m[3] ? Number(m[3]) : undefined, output: after || stderr.trim() };
  }
  return out;
}

/** Parse a journal as the lock script prints it (run.json, then the state word). */
export function parseJournal(text: string): Journal | undefined {
  const [json, state] = text.split('\n@@state-word\n');
  if (!json?.trim()) return undefined;
  try {
    const r = JSON.parse(json) as JournalRecord;
    const s = (state ?? '').trim();
    return { ...r, state: (['staging', 'committing', 'committed', 'verified'].includes(s) ? s : 'committing') as JournalState };
  } catch {
    // A journal we cannot read is treated as a change in flight whose outcome is unknown.
    return { run: 'unknown', by: 'unknown', started: '', files: [], restorable: false, state: 'committing' };
  }
}
