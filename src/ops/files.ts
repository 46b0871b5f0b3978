/** Operations on files: directories, uploads checked by sha256, rendered templates, systemd units. */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { HANDLERS, noop, type Change, type Handler, type Operation, type PlanContext, type StepPlan } from './types.js';
import type { HostFacts } from '../facts/host.js';
import { nodePath } from '../inventory/schema.js';
import { UsageError } from '../errors.js';

const mode = z.string().regex(/^0?[0-7]{3}$/, 'must be an octal mode such as "0755"');
/** A path on the node, by the one rule of node paths (util/safe-values.ts): it goes into the apply script. */
const absPath = nodePath('/etc/k8s-ha/file.conf');
const handlers = z.array(z.enum(HANDLERS)).default([]);
/** `user:group` a file is installed as (the host's root otherwise): names as useradd accepts them. */
const owner = z.string().regex(/^[a-z_][a-z0-9_-]*:[a-z_][a-z0-9_-]*$/, 'must be user:group, e.g. root:kube-lb');

const normMode = (m: string) => m.replace(/^0(?=[0-7]{3}$)/, '');

export const directory: Operation<{ path: string[]; mode: string }> = {
  type: 'directory',
  args: z.strictObject({ path: z.union([absPath, z.array(absPath).min(1)]).transform((p) => (Array.isArray(p) ? p : [p])), mode: mode.default('0755') }),
  facts: (a) => ({ dirs: a.path }),
  plan(a, facts) {
    const changes: Change[] = [];
    for (const p of a.path) {
      const cur = facts.dirs[p];
      if (cur === null || cur === undefined || normMode(cur) !== normMode(a.mode)) changes.push({ kind: 'mkdir', path: p, mode: normMode(a.mode) });
    }
    if (!changes.length) return noop(`${a.path.length} director${a.path.length === 1 ? 'y' : 'ies'} present`);
    return { changes, notify: [], summary: `create ${a.path.filter((p) => changes.some((c) => c.kind === 'mkdir' && c.path === p)).join(', ')}` };
  },
};

/** Shared by file, template and systemdUnit: put content at dest unless the checksum already matches. */
export function planPut(
  dest: string,
  content: Buffer,
  m: string,
  facts: HostFacts,
  ctx: PlanContext,
  opts: { validate?: string; notify: Handler[]; text: boolean; what: string; sha256?: string; owner?: string },
): StepPlan {
  // A build output brings its checksum: it is not hashed again for every host.
  const sha256 = opts.sha256 ?? createHash('sha256').update(content).digest('hex');
  const cur = facts.files[dest];
  const ownerOk = !opts.owner || !cur?.owner || cur.owner === opts.owner;
  if (cur && cur.sha256 === sha256 && normMode(cur.mode) === normMode(m) && ownerOk) return noop(`${dest} up to date`);
  const change: Change = { kind: 'put', path: dest, content, sha256, mode: normMode(m), validate: opts.validate, ...(opts.owner ? { owner: opts.owner } : {}) };
  if (opts.text) {
    change.before = cur ? ctx.currentText?.(dest) : '';
    change.after = content.toString();
  }
  const why = !cur
    ? 'new'
    : cur.sha256 !== sha256
      ? 'content changed'
      : normMode(cur.mode) !== normMode(m)
        ? `mode ${cur.mode} -> ${normMode(m)}`
        : `owner ${cur.owner} -> ${opts.owner}`;
  return { changes: [change], notify: opts.notify, summary: `${opts.what} ${dest} (${why})` };
}

/**
 * The build output `name` for a host of CPU architecture `arch` (uname -m): its architecture's own
 * when there are several (`name@arch`), else the one there is, unless that one is for another
 * architecture: then the host fails here, before anything is changed on it, saying what to add.
 */
export function artifactFor(artifacts: PlanContext['artifacts'], name: string, arch: string | undefined): PlanContext['artifacts'][string] | undefined {
  const own = arch ? artifacts[`${name}@${arch}`] : undefined;
  if (own) return own;
  const one = artifacts[name];
  if (!one?.arch || !arch || arch === 'unknown' || one.arch === arch) return one;
  const built = Object.keys(artifacts).filter((k) => k.startsWith(`${name}@`)).map((k) => k.slice(name.length + 1));
  const fix = name === 'kube-lb' ? `add ${arch} to build.architectures in the inventory (kube-lb is built for x86_64 and aarch64)` : `add a node of ${arch} to build.host (one build host per CPU architecture), or give this node lb.impl kube-lb`;
  throw new Error(`${name} is built for ${(built.length ? built : [one.arch]).join(' and ')}, but this node is ${arch}: nothing was changed on it; ${fix}`);
}

export const file: Operation<{ source: string; dest: string; mode: string; validate?: string; notify: Handler[] }> = {
  type: 'file',
  args: z.strictObject({
    source: z.string().regex(/^artifact:[a-z0-9-]+$/, 'must name a build output, e.g. artifact:nginx'),
    dest: absPath,
    mode: mode.default('0644'),
    validate: z.string().optional(),
    notify: handlers,
  }),
  facts: (a) => ({ files: [a.dest] }),
  plan(a, facts, ctx) {
    const name = a.source.slice('artifact:'.length);
    const artifact = artifactFor(ctx.artifacts, name, facts.os?.arch);
    if (!artifact) throw new Error(`no build output named ${name}: a build step must come first`);
    return planPut(a.dest, artifact.content, a.mode, facts, ctx, {
      validate: a.validate,
      notify: a.notify,
      text: false,
      what: `install ${artifact.describe} as`,
      sha256: artifact.sha256,
    });
  },
};

/**
 * A rendered file. `secret`: it holds a private key, so it is never shown: no diff (--diff, --json),
 * its current text is never read from the host, a change is only reported as changed.
 */
/** Templates that hold a private key (the health checks' client certificate and key). */
export const SECRET_TEMPLATES: ReadonlySet<string> = new Set(['kube-haproxy-client.pem', 'kube-lb-client.pem', 'vip-client.pem']);

/** A template step that holds a private key: marked so by its playbook, or one of SECRET_TEMPLATES whatever it says. */
export const isSecretTemplate = (a: { secret?: boolean; template?: string }): boolean => !!a.secret || SECRET_TEMPLATES.has(a.template ?? '');

export const template: Operation<{ template: string; dest: string; mode: string; owner?: string; secret: boolean; validate?: string; notify: Handler[] }> = {
  type: 'template',
  args: z.strictObject({
    template: z.string(),
    dest: absPath,
    mode: mode.default('0644'),
    owner: owner.optional(),
    secret: z.boolean().default(false),
    validate: z.string().optional(),
    notify: handlers,
  }),
  facts: (a) => ({ files: [a.dest] }),
  plan(a, facts, ctx) {
    // A template that holds a key is secret whatever a playbook says, and never readable by others.
    const secret = isSecretTemplate(a);
    if (secret && parseInt(a.mode, 8) & 0o137) {
      throw new UsageError(`template ${a.template} holds a private key: mode ${a.mode} lets others read it or anyone execute it`, { hint: 'give it mode 0600 (or 0640 with an owner group that must read it)' });
    }
    return planPut(a.dest, Buffer.from(ctx.render(a.template, facts)), a.mode, facts, ctx, {
      validate: a.validate,
      notify: a.notify,
      text: !secret,
      what: secret ? 'write (secret, not shown)' : 'write',
      owner: a.owner,
    });
  },
};

/** A unit file under /etc/systemd/system: a template that also asks systemd to reload its units. */
export const systemdUnit: Operation<{ name: string; template: string; notify: Handler[] }> = {
  type: 'systemdUnit',
  args: z.strictObject({ name: z.string().regex(/^[A-Za-z0-9@._-]+\.(service|socket|timer)$/, 'must be a unit name like kube-nginx.service'), template: z.string(), notify: handlers }),
  facts: (a) => ({ files: [`/etc/systemd/system/${a.name}`] }),
  plan(a, facts, ctx) {
    const p = planPut(`/etc/systemd/system/${a.name}`, Buffer.from(ctx.render(a.template, facts)), '0644', facts, ctx, {
      notify: a.notify,
      text: true,
      what: 'write',
    });
    if (p.changes.length) p.notify = ['daemon-reload', ...p.notify];
    return p;
  },
};
