/**
 * A playbook: the steps a deploy takes, declared in YAML from the operation
 * catalogue. Loaded and validated like the inventory; `{{ lb.prefix }}` and
 * friends are filled in from the inventory and the node.
 */
import { z } from 'zod';
import { UsageError } from '../errors.js';
import { InventoryError, type Diagnostic } from '../inventory/diagnostics.js';
import { imageRepository, type Inventory, type InventoryNode } from '../inventory/schema.js';
import { describeIssue, tooLarge, validateYaml } from '../inventory/yaml-schema.js';
import { readCapped } from '../inventory/load.js';
import { kubeLbBuildArgs, nginxBuildArgs, OPERATIONS, SHELL_ARGS, STEP_TYPES, verifyArgs } from '../ops/catalogue.js';
import { quote } from '../util/quote.js';
import type { Operation } from '../ops/types.js';
import { packageFile } from '../util/paths.js';
import { formatHostPort } from '../util/hostport.js';
import { IMAGE_REPOSITORY } from '../build/image.js';

export type PlaybookStep =
  | { name: string; hint?: string; type: 'nginxBuild'; args: z.infer<typeof nginxBuildArgs> }
  | { name: string; hint?: string; type: 'kubeLbBuild'; args: z.infer<typeof kubeLbBuildArgs> }
  | { name: string; hint?: string; type: 'verify'; args: z.infer<typeof verifyArgs> }
  | { name: string; hint?: string; type: 'op'; op: Operation<unknown>; args: unknown };

export interface Playbook {
  file: string;
  name: string;
  description?: string;
  /** Raw steps, before variables are filled in: `steps(node)` gives the validated ones. */
  raw: RawStep[];
  steps: (node: InventoryNode, container?: ContainerVars) => PlaybookStep[];
}

/**
 * `{{ container.runtime }}` and `{{ container.image }}`: the node's runtime (from its facts, for
 * lb.runtime auto) and the image this run built; until both are known, what the inventory says
 * and the repository's placeholder tag (enough to check the playbook and gather facts).
 */
export interface ContainerVars {
  runtime: string;
  image: string;
  /** The image's repository (no tag, no digest): what the runtimes are asked about. */
  repository: string;
  /** The sha256 of the nginx binary in the image k8s-ha built; empty for lb.image (the site's own) or before the build. */
  binary?: string;
  /** containerd (a static pod's runtime): the snapshotter its CRI plugin unpacks images into. */
  snapshotter?: string;
}

interface RawStep {
  name: string;
  hint?: string;
  type: string;
  args: unknown;
}

export const DEFAULT_PLAYBOOK = 'kube-nginx.yaml';

/** The playbook each balancer implementation runs, in playbooks/. */
export const IMPL_PLAYBOOKS = { nginx: DEFAULT_PLAYBOOK, 'kube-lb': 'kube-lb.yaml', haproxy: 'kube-haproxy.yaml', container: 'kube-nginx-container.yaml', 'static-pod': 'kube-nginx-static-pod.yaml' } as const;

/** The playbook of the VIP hosts (vip.hosts). */
export const VIP_PLAYBOOK = 'vip.yaml';

export function defaultPlaybookPath(file: string = DEFAULT_PLAYBOOK): string {
  return packageFile('playbooks', file);
}

const stepShape = z
  .object({ name: z.string().min(1, 'must not be empty'), hint: z.string().optional() })
  .catchall(z.unknown())
  .superRefine((s, ctx) => {
    const types = Object.keys(s).filter((k) => k !== 'name' && k !== 'hint');
    if (types.length !== 1) {
      ctx.addIssue({
        code: 'custom',
        message: types.length
          ? `has ${types.join(' and ')}: a step is exactly one of ${STEP_TYPES.join(', ')}`
          : `needs a step type: one of ${STEP_TYPES.join(', ')}`,
      });
    } else if (!(STEP_TYPES as readonly string[]).includes(types[0]!)) {
      ctx.addIssue({ code: 'custom', path: [types[0]!], message: `unknown step type; use one of ${STEP_TYPES.join(', ')}` });
    }
  });

const playbookShape = z.strictObject({
  name: z.string().min(1),
  description: z.string().optional(),
  steps: z.array(stepShape).min(1, 'needs at least one step'),
});

type Vars = Record<string, unknown>;

export function playbookVars(inv: Inventory, node: InventoryNode, container?: ContainerVars): Vars {
  // A node without an address is dialed by ssh_config's HostName or its name: the name stands in here.
  const address = node.address ?? node.name;
  const vip = inv.vip ? { address: inv.vip.address, port: inv.vip.port, statsListen: inv.vip.statsListen, hostFrontend: formatHostPort(address, inv.vip.port) } : undefined;
  const c = container ?? {
    runtime: inv.lb.runtime === 'auto' ? 'podman' : inv.lb.runtime,
    image: inv.lb.image ?? `${IMAGE_REPOSITORY}:unbuilt`,
    repository: inv.lb.image ? imageRepository(inv.lb.image) : IMAGE_REPOSITORY,
  };
  c.binary ??= '';
  c.snapshotter ??= 'overlayfs';
  return { lb: inv.lb, nginx: inv.nginx, kubeLb: inv.kubeLb, vip, node: { name: node.name, address }, container: c };
}

const VARIABLE = /\{\{\s*([A-Za-z_][\w.]*)\s*\}\}/g;

/** Where a value goes: `shell`, a command run by sh on the node (the value is quoted), or `text`, anything else. */
export type SubstitutionContext = 'text' | 'shell';

/** Whether offset `at` of a shell command is inside '...' or "..." (where a quoted value would not be one word). */
function insideQuotes(command: string, at: number): boolean {
  let open: string | undefined;
  for (let i = 0; i < at; i++) {
    const c = command[i]!;
    if (open === "'") {
      if (c === "'") open = undefined;
    } else if (c === '\\') i++;
    else if (open === '"') {
      if (c === '"') open = undefined;
    } else if (c === "'" || c === '"') open = c;
  }
  return open !== undefined;
}

/**
 * Fill `{{ a.b }}` in every string; unknown names are reported by path. In a shell command
 * (`context` shell) each value is quoted for POSIX sh, so it is one word whatever it holds; a
 * `{{ }}` written inside quotes there is an error (the value would be quoted twice).
 */
export function substitute(
  value: unknown,
  vars: Vars,
  at: (string | number)[],
  errors: { path: (string | number)[]; message: string }[],
  context: SubstitutionContext = 'text',
): unknown {
  if (typeof value === 'string') {
    return value.replace(VARIABLE, (whole, name: string, offset: number) => {
      let cur: unknown = vars;
      for (const part of name.split('.')) cur = cur && typeof cur === 'object' ? (cur as Record<string, unknown>)[part] : undefined;
      if (cur === undefined || (typeof cur === 'object' && cur !== null)) {
        errors.push({ path: at, message: `unknown variable {{ ${name} }}; known: lb.*, nginx.*, kubeLb.*, vip.* (with vip:), node.name, node.address, container.runtime, container.image, container.repository, container.binary, container.snapshotter` });
        return whole;
      }
      if (context === 'text') return String(cur);
      if (insideQuotes(value, offset)) {
        errors.push({ path: at, message: `{{ ${name} }} is inside quotes in a shell command: write it unquoted, k8s-ha quotes its value for the shell` });
        return whole;
      }
      return quote(String(cur));
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => substitute(v, vars, [...at, i], errors, context));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, substitute(v, vars, [...at, k], errors, context)]));
  }
  return value;
}

/** A step's arguments with `{{ }}` filled in, its shell commands (SHELL_ARGS) quoting their values. */
export function substituteArgs(type: string, args: unknown, vars: Vars, at: (string | number)[], errors: { path: (string | number)[]; message: string }[]): unknown {
  const shell = SHELL_ARGS[type] ?? [];
  if (!args || typeof args !== 'object' || Array.isArray(args)) return substitute(args, vars, at, errors);
  return Object.fromEntries(Object.entries(args).map(([k, v]) => [k, substitute(v, vars, [...at, k], errors, shell.includes(k) ? 'shell' : 'text')]));
}

function argsSchema(type: string): z.ZodType {
  if (type === 'nginxBuild') return nginxBuildArgs;
  if (type === 'kubeLbBuild') return kubeLbBuildArgs;
  if (type === 'verify') return verifyArgs;
  return OPERATIONS[type]!.args;
}

/** Pure: validate a playbook's text against an inventory. */
export function parsePlaybook(
  text: string,
  inv: Inventory,
  templates: readonly string[],
): { raw?: RawStep[]; name?: string; description?: string; diagnostics: Diagnostic[] } {
  const v = validateYaml(text, playbookShape, 'playbook');
  if (!v.value) return { diagnostics: v.diagnostics };
  const diagnostics: Diagnostic[] = [];
  const raw: RawStep[] = v.value.steps.map((s) => {
    const type = Object.keys(s).find((k) => k !== 'name' && k !== 'hint')!;
    return { name: s.name, hint: s.hint, type, args: (s as Record<string, unknown>)[type] };
  });
  // Validate every step with the first node's variables: the same errors would hit every node.
  const node = inv.nodes[0]!;
  raw.forEach((s, i) => {
    const errors: { path: (string | number)[]; message: string }[] = [];
    const args = substituteArgs(s.type, s.args, playbookVars(inv, node), ['steps', i, s.type], errors);
    for (const e of errors) diagnostics.push({ severity: 'error', path: e.path, message: e.message, ...v.position(e.path) });
    const r = argsSchema(s.type).safeParse(args);
    if (!r.success) {
      for (const issue of r.error.issues) {
        const p = ['steps', i, s.type, ...(issue.path as (string | number)[])];
        diagnostics.push({ severity: 'error', path: p, message: describeIssue(issue), ...v.position(p) });
      }
    }
    // Checked on its own, so it is reported alongside any other error of the step.
    const tpl = (args as { template?: unknown } | undefined)?.template;
    if (typeof tpl === 'string' && !templates.includes(tpl)) {
      const p = ['steps', i, s.type, 'template'];
      diagnostics.push({ severity: 'error', path: p, message: `no template named ${tpl}; known: ${templates.join(', ')}`, ...v.position(p) });
    }
  });
  return { raw, name: v.value.name, description: v.value.description, diagnostics };
}

export function playbookSteps(raw: RawStep[], inv: Inventory, node: InventoryNode, container?: ContainerVars): PlaybookStep[] {
  return raw.map((s) => {
    const errors: { path: (string | number)[]; message: string }[] = [];
    const args = argsSchema(s.type).parse(substituteArgs(s.type, s.args, playbookVars(inv, node, container), [], errors));
    if (s.type === 'nginxBuild' || s.type === 'kubeLbBuild' || s.type === 'verify') return { name: s.name, hint: s.hint, type: s.type, args } as PlaybookStep;
    return { name: s.name, hint: s.hint, type: 'op', op: OPERATIONS[s.type]!, args };
  });
}

export async function loadPlaybook(file: string, inv: Inventory, templates: readonly string[]): Promise<Playbook> {
  let text: string;
  try {
    const capped = await readCapped(file);
    if (capped === undefined) throw new InventoryError(file, [tooLarge('playbook')], 'playbook');
    text = capped;
  } catch (e) {
    if (e instanceof InventoryError) throw e;
    throw new UsageError(`cannot read playbook ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, {
      hint: `pass a playbook with --playbook FILE, or leave it out to use ${DEFAULT_PLAYBOOK}`,
    });
  }
  const parsed = parsePlaybook(text, inv, templates);
  if (!parsed.raw || parsed.diagnostics.some((d) => d.severity === 'error')) {
    throw new InventoryError(file, parsed.diagnostics, 'playbook');
  }
  const raw = parsed.raw;
  return { file, name: parsed.name!, description: parsed.description, raw, steps: (node, container) => playbookSteps(raw, inv, node, container) };
}

