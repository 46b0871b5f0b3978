/**
 * An operation turns desired state into changes, given a host's facts. Its
 * `plan` is pure: no I/O, tested with plain data. Only the engine runs the
 * changes, batching them into as few round trips as it can.
 */
import type { z } from 'zod';
import type { FactRequest, HostFacts } from '../facts/host.js';

/**
 * Handlers a step can notify; the service step turns them into systemctl calls. `upgrade`: a new
 * binary the running service can take in place (nginx's USR2 upgrade, see the service step's
 * `binaryUpgrade`); where it cannot, it is a restart.
 */
export const HANDLERS = ['daemon-reload', 'restart', 'reload', 'upgrade'] as const;
export type Handler = (typeof HANDLERS)[number];

export type Change =
  | { kind: 'mkdir'; path: string; mode: string }
  | {
      kind: 'put';
      path: string;
      content: Buffer;
      sha256: string;
      mode: string;
      /** `user:group` to install it as; the host's root otherwise. */
      owner?: string;
      /** Run against the staged file before it replaces the live one. Live paths of files staged in the same run are read as their staged copies. */
      validate?: string;
      /**
       * Moved into place after the commit's commands, not before them: a static pod's manifest, which
       * kubelet acts on the moment it appears, once the balancer it replaces has let go of the port.
       */
      late?: boolean;
      /** Text of the file now and after, for --diff (text files only). */
      before?: string;
      after?: string;
    }
  | {
      kind: 'run';
      command: string;
      label: string;
      /**
       * `verified`: run only once the verify step passed (e.g. disabling the balancer this one replaced).
       * `staging`: run before files are staged and validated, when nothing live has moved (installing a package a validation needs).
       * `validate`: run once every file is staged and validated, still before anything live moves; it reads staged copies as `validate` does (a check across files: the live config inside a new image).
       */
      when?: 'verified' | 'staging' | 'validate';
      /** What puts this back if the host fails verification (a roll's rollback), instead of restarting the unit. */
      undo?: string;
      /** This command hands the listen port over from that unit, which is serving now. */
      switchFrom?: string;
      /** The unit this command starts, restarts or reloads. */
      unit?: string;
    };

export interface StepPlan {
  changes: Change[];
  notify: Handler[];
  /** One line: what this step does on this host, or why it does nothing. */
  summary: string;
}

/** What a step may read besides facts: the inventory-derived text and the controller's artifacts. */
export interface PlanContext {
  /** Handlers notified by the steps before this one. */
  notified: ReadonlySet<Handler>;
  /** Build outputs by name, e.g. `nginx`. */
  artifacts: Record<string, { content: Buffer; sha256: string; describe: string; /** Where the controller keeps it (its cache), and the CPU architecture it is for (uname -m). */ path?: string; arch?: string; /** An image's name:tag. */ ref?: string; /** An image's nginx binary: its sha256. */ binarySha256?: string; /** An image the node's runtime pulls from the site's registry (lb.image): no content. */ pull?: boolean; /** What it was meant to be: a hash of its inputs and toolchain (`sha256:...`). */ identity?: string; /** Where it is in the shared store (build.store). */ stored?: string }>;
  /** Named renderers for templates. */
  render: (template: string, facts: HostFacts) => string;
  /** The remote text of a file, for diffs; undefined when unknown. */
  currentText?: (path: string) => string | undefined;
}

export interface Operation<A> {
  type: string;
  /** The step's arguments, as the playbook writes them. */
  args: z.ZodType<A>;
  facts: (args: A) => Partial<FactRequest>;
  plan: (args: A, facts: HostFacts, ctx: PlanContext) => StepPlan;
}

export function noop(summary: string): StepPlan {
  return { changes: [], notify: [], summary };
}
