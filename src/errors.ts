import { printable } from './util/printable.js';

/**
 * The few error classes k8s-ha raises. The CLI's single top-level catch maps
 * them to exit codes; only an InternalError (a bug) prints a stack.
 */

export const ExitCode = {
  ok: 0,
  /** Something went wrong that is not the user's input. */
  failure: 1,
  /** Bad input: flags, inventory, a directory that is not what we expect. */
  usage: 2,
  /** Some hosts failed or were unreachable. */
  hosts: 3,
  /** The nginx or kube-lb build failed. */
  build: 4,
  /** deploy --check: changes are pending (nothing was touched). */
  pending: 5,
  /** status: nothing is down, but some nodes could not be told (their probes timed out), or the cluster's control plane could not be read. */
  unknown: 6,
  /** status: nothing is down, and the cluster's control plane (its kubernetes Service's endpoints) differs from the inventory's masters. */
  controlPlane: 7,
  /** Stopped by SIGINT or SIGTERM (128 + 2, as shells report Ctrl-C). */
  interrupted: 130,
} as const;

export class K8sHaError extends Error {
  readonly exitCode: number = ExitCode.failure;
  /** One line telling the user what to do about it, printed after the message. */
  readonly hint?: string;
  constructor(message: string, options?: { hint?: string; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.hint = options?.hint;
  }
}

/** Bad flags or arguments, or a file or directory that is not what the command needs. */
export class UsageError extends K8sHaError {
  override readonly exitCode = ExitCode.usage;
}

/** A problem in the environment we cannot fix for the user (no Docker engine, no debootstrap...): exit 2, like bad input. */
export class EnvironmentError extends K8sHaError {
  override readonly exitCode = ExitCode.usage;
}

/** A command run on this machine or a host failed; carries what ran, where, and why. */
export class CommandError extends K8sHaError {
  constructor(
    readonly where: string,
    readonly command: string,
    readonly code: number | null,
    readonly signal: string | null,
    readonly stderr: string,
    options?: { hint?: string; step?: string },
  ) {
    const why = code === null ? `killed by ${signal ?? 'a signal'}` : `exit code ${code}`;
    // A host's stderr is shown, never obeyed by the terminal (no escape sequences pass).
    const tail = printable(lastLines(stderr, 20));
    super(
      `${options?.step ? `${options.step}: ` : ''}\`${printable(command)}\` failed on ${where} (${why})` +
        (tail ? `\n${indent(tail)}` : ''),
      { hint: options?.hint },
    );
  }
}

/** A bug: the only kind that prints a stack trace. */
export class InternalError extends K8sHaError {}

export function lastLines(text: string, n: number): string {
  const lines = text.trimEnd().split('\n');
  return lines.slice(-n).join('\n');
}

export function indent(text: string, prefix = '  '): string {
  return text
    .split('\n')
    .map((l) => prefix + l)
    .join('\n');
}

/** Could not open an SSH session to a host: unreachable, host key refused, or authentication failed. */
export class ConnectError extends K8sHaError {
  constructor(
    readonly host: string,
    readonly kind: 'unreachable' | 'host-key' | 'auth',
    /** The message without the host's name in front. */
    readonly detail: string,
    options?: { hint?: string; cause?: unknown },
  ) {
    super(`${host}: ${detail}`, options);
  }
}

/**
 * No answer, as opposed to a definite failure: a connect or handshake that timed out (a host that
 * drops packets, a network too slow or a controller too busy), or a command past its deadline.
 * A refusal, a reset, "no route to host" or an authentication failure are answers.
 */
export function isNoAnswer(e: unknown): boolean {
  if (e instanceof DeadlineError) return e.outputBytes === undefined;
  const m = (e as Error)?.message ?? '';
  return /Timed out while waiting for handshake|no connection within|\bETIMEDOUT\b|connect timed out/i.test(m);
}

/** The nginx build failed (download, checksum, toolchain, compile): exit 4, nothing touched on any node. */
export class BuildError extends K8sHaError {
  override readonly exitCode = ExitCode.build;
}

/** No C toolchain on the build host, and none could be installed: where lb.impl is auto, kube-lb runs instead. */
export class NoToolchainError extends BuildError {}

/**
 * A command on a host ran past its deadline (or printed more than it may): its channel was closed.
 * What it was doing is unknown, so nothing is undone after it: the host's journal stays for the next
 * run to recover, as after an interrupt.
 */
export class DeadlineError extends K8sHaError {
  constructor(
    readonly host: string,
    /** What was running, in the words a recap uses: `gathering facts`, `committing`. */
    readonly step: string,
    readonly seconds: number,
    /** Set when the command was ended for its output, not its time. */
    readonly outputBytes?: number,
    /** The inventory setting that bounds it: `timeouts.facts`. */
    setting?: string,
  ) {
    super(
      outputBytes === undefined
        ? `timed out after ${seconds} s in ${step}`
        : `${step} printed more than ${Math.round(outputBytes / 1024 / 1024)} MiB: ended`,
      {
        hint:
          outputBytes === undefined
            ? `look on ${host} for what hangs (a stuck disk, package mirror or systemd job); its lock is released and the next run recovers it${setting ? `. The bound is ${setting} in the inventory` : ''}`
            : undefined,
      },
    );
  }
}
