/**
 * One host's part of a deploy, over one SSH connection:
 *   open     connect, take the host's lock, and deal with an unfinished run's journal
 *   plan     one facts script, then every step planned (pure)
 *   apply    one script fed one tar stream: journal, stage + validate, commit, wait for the unit
 *   verify   TLS through the node's own local port, within a deadline
 *   finish   record the verify in the journal, run what waits for it, close the journal
 *   restore  a rolled host that fails verify is put back from its backups
 * Step results are built at the end from the plan and the outcome.
 */
import { podBack, podBackProblem } from '../lb/static-pod.js';
import { ConnectError, K8sHaError } from '../errors.js';
import { factScript, parseFacts, scriptOutput, type FactRequest, type HostFacts } from '../facts/host.js';
import { SshConnection, type RemoteResult, type SshTarget } from '../connect/ssh.js';
import type { Inventory, InventoryNode } from '../inventory/schema.js';
import type { PlanContext } from '../ops/types.js';
import { BUILD_STEPS } from '../ops/catalogue.js';
import { quote } from '../util/quote.js';
import { LOCK_DIR, LOCK_PROBE, parseLockProbe, takeLock } from './lock.js';
import { deadlineOf } from '../connect/deadlines.js';
import { changesOf, factRequest, hasChanges, mergeRequest, planHost, textFiles, verifyStep, type HostPlan } from './plan.js';
import type { PlaybookStep } from './playbook.js';
import { dialed, finishHost, type HostResult, type StepResult } from './results.js';
import {
  afterOutput,
  applyScript,
  closeJournal,
  finishJournal,
  JOURNAL_DIR,
  parseScriptOutput,
  restoreFromJournal,
  type Journal,
  type ScriptOutput,
} from './scripts.js';
import { tarGzOf } from './tarstream.js';
import { IMAGE_ARTIFACT } from '../lb/templates.js';
import { portOwnerScript, unitStateCommand, verifyBalancer, type VerifyOptions, type VerifyOutcome, type VerifyProgress } from './verify.js';

/** What a host is doing now: the phases a renderer shows and an interrupt reports. */
export type HostPhase =
  | 'connecting'
  | 'locking'
  | 'waiting for the lock'
  | 'recovering'
  | 'gathering facts'
  | 'staging'
  | 'committing'
  | 'verifying'
  | 'restoring'
  | 'finishing'
  | 'repointing';

/** Phases in which the host's live files may be new and not yet verified (or a kubelet mid-restart): a run that leaves then leaves them unknown. */
export const UNSETTLED: ReadonlySet<HostPhase> = new Set(['recovering', 'committing', 'verifying', 'restoring', 'finishing', 'repointing']);

export type Say = (phase: HostPhase, detail?: string) => void;

export interface HostJob {
  inventory: Inventory;
  node: InventoryNode;
  target: SshTarget;
  /** Who runs this, for the lock and the journal. */
  holder: string;
  steps: PlaybookStep[];
  base: Omit<PlanContext, 'notified'>;
  /** Read the current text of rendered files too, for --diff. */
  wantText?: boolean;
  /** Facts to read besides the steps' own. */
  extraFacts?: Partial<FactRequest>;
  /** Called with the facts before planning: other steps to plan instead (lb.impl auto). Their facts must be in extraFacts. */
  choose?: (facts: HostFacts) => PlaybookStep[] | undefined;
  say: Say;
}

export interface Session {
  conn: SshConnection;
  release: () => void;
  /** The facts script's output, read with the lock (no journal was open): the first plan uses it. */
  facts?: string;
  /** Milliseconds to connect and take the lock (with the facts read beside it). */
  connectMs?: number;
  /** What was done about an unfinished run found on the host. */
  recovered?: string;
  /** --check: an unfinished run found and left alone. */
  pendingJournal?: Journal;
  /** Finish the journal through the lock's channel (a session that took the lock). */
  finish?: () => Promise<RemoteResult>;
}

/**
 * Close a verified change's journal (finishJournal) through the lock's own channel: it costs no
 * command. Only while this run holds the lock: once its holder is gone (the lease lapsed, the channel
 * ended), the journal may be another run's to deal with, so it is left for the next run's recovery
 * (which verifies it again and keeps it), never closed from here.
 */
async function finishOn(session: Session): Promise<ScriptOutput> {
  if (!session.finish) throw new K8sHaError('the journal cannot be closed: this run does not hold the node lock');
  try {
    const r = await session.finish();
    return parseScriptOutput(r.stdout, r.stderr);
  } catch (e) {
    if (e instanceof K8sHaError) throw e;
    throw new K8sHaError(`verified, but the node lock was lost before the journal could be closed (${(e as Error).message}): the next run verifies the change again and keeps it`);
  }
}

const notReachedStep = (s: { name: string }): StepResult => ({ name: s.name, status: 'skipped', summary: 'not reached' });

/** A HostResult for a host that could not be worked on at all. */
function hostFailure(job: Pick<HostJob, 'node' | 'steps' | 'target'>, status: 'unreachable' | 'failed' | 'locked', error: string, extra: Partial<HostResult> = {}): HostResult {
  const summary = status === 'unreachable' ? 'host unreachable' : status === 'locked' ? 'host locked by another run' : 'not reached';
  return finishHost({ name: job.node.name, ...dialed(job.target), steps: job.steps.map((s) => ({ ...notReachedStep(s), summary })), status, error, ...extra });
}

function isUnreachable(e: unknown): boolean {
  return (e instanceof ConnectError && e.kind === 'unreachable') || /not connected|keepalive|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|EPIPE|connection (lost|closed)|No response from server/i.test((e as Error)?.message ?? '');
}

/**
 * Connect and take the host's lock; an unfinished run's journal is then finished or undone
 * (read-only with `check`: only reported). A HostResult means the host cannot be worked on.
 */
export async function openSession(
  job: HostJob,
  o: { waitLockSeconds: number; check: boolean; verifyDeadlineMs: number; progress?: VerifyProgress; signal?: AbortSignal },
): Promise<Session | HostResult> {
  let conn: SshConnection;
  const t0 = Date.now();
  try {
    job.say('connecting');
    conn = await SshConnection.open(job.target);
  } catch (e) {
    const err = e as K8sHaError;
    return hostFailure(job, isUnreachable(e) ? 'unreachable' : 'failed', err.message, { hint: err.hint });
  }
  try {
    if (o.check) {
      // Read-only: who holds the lock and what journal is open, from /proc/locks, in the same command
      // as the facts; a check never takes the lock, so it can never make a real deploy report a node locked.
      job.say('gathering facts');
      const req = mergeRequest(factRequestOf(job), { scripts: [{ key: 'lock', script: LOCK_PROBE }] });
      const f = await conn.execAsRoot(factScript(req), { kind: 'facts' });
      const probe = parseLockProbe(f.code === 0 ? (scriptOutput(req, f.stdout, 'lock') ?? '') : '');
      if (probe.holder) {
        conn.close();
        return hostFailure(job, 'locked', `being changed by another run: locked by ${probe.holder}`, { lockedBy: probe.holder });
      }
      // Planned from these facts, as from those read with a lock (the lock probe's section is not read again).
      return { conn, release: () => undefined, pendingJournal: probe.journal, facts: `${f.stdout}\n@@then-rc ${f.code}\n`, connectMs: Date.now() - t0 };
    }
    job.say('locking');
    const lock = await takeLock(conn, job.holder, o.waitLockSeconds, (holder) => job.say('waiting for the lock', `held by ${holder}`), factScript(factRequestOf(job)), o.signal);
    if (!lock.held) {
      conn.close();
      if (lock.busy) {
        return hostFailure(job, 'locked', `locked by ${lock.holder}`, {
          hint: `another k8s-ha run is working on ${job.node.name}; wait for it, or rerun with --wait-lock 5m`,
          lockedBy: lock.holder,
        });
      }
      return hostFailure(job, 'failed', `cannot take the k8s-ha lock: ${lock.error}`);
    }
    const session: Session = { conn, release: lock.release, facts: lock.then, connectMs: Date.now() - t0, finish: lock.finish };
    if (lock.journal) {
      job.say('recovering', `run ${lock.journal.run} (${lock.journal.state})`);
      const r = await recoverJournal(conn, job.inventory, lock.journal, o);
      session.recovered = r.detail;
      if (!r.ok) {
        closeSession(session);
        return hostFailure(job, 'failed', `an unfinished run (${lock.journal.run} by ${lock.journal.by}) could not be put right: ${r.detail}`, { recovered: r.detail });
      }
    }
    return session;
  } catch (e) {
    conn.close();
    const err = e as K8sHaError;
    return hostFailure(job, isUnreachable(e) ? 'unreachable' : 'failed', err.message, { hint: err.hint });
  }
}

export function closeSession(s: Session): void {
  s.release();
  s.conn.close();
}

/**
 * An unfinished run found on the host: staged only, or already verified, it is closed; committed
 * but never verified, it is verified now and kept if that passes, restored if it does not.
 */
async function recoverJournal(
  conn: SshConnection,
  inv: Inventory,
  j: Journal,
  o: { verifyDeadlineMs: number; progress?: VerifyProgress },
): Promise<{ ok: boolean; detail: string }> {
  const who = `run ${j.run} (${j.by}, started ${j.started || 'at an unknown time'})`;
  const close = async (detail: string) => {
    const r = parseScriptOutput((await conn.execAsRoot(closeJournal())).stdout);
    return r.closed ? { ok: true, detail } : { ok: false, detail: `${detail}; its journal could not be closed` };
  };
  if (j.state === 'staging') return close(`${who} stopped before changing anything: its staged files removed`);
  const finish = async (detail: string) => {
    // What waits for a verified change (which balancer starts at boot) runs now, then the journal closes.
    const r = parseScriptOutput((await conn.execAsRoot(finishJournal())).stdout);
    if (!r.closed) return { ok: false, detail: `${detail}; its journal could not be closed` };
    return r.failure ? { ok: false, detail: `${detail}; but ${r.failure.output.split('\n')[0]}` } : { ok: true, detail };
  };
  if (j.state === 'verified') return finish(`${who} had verified: finished and closed`);
  let v: VerifyOutcome = { ok: false, summary: 'the journal names nothing to verify' };
  if (j.verify) {
    const s = await conn.execAsRoot(unitStateCommand(j.verify.unit));
    v = await verifyBalancer(conn, inv, j.verify, s.stdout, { checkNewList: false, deadlineMs: o.verifyDeadlineMs, progress: o.progress });
  }
  if (v.ok) return finish(`${who} was never verified: verified now and kept (${v.summary})`);
  if (!j.restorable) return close(`${who} was never verified and fails now (${v.summary}); nothing served before it, so nothing to restore`);
  const out = await conn.execAsRoot(restoreFromJournal(), { kind: 'restore' });
  const r = parseScriptOutput(out.stdout, out.stderr);
  if (!r.closed) {
    return { ok: false, detail: `${who} was never verified and fails now (${v.summary}); restoring it failed (${r.restoreFailure ?? 'the restore script failed'}): its journal and backups are kept in ${JOURNAL_DIR}` };
  }
  const ok = !j.unit || r.state === 'active running';
  return {
    ok,
    detail: `${who} was never verified and fails now (${v.summary}): previous files restored${r.state ? `, ${r.state === 'active running' ? 'serving again' : `unit is ${r.state}`}` : ''}`,
  };
}

export interface PlannedHost {
  job: HostJob;
  plan: HostPlan;
  /** The unit the verify step watches. */
  unit?: string;
  timings: Record<string, number>;
}

/** Everything a host's plan needs to know, for its steps and whatever may replace them. */
/**
 * The port owner check of the steps' verify (a unit on the host; a container's or a static pod's is
 * asked after its runtime): read with the facts, so a node with nothing to change is verified with
 * no command of its own, only the probe through its local port.
 */
export function ownerFacts(steps: PlaybookStep[]): NonNullable<FactRequest['scripts']> {
  const v = verifyStep(steps)?.args;
  return v && !v.container && !v.staticPod ? [{ key: ownerKey(v.unit), script: portOwnerScript(v.unit, v.listen) }] : [];
}

const ownerKey = (unit: string) => `owner ${unit}`;

function factRequestOf(job: HostJob): FactRequest {
  const req = mergeRequest(mergeRequest(factRequest(job.steps), { scripts: ownerFacts(job.steps) }), job.extraFacts ?? {});
  if (job.wantText) mergeRequest(req, { texts: textFiles(job.steps) });
  if (job.extraFacts?.versions) req.versions = job.extraFacts.versions;
  if (job.extraFacts?.kubeconfigs) req.kubeconfigs = job.extraFacts.kubeconfigs;
  return req;
}

/** The host's facts on an open session: those read with the lock the first time, read afresh after that. */
export async function readFacts(session: Session, job: HostJob): Promise<HostFacts> {
  const req = factRequestOf(job);
  let stdout = session.facts;
  // Read with the lock once; any later plan (a roll's replan) reads them afresh.
  session.facts = undefined;
  if (stdout !== undefined && !/^@@then-rc 0$/m.test(stdout)) throw new Error(`gathering facts failed (exit ${/^@@then-rc (\d+)$/m.exec(stdout)?.[1] ?? 'unknown'})`);
  if (stdout === undefined) {
    job.say('gathering facts');
    const f = await session.conn.execAsRoot(factScript(req), { kind: 'facts' });
    if (f.code !== 0) throw new Error(`gathering facts failed (exit ${f.code}): ${f.stderr.trim()}`);
    stdout = f.stdout;
  }
  return parseFacts(req, stdout);
}

/** Read the facts (unless read with the lock) and plan every step on an open session. */
export async function planOn(session: Session, job: HostJob, timings: Record<string, number> = {}): Promise<PlannedHost> {
  const t0 = Date.now();
  if (session.connectMs !== undefined) timings.connect = (timings.connect ?? 0) + session.connectMs;
  session.connectMs = undefined;
  const facts = await readFacts(session, job);
  const steps = job.choose?.(facts) ?? job.steps;
  const plan = planHost(job.node, steps, facts, { ...job.base, currentText: (path) => facts.texts[path] });
  timings.facts = (timings.facts ?? 0) + Date.now() - t0;
  return { job: { ...job, steps }, plan, unit: verifyStep(steps)?.args.unit, timings };
}

export interface ApplyOptions {
  /** Keep the live files so a failed verify can put them back (hosts that roll). */
  backup: boolean;
  /** Verify that every connection through the local port reaches a master of the inventory (rolling). */
  checkNewList: boolean;
  verifyDeadlineMs: number;
  progress?: VerifyProgress;
  /** The run's probe pool and TLS sessions, for a rolled verify (VerifyOptions.probing). */
  probing?: VerifyOptions['probing'];
}

/** What happened when a plan was applied; step results are derived from it. */
export interface ApplyOutcome {
  /** The apply script was sent: from then on a lost connection leaves the host's state unknown. */
  sent: boolean;
  script?: ScriptOutput;
  verify?: VerifyOutcome;
  finish?: ScriptOutput;
  rollback?: { ok: boolean; detail: string };
  error?: K8sHaError;
  journal?: string;
}

async function journalOf(conn: SshConnection, unit: string | undefined): Promise<string | undefined> {
  if (!unit) return undefined;
  const r = await conn.execAsRoot(`journalctl -u ${quote(unit)} -n 20 --no-pager -o short-iso 2>&1`).catch(() => undefined);
  return r?.stdout.trim() || undefined;
}

/**
 * Apply the plan (if it changes anything), verify, and finish or (rolling) restore. Never
 * throws: what went wrong is in the outcome.
 */
export async function applyPlanned(session: Session, p: PlannedHost, o: ApplyOptions, byRun: { runId: string; by: string }): Promise<ApplyOutcome> {
  const { conn } = session;
  const { plan, job } = p;
  const out: ApplyOutcome = { sent: false };
  const lap = (phase: string, since: number) => (p.timings[phase] = (p.timings[phase] ?? 0) + Date.now() - since);
  const vstep = verifyStep(job.steps);
  const changes = hasChanges(plan);
  // After a failure: a rolled host is put back from its backups; any other just has its journal closed.
  const undo = () => (o.backup ? restore(session, p, out) : conn.execAsRoot(closeJournal()).then(() => undefined, () => undefined));
  try {
    const f0 = p.unit ? plan.facts.units[p.unit] : undefined;
    let state = f0 ? `${f0.activeState} ${f0.subState}` : '';
    // Who holds the port, for verify's first look: read with the facts when nothing changes, else at
    // the end of the apply script, once the unit has been waited for. Either way no command of its own.
    const owner = ownerFacts(job.steps)[0];
    let ownerSeen = changes || !owner ? undefined : plan.facts.scripts?.[owner.key];
    if (changes) {
      const t = Date.now();
      const puts = changesOf(plan, 'put');
      job.say('committing', puts.length ? `staging ${puts.length} file${puts.length === 1 ? '' : 's'}, validating, committing` : 'applying');
      out.sent = true;
      const a = await conn.execAsRoot(
        applyScript(plan, {
          runId: byRun.runId,
          by: byRun.by,
          backup: o.backup,
          unit: p.unit,
          verify: vstep?.args,
          // Held only by a session that took the lock (status and --check never apply).
          lockDir: LOCK_DIR,
          applyWaitSeconds: deadlineOf('apply', conn.target.deadlines) / 2000,
          after: owner?.script,
        }),
        { input: puts.length ? tarGzOf(puts.map((x) => x.change)) : undefined, kind: 'apply' },
      );
      lap('apply', t);
      out.script = parseScriptOutput(a.stdout, a.stderr);
      if (!out.script.committed) {
        if (out.script.staged) {
          out.journal = await journalOf(conn, p.unit);
          await undo();
        }
        return out;
      }
      state = out.script.state ?? '';
      ownerSeen = afterOutput(a.stdout);
    }
    if (!vstep) {
      // Nothing to verify (a playbook without a verify step): the change stands as committed.
      if (changes) out.finish = await finishOn(session);
      return out;
    }
    const t = Date.now();
    job.say('verifying');
    out.verify = await verifyBalancer(conn, job.inventory, vstep.args, state, {
      checkNewList: o.checkNewList,
      deadlineMs: o.verifyDeadlineMs,
      progress: o.progress,
      ownerSeen,
      probing: o.probing,
    });
    lap('verify', t);
    if (!out.verify.ok) {
      out.journal = await journalOf(conn, vstep.args.unit);
      if (changes) await undo();
      return out;
    }
    if (changes) {
      job.say('finishing');
      // The journal may close only once the probe through the local port (made from here, over a
      // channel) has proven the new config serves, so the apply script cannot close it: the lock's
      // holder does, asked over its channel, with no command of its own.
      out.finish = await finishOn(session);
    }
    return out;
  } catch (e) {
    out.error = e instanceof K8sHaError ? e : new K8sHaError((e as Error).message);
    return out;
  }
}

/** Put back this run's previous files (from the journal's restore.sh) and close the journal. */
async function restore(session: Session, p: PlannedHost, out: ApplyOutcome): Promise<void> {
  p.job.say('restoring');
  try {
    const raw = await session.conn.execAsRoot(restoreFromJournal(), { kind: 'restore' });
    const r = parseScriptOutput(raw.stdout, raw.stderr);
    const undo = changesOf(p.plan, 'run').find((c) => c.change.switchFrom)?.change.switchFrom;
    const watched = undo ?? p.unit;
    if (!r.closed) {
      out.rollback = { ok: false, detail: `restoring failed (${r.restoreFailure ?? 'the restore script failed'}): the journal and backups are kept in ${JOURNAL_DIR} for the next run` };
      return;
    }
    // A static pod put back: kubelet replaced the pod again, which the restore waited for.
    const podLate = podBackProblem(raw.stdout);
    const ok = (!watched || r.state === 'active running') && !podLate;
    const what = undo ? `${watched} serves again` : podBack(raw.stdout)?.back ? 'the pod of the previous manifest serves again' : 'the service runs them';
    out.rollback = {
      ok,
      detail: ok ? `previous files restored and ${what}` : podLate ? `previous files restored, but ${podLate}` : `previous files restored, but ${watched} is ${r.state || 'unknown'}`,
    };
  } catch (e) {
    out.rollback = { ok: false, detail: `could not restore the previous files: ${(e as Error).message.split('\n')[0]}` };
  }
}

/** The step results of a host, from its plan and what applying it did. */
export function stepResults(p: PlannedHost, out?: ApplyOutcome): StepResult[] {
  const results: StepResult[] = p.plan.steps.map((st) => {
    if (st.plan) return { name: st.step.name, status: st.plan.changes.length ? 'changed' : 'ok', summary: st.plan.summary };
    if (st.step.type in BUILD_STEPS) {
      // A container's nginx is in its image: that is what this node gets from the build.
      const imaged = p.job.steps.some((s) => s.type === 'op' && s.op.type === 'image');
      const artifact = imaged ? p.job.base.artifacts[IMAGE_ARTIFACT] : p.job.base.artifacts[BUILD_STEPS[st.step.type as keyof typeof BUILD_STEPS]];
      return { name: st.step.name, status: 'ok', summary: artifact?.describe ?? 'built' };
    }
    return notReachedStep(st.step);
  });
  if (!out) return results;
  /** The step failed: `what` happened, then the command's own words. */
  const fail = (i: number, what: string, output: string) => {
    results[i] = { ...results[i]!, status: 'failed', error: output && output !== what ? `${what}\n${output}` : what, summary: output && output !== what ? `${what}: ${output.split('\n')[0]}` : what };
    for (let k = i + 1; k < results.length; k++) if (results[k]!.status !== 'failed') results[k] = notReachedStep(results[k]!);
  };
  const firstOpen = () => Math.max(0, results.findIndex((r) => r.status === 'changed' || r.status === 'skipped'));
  const f = out.script?.failure;
  if (f) {
    const i = results.findIndex((r) => r.name === f.step);
    const what = f.kind === 'invalid' ? 'validation failed, nothing was replaced' : `${out.script!.staged ? 'committing' : 'staging'} failed${f.code !== undefined ? ` (exit ${f.code})` : ''}`;
    fail(i >= 0 ? i : firstOpen(), what, f.output);
    return results;
  }
  if (out.script && !out.script.committed) {
    fail(firstOpen(), 'the apply script ended without committing', out.script.stderr ?? '');
    return results;
  }
  if (out.error) {
    fail(firstOpen(), out.error.message.split('\n')[0]!, out.error.message.split('\n').slice(1).join('\n'));
    return results;
  }
  const vi = p.plan.steps.findIndex((st) => st.step.type === 'verify');
  if (vi >= 0 && out.verify) results[vi] = { name: results[vi]!.name, status: out.verify.ok ? 'ok' : 'failed', summary: out.verify.summary, error: out.verify.ok ? undefined : out.verify.summary };
  const ff = out.finish?.failure;
  if (ff) {
    const i = results.findIndex((r) => r.name === ff.step);
    const at = i >= 0 ? i : firstOpen();
    results[at] = { ...results[at]!, status: 'failed', error: ff.output, summary: `after verify: ${ff.output.split('\n')[0] ?? 'failed'}` };
  }
  return results;
}

/** A host this run did not change: what its plan would have done, not applied (or, unplanned, its steps not reached), and why. */
export function notReached(h: { job: HostJob; planned?: PlannedHost }, why: string): HostResult {
  const steps = h.planned
    ? hostResult(h.planned, undefined).steps.map((s) => (s.status === 'changed' ? { ...s, status: 'skipped' as const, summary: `not applied: ${why}` } : s))
    : h.job.steps.map((s) => ({ name: s.name, status: 'skipped' as const, summary: `not reached: ${why}` }));
  return { ...finishHost({ name: h.job.node.name, ...dialed(h.job.target), steps, status: 'skipped', error: why }), changed: 0 };
}

/** A host that could not be worked on for an error outside its steps (planning threw, say). */
export function failedResult(h: { job: HostJob; planned?: PlannedHost }, e: unknown): HostResult {
  const err = e instanceof K8sHaError ? e : new K8sHaError((e as Error).message);
  return { ...notReached(h, err.message), status: 'failed', failed: 1, error: err.message, hint: err.hint };
}

/** The host's result: its steps, and what the deploy did to it. */
export function hostResult(p: PlannedHost, out: ApplyOutcome | undefined, extra: Partial<HostResult> = {}): HostResult {
  const steps = stepResults(p, out);
  const failedStep = steps.find((s) => s.status === 'failed');
  const verified = out?.verify?.ok === true;
  const unreachable = !!out?.error && isUnreachable(out.error);
  const error = out?.error
    ? out.error.message
    : failedStep
      ? `${failedStep.name}: ${failedStep.error ?? failedStep.summary}`
      : undefined;
  return finishHost({
    name: p.job.node.name,
    ...dialed(p.job.target),
    steps,
    timings: p.timings,
    status: unreachable ? 'unreachable' : undefined,
    error: failedStep?.name === verifyStep(p.job.steps)?.name ? `verify: ${out?.verify?.summary}` : error,
    hint: out?.error?.hint,
    journal: out?.journal,
    verified: out?.verify?.verified,
    // `@@staged` comes only after validation passed: from there on live files may have moved.
    committed: out?.script ? out.script.staged : !!out?.sent,
    rollback: out?.rollback,
    lbVerified: verified,
    ...extra,
  });
}
