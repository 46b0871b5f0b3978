/**
 * Pure planning for one host: which facts its steps need, and what each step changes given those
 * facts. No I/O: tested with plain data.
 */
import { isSecretTemplate } from '../ops/files.js';
import type { FactRequest, HostFacts } from '../facts/host.js';
import type { InventoryNode } from '../inventory/schema.js';
import type { Change, Handler, PlanContext, StepPlan } from '../ops/types.js';
import type { PlaybookStep } from './playbook.js';
import { TEMPLATE_ARTIFACTS } from '../lb/templates.js';

export interface HostPlan {
  node: InventoryNode;
  facts: HostFacts;
  steps: { step: PlaybookStep; plan?: StepPlan }[];
}

export function factRequest(steps: PlaybookStep[]): FactRequest {
  const req: FactRequest = { files: [], dirs: [], units: [], guards: [] };
  for (const s of steps) {
    const part: Partial<FactRequest> = s.type === 'op' ? s.op.facts(s.args) : s.type === 'verify' ? { units: [s.args.unit] } : {};
    mergeRequest(req, part);
  }
  return req;
}

/** Add what `part` asks for to `req`, once each. */
export function mergeRequest(req: FactRequest, part: Partial<FactRequest>): FactRequest {
  for (const k of ['files', 'dirs', 'units', 'guards'] as const) for (const v of part[k] ?? []) if (!req[k].includes(v)) req[k].push(v);
  for (const v of part.interfaces ?? []) if (!(req.interfaces ??= []).includes(v)) req.interfaces.push(v);
  for (const v of part.images ?? []) if (!(req.images ??= []).includes(v)) req.images.push(v);
  for (const v of part.containers ?? []) if (!(req.containers ??= []).includes(v)) req.containers.push(v);
  for (const v of part.texts ?? []) if (!(req.texts ??= []).includes(v)) req.texts.push(v);
  if (part.kubelet) req.kubelet = true;
  for (const x of part.scripts ?? []) if (!(req.scripts ??= []).some((y) => y.key === x.key)) req.scripts.push(x);
  return req;
}

/** The build output a step installs or names (a file's or image's source, a template that names one), if any. */
export function artifactOf(s: PlaybookStep): string | undefined {
  if (s.type !== 'op') return undefined;
  const a = s.args as { source?: string; template?: string };
  if ((s.op.type === 'file' || s.op.type === 'image') && a.source) return a.source.slice('artifact:'.length);
  if ((s.op.type === 'template' || s.op.type === 'systemdUnit') && a.template) return TEMPLATE_ARTIFACTS[a.template];
  return undefined;
}

/** Rendered text files the playbook writes: what --diff shows. */
export function textFiles(steps: PlaybookStep[]): string[] {
  // A secret template (a private key) is never read back from a host.
  const shown = (s: PlaybookStep) => s.type === 'op' && (s.op.type === 'systemdUnit' || s.op.type === 'staticPod' || (s.op.type === 'template' && !isSecretTemplate(s.args as { secret?: boolean; template?: string })));
  return steps.flatMap((s) => (s.type === 'op' && shown(s) ? (s.op.facts(s.args).files ?? []) : []));
}

/** Every step's plan for one host, handlers flowing from earlier steps to the next service step. */
export function planHost(node: InventoryNode, steps: PlaybookStep[], facts: HostFacts, base: Omit<PlanContext, 'notified'>): HostPlan {
  const notified = new Set<Handler>();
  return {
    node,
    facts,
    steps: steps.map((step) => {
      if (step.type !== 'op') return { step };
      const plan = step.op.plan(step.args, facts, { ...base, notified });
      plan.notify.forEach((h) => notified.add(h));
      // A service step acts on what the steps before it notified: a later service (the VIP hosts'
      // keepalived after haproxy) reloads only for the files of its own steps.
      if (step.op.type === 'service') notified.clear();
      return { step, plan };
    }),
  };
}

export interface Planned<C extends Change['kind']> {
  /** The playbook step the change belongs to. */
  step: string;
  change: Extract<Change, { kind: C }>;
}

/** Every change of one kind, with the name of the step that plans it. */
export function changesOf<C extends Change['kind']>(plan: HostPlan, kind: C): Planned<C>[] {
  const out: Planned<C>[] = [];
  for (const s of plan.steps) {
    for (const change of s.plan?.changes ?? []) if (change.kind === kind) out.push({ step: s.step.name, change: change as Extract<Change, { kind: C }> });
  }
  return out;
}

export function hasChanges(plan: HostPlan): boolean {
  return plan.steps.some((st) => st.plan?.changes.length);
}

/** The unit serving now that this plan takes the listen port from (switching implementation), if any. */
export function switchingFrom(plan: HostPlan): string | undefined {
  return changesOf(plan, 'run').find((r) => r.change.switchFrom)?.change.switchFrom;
}

/** Handlers this host's plan notified, e.g. restart when the binary changed. */
export function notifiedHandlers(plan: HostPlan): Set<Handler> {
  const out = new Set<Handler>();
  for (const st of plan.steps) for (const h of st.plan?.notify ?? []) out.add(h);
  return out;
}

export type VerifyStep = Extract<PlaybookStep, { type: 'verify' }>;

export function verifyStep(steps: PlaybookStep[]): VerifyStep | undefined {
  return steps.find((s): s is VerifyStep => s.type === 'verify');
}

/** Would applying this plan restart, reload or replace a service that is serving now? Such hosts roll. */
export function disturbsRunningService(plan: HostPlan, unit: string | undefined): boolean {
  if (!unit || !hasChanges(plan)) return false;
  // A static pod serves while its manifest is in kubelet's folder: kubelet itself runs either way.
  const pod = plan.steps.find((st) => st.step.type === 'op' && st.step.op.type === 'staticPod');
  if (pod?.step.type === 'op') return !!plan.facts.files[(pod.step.args as { manifest: string }).manifest] || !!switchingFrom(plan);
  return plan.facts.units[unit]?.activeState === 'active' || !!switchingFrom(plan);
}
