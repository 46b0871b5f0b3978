/**
 * Every command k8s-ha runs on a host has a deadline and an output cap, set here and nowhere
 * else: a step names its kind, and the connection looks the bound up. A hung disk, a stalled
 * package mirror or a stuck systemd job then fails that host at a stated time instead of holding
 * its lock, and the whole run, forever.
 */
import { durationMs, UNIT_MS as MS } from '../util/duration.js';

export type StepKind = 'command' | 'lock' | 'facts' | 'apply' | 'restore' | 'repoint' | 'build';

/** Defaults, each well beyond what the step takes on a healthy host (facts: well under a second). */
export const DEFAULT_DEADLINES: Readonly<Record<StepKind, number>> = {
  /** Anything without a kind of its own: journal closing, unit state, port owner, journalctl. */
  command: MS.m,
  /** Taking the node's lock (beyond --wait-lock), with the facts read beside it. */
  lock: MS.m,
  facts: MS.m,
  /** Stage, validate, commit, and wait for the unit (a restart or a kube-lb start that checks every apiserver). */
  apply: 3 * MS.m,
  restore: 3 * MS.m,
  /** Rewrite kubeconfigs, restart kubelet and kube-proxy, wait for their connection (30 s each). */
  repoint: 3 * MS.m,
  /** Installing a toolchain and compiling nginx on a build host. */
  build: 30 * MS.m,
};

/** What a step is called where a person reads it: `timed out after 60 s in gathering facts`. */
export const STEP_WORDS: Readonly<Record<StepKind, string>> = {
  command: 'a command',
  lock: 'taking the lock',
  facts: 'gathering facts',
  apply: 'committing',
  restore: 'restoring',
  repoint: 'repointing kubeconfigs',
  build: 'building nginx',
};

export type Deadlines = Partial<Record<StepKind, number>>;

export function deadlineOf(kind: StepKind, set: Deadlines | undefined): number {
  return set?.[kind] ?? DEFAULT_DEADLINES[kind];
}

/**
 * Most bytes a command may print on stdout (and, apart, on stderr). The largest output k8s-ha
 * reads is a facts script with file texts for --diff: kilobytes. A command that prints more is
 * broken or hostile; it is ended rather than buffered until the controller runs out of memory.
 */
export const MAX_OUTPUT_BYTES = 16 * 1024 * 1024;

/** The inventory's `timeouts:` as milliseconds per kind (what it leaves out takes the default). */
export function deadlinesOf(inv: { timeouts?: Partial<Record<StepKind, string | undefined>> }): Deadlines {
  const out: Deadlines = {};
  for (const [k, v] of Object.entries(inv.timeouts ?? {})) if (v) out[k as StepKind] = durationMs(v);
  return out;
}

/** A deadline as a person reads it in a message: whole seconds, tenths below ten. */
export function secondsOf(ms: number): number {
  return ms >= 10_000 ? Math.round(ms / 1000) : Math.round(ms / 100) / 10;
}
