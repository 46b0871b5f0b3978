/** `deploy --check [--diff]`: what a deploy would do on each node, built from the plans alone. */
import { createTwoFilesPatch } from 'diff';
import type { PlannedHost } from './host.js';
import type { RepointPlan } from './repoint.js';
import { REPOINT_STEP } from './repoint.js';

export interface PendingChange {
  step: string;
  summary: string;
  /** Unified diff of a rendered file (with --diff). */
  diff?: string;
}

export interface NodeCheck {
  name: string;
  /** What would happen to the service: `restart kube-nginx`, `reload kube-lb`, `switch from kube-nginx to kube-lb`, or nothing. */
  service: string;
  changes: PendingChange[];
  /** Steps whose outcome cannot be known without a build (the binary, when nothing is cached). */
  unknown: string[];
}

export function checkNode(p: PlannedHost, repoint: RepointPlan | undefined, withDiff: boolean): NodeCheck {
  const changes: PendingChange[] = [];
  let service = 'nothing';
  for (const st of p.plan.steps) {
    const plan = st.plan;
    if (!plan?.changes.length) continue;
    const change: PendingChange = { step: st.step.name, summary: plan.summary };
    for (const c of plan.changes) {
      if (c.kind === 'run' && (c.label === 'restart' || c.label === 'reload' || c.label === 'start')) service = `${c.label} ${p.unit}`;
      if (c.kind === 'run' && c.label === 'upgrade in place') service = `upgrade ${p.unit} in place`;
      if (c.kind === 'run' && c.switchFrom) service = `switch from ${c.switchFrom} to ${p.unit}`;
      if (withDiff && c.kind === 'put' && c.after !== undefined) {
        change.diff = createTwoFilesPatch(`${c.path} (on ${p.job.node.name})`, `${c.path} (from the inventory)`, c.before ?? '', c.after, '', '', { context: 3 })
          .split('\n')
          .slice(1) // the ===== line
          .join('\n')
          .trimEnd();
      }
    }
    changes.push(change);
  }
  if (repoint?.changes.length) changes.push({ step: REPOINT_STEP, summary: repoint.summary });
  return { name: p.job.node.name, service, changes, unknown: [] };
}
