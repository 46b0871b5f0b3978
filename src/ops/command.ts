/** A command run only when its guard fails: `unless` exits non-zero (checked with the facts, so --check sees it). */
import { z } from 'zod';
import { HANDLERS, noop, type Handler, type Operation } from './types.js';

export const command: Operation<{ run: string; unless: string; notify: Handler[]; stage: boolean }> = {
  type: 'command',
  args: z.strictObject({
    run: z.string().min(1),
    unless: z.string().min(1, 'a guard is required so the step is idempotent'),
    notify: z.array(z.enum(HANDLERS)).default([]),
    /** Run while staging, before any file is validated (something a validation needs, such as a user the config names). */
    stage: z.boolean().default(false),
  }),
  facts: (a) => ({ guards: [a.unless] }),
  plan(a, facts) {
    if (facts.guards[a.unless] === 0) return noop(`guard holds: ${a.unless}`);
    return { changes: [{ kind: 'run', command: a.run, label: a.run, ...(a.stage ? { when: 'staging' as const } : {}) }], notify: a.notify, summary: `run ${a.run}` };
  },
};
